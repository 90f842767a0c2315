"""The docker-compose topology without Docker (:mod:`harness.topology`), from the command line:

python -m deploy.topology --replicas 3 --port 8080     # or: make topology
# prints the URL; Ctrl-C stops everything
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

from harness.topology import Topology


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.topology", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--port", type=int, default=8080, help="nginx's port (0: any free port)")
    parser.add_argument("--model", default="default")
    parser.add_argument("serve_args", nargs="*", help="more `stateful-rnn serve` flags, after --")
    options = parser.parse_args(argv)
    topology = Topology(
        options.replicas, options.port, options.model, tuple(options.serve_args), quiet=False
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop like Ctrl-C: through `finally`
    print(
        f"starting redis-server, {options.replicas} replicas and nginx in {topology.dir} ...",
        flush=True,
    )
    try:
        topology.start()
        print(
            f"ready: {topology.url}  (Redis {topology.redis_url}; replicas "
            f"{', '.join(topology.replica_url(i) for i in range(options.replicas))}); Ctrl-C stops",
            flush=True,
        )
        while topology.alive():
            time.sleep(0.5)
        print("a process of the topology exited; stopping the rest", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        topology.stop()


if __name__ == "__main__":
    sys.exit(main())
