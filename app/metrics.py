"""Prometheus metrics, defined once and updated by the layer that sees the event.

Gauges of a level (slots in use, sessions, connections, the engine's queue) are set by
:func:`refresh`, once a second, from what registered itself with :func:`refreshing`, rather than
per event or by a callback at scrape time: with API worker processes, Prometheus's multiprocess mode aggregates values that every
process writes, and a callback's value is never written.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

# A ``_created`` series per counter and histogram doubles the exposition for a timestamp that
# Prometheus does not need (it sees resets by itself).
disable_created_metrics()

CHUNKS = Counter("srnn_chunks_total", "Chunks applied to a session's state")
TIME_STEPS = Counter("srnn_time_steps_total", "Time steps applied, over all chunks")
REPLAYS = Counter("srnn_replays_total", "Chunks answered from the stored response (repeated seq)")
CONFLICTS = Counter(
    "srnn_conflicts_total",
    "Chunks refused with 409, by reason: seq out of order, or another model's session",
    ["reason"],
)
COMMIT_RACES = Counter(
    "srnn_commit_races_total",
    "Chunks recomputed because another replica changed their session first",
)
BATCH_SIZE = Histogram(
    "srnn_batch_size",
    "Chunks per model call",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
MODEL_SECONDS = Histogram(
    "srnn_model_call_seconds",
    "Time of one batched model call, padding and encoding included",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
)
SHED = Counter(
    "srnn_shed_total",
    "Requests refused with 503 on arrival, by reason: the server's in-flight limit (server), "
    "or the tenant's share of it (share)",
    ["reason"],
)
IN_FLIGHT = Gauge(
    "srnn_requests_in_flight",
    "HTTP requests in progress (probes and scrapes aside)",
    multiprocess_mode="livesum",
)
CONNECTIONS = Gauge(
    "srnn_connections",
    "Client connections open, WebSockets included (sampled every second)",
    multiprocess_mode="livesum",
)
CONNECTIONS_REFUSED = Counter(
    "srnn_connections_refused_total",
    "Connections answered and closed by the connection guard, by reason: over --max-connections "
    "(limit), headers over --max-header-bytes (headers_too_large), or not in within --header-timeout "
    "(header_timeout)",
    ["reason"],
)
QUEUE_DEPTH = Gauge(
    "srnn_queue_depth",
    "Work items waiting for the engine (sampled every second)",
    multiprocess_mode="livesum",
)
CHUNK_SECONDS = Histogram(
    "srnn_chunk_seconds",
    "A chunk's time in the engine, by the transport it came over and the phase: queue (from its "
    "arrival to its model call), total (from its arrival to its answer, the call and the commit "
    "included); the call itself is srnn_model_call_seconds",
    ["transport", "phase"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0),
)
REQUEST_SECONDS = Histogram(
    "srnn_request_seconds",
    "Time from a request's arrival in the app to its last byte (a WebSocket: its whole life)",
    ["route", "transport", "status"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0),
)
MODEL_CHUNKS = Counter(
    "srnn_model_chunks_total", "Chunks applied, by model and version", ["model", "version"]
)
MODEL_CHUNK_SECONDS = Histogram(
    "srnn_model_chunk_seconds",
    "A chunk's time in the engine, arrival to answer, by the model and version its session runs",
    ["model", "version"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0),
)
MODEL_SESSIONS = Gauge(
    "srnn_model_sessions",
    "Live sessions by model and version (Redis: over every replica; sampled every few seconds)",
    ["model", "version"],
    multiprocess_mode="livemax",
)
MODEL_STATE = Gauge(
    "srnn_model_version_state",
    "1 for the state each model version is in on this replica "
    "(loading, ready, retiring, failed, unloaded, retired)",
    ["model", "version", "state"],
    multiprocess_mode="livemax",
)
BUILD_INFO = Gauge(
    "srnn_build_info",
    "Always 1: a series for each model version this replica serves (none once unloaded), with "
    "the server's version and the version's fingerprint",
    ["server_version", "model", "version", "fingerprint"],
    multiprocess_mode="livemax",
)


INFO_SERIES = {"srnn_build_info"}  # present while 1 (set_info); the exposition drops zeros


def set_info(gauge: Gauge, labels: tuple[str, ...], present: bool) -> None:
    """An info series: 1 while ``present``, else gone. (A worker process's copy is a file that
    ``remove`` cannot delete: it is set to 0 first, and :func:`exposition` leaves zeros out.)"""
    gauge.labels(*labels).set(1 if present else 0)
    if not present:
        gauge.remove(*labels)


CAPACITY = Gauge("srnn_capacity", "State slots", multiprocess_mode="livesum")
HOT_SESSIONS = Gauge(
    "srnn_hot_sessions",
    "Sessions holding a state slot (sampled every second)",
    multiprocess_mode="livesum",
)

# A backend's own series exist only on a server of that backend (:func:`use_backend`): a memory
# server exports no Redis series, not even at zero.
SESSIONS: Gauge  # memory
EVICTIONS: Counter  # redis
REDIS_SECONDS: Histogram  # redis
REDIS_ERRORS: Counter  # redis
_backends: set[str] = set()


def use_backend(backend: str) -> None:
    """Define the metrics of ``backend`` ("memory" or "redis"), once per process."""
    global SESSIONS, EVICTIONS, REDIS_SECONDS, REDIS_ERRORS
    if backend in _backends:
        return
    _backends.add(backend)
    if backend == "memory":
        SESSIONS = Gauge(
            "srnn_sessions",
            "Sessions in the memory store (sampled every second)",
            multiprocess_mode="livesum",
        )
    else:
        EVICTIONS = Counter(
            "srnn_evictions_total",
            "Hot sessions that gave up their slot to another (Redis backend)",
        )
        REDIS_SECONDS = Histogram(
            "srnn_redis_round_trip_seconds",
            "One pipelined round trip to Redis",
            buckets=(0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 2.0),
        )
        REDIS_ERRORS = Counter("srnn_redis_errors_total", "Redis calls that failed", ["kind"])


_refreshers: dict[str, Callable[[], None]] = {}


def refreshing(name: str, update: Callable[[], None]) -> None:
    """Have :func:`refresh` call ``update``; a later one of the same name replaces it (tests start
    many servers in one process, and only the newest one's figures are wanted)."""
    _refreshers[name] = update


def refresh() -> None:
    for update in list(_refreshers.values()):
        update()


def chunk_timers(transport: str) -> tuple[Histogram, Histogram]:
    """The queue and total histograms of one transport (looked up once, not per chunk)."""
    found = _chunk_timers.get(transport)
    if found is None:
        found = _chunk_timers[transport] = (
            CHUNK_SECONDS.labels(transport, "queue"),
            CHUNK_SECONDS.labels(transport, "total"),
        )
    return found


_chunk_timers: dict[str, tuple] = {}


def version_timer(key: str) -> Histogram:
    """The latency histogram of model version ``key`` (``name/version``), looked up once."""
    found = _version_timers.get(key)
    if found is None:
        found = _version_timers[key] = MODEL_CHUNK_SECONDS.labels(*key.rsplit("/", 1))
    return found


def version_chunks(key: str) -> Counter:
    found = _version_chunks.get(key)
    if found is None:
        found = _version_chunks[key] = MODEL_CHUNKS.labels(*key.rsplit("/", 1))
    return found


_version_timers: dict[str, Histogram] = {}
_version_chunks: dict[str, Counter] = {}


def observe_many(histogram: Histogram, seconds: np.ndarray) -> None:
    """``histogram.observe`` for each of ``seconds``, done as one increment per bucket touched.

    prometheus-client observes one value at a time, each taking the value's lock (and, with API
    workers, writing its memory-mapped file): a few microseconds per chunk, once per histogram,
    which at 10,000 chunks a second was a tenth of a core. It has no call for many values, so this
    counts them into the buckets with NumPy and adds each count once, through the same value
    objects ``observe`` uses (``_upper_bounds``, ``_buckets``, ``_sum``: unchanged since
    prometheus-client 0.4; tests/api/test_metrics.py checks it against ``observe``)."""
    if not len(seconds):
        return
    counts = np.bincount(
        np.searchsorted(histogram._upper_bounds, seconds, side="left"),
        minlength=len(histogram._upper_bounds),
    )
    histogram._sum.inc(float(seconds.sum()))
    for bucket in np.flatnonzero(counts):
        histogram._buckets[bucket].inc(int(counts[bucket]))


def exposition() -> bytes:
    """The text of /metrics: this process's metrics, or, with API workers (Prometheus's
    multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``), every process's, summed."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    registry.register(_InfoWhilePresent(multiprocess.MultiProcessCollector(None)))
    return generate_latest(registry)


class _InfoWhilePresent:
    """Every process's metrics, but an info series only while it is 1 (see :func:`set_info`)."""

    def __init__(self, collector: multiprocess.MultiProcessCollector):
        self.collector = collector

    def collect(self):
        for metric in self.collector.collect():
            if metric.name in INFO_SERIES:
                metric.samples = [sample for sample in metric.samples if sample.value]
            yield metric
