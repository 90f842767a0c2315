"""The development harness: real servers, Redis, a Redis Cluster, nginx topologies, floods, metrics
reading and keys, for the tests, the benchmarks (``bench/``), the local topology (``deploy/``) and
``scripts/``. Not part of either distribution; nothing here imports ``tests``."""
