"""What a flood does to everyone else: one tenant floods, another tenant's requests are timed.

The flooding tenant runs wrk in a closed loop (each connection sends again the moment it is
answered, ignoring Retry-After), first with as many connections as its share of the in-flight limit
(all let in: the load the server is there to carry), then with many more (the excess is shed). A
second tenant meanwhile sends one chunk at a time and times those let in. Admitted requests keep their
latency when the second tenant's median under the flood stays near its median beside the flood's
admitted share. The same flood is also run against the server with the defences off
(``--shed-delay 0`` and no per-tenant share), the baseline of the same run.

    python -m bench.flood [--connections 200] [--samples 150] [--access-log]

writes bench/results/flood.json and flood.md; the README's Security section shows the table.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import httpx

from bench import report
from bench.load import Measured, require_wrk
from harness.flood import create_flood_sessions, flooding
from harness.keys import auth
from harness.servers import ServerProcess, running
from harness.wrk import result_of

RESULTS = Path(__file__).resolve().parent / "results"
FLOOD_KEY, PROBE_KEY = "flood-key-0001", "probe-key-0001"
SESSIONS = 50


@dataclass
class Phase:
    name: str
    flood_connections: int
    probe_median_ms: float | None  # None: none of the probe's requests was let in
    probe_p90_ms: float | None
    probe_admitted: float  # fraction of the probe's requests answered 200
    flood_served_per_s: float = 0.0
    flood_shed_per_s: float = 0.0
    server_cpu: float = 0.0


def probe(url: str, samples: int) -> tuple[list[float], int]:
    """One chunk at a time to the probe tenant's session, a few milliseconds apart: the latencies
    (ms) of those let in (answered 200), and how many were."""
    with httpx.Client(base_url=url, headers=auth(PROBE_KEY), timeout=30) as client:
        latencies = []
        for _ in range(samples):
            started = time.perf_counter()
            answer = client.post("/v1/sessions/probe/chunks", json={"inputs": [0.5] * 10})
            if answer.status_code == 200:
                latencies.append(1000 * (time.perf_counter() - started))
            time.sleep(0.005)
    return latencies, len(latencies)


def phase(server: ServerProcess, name: str, connections: int, samples: int) -> Phase:
    seconds = 3 + samples * 0.012  # outlasts the probe, which starts a second in
    flood = (
        flooding(
            server.url, sessions=SESSIONS, connections=connections, seconds=seconds, key=FLOOD_KEY
        )
        if connections
        else nullcontext()
    )
    with Measured(server.process.pid) as measured, flood as wrk:
        if wrk is not None:
            time.sleep(1.0)
        latencies, admitted = probe(server.url, samples)
        found = result_of(wrk.communicate(timeout=120)[0]) if wrk is not None else None
    served = shed = 0.0
    if found is not None:
        wall = found["duration_us"] / 1e6
        served, shed = (found["requests"] - found["non_2xx"]) / wall, found["shed"] / wall
    return Phase(
        name,
        connections,
        _median(latencies),
        _p90(latencies),
        admitted / samples,
        served,
        shed,
        measured.cpu,
    )


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _p90(values: list[float]) -> float | None:
    return statistics.quantiles(values, n=10)[-1] if len(values) > 1 else None


def measure(args: argparse.Namespace) -> dict:
    common = [
        "--api-keys",
        f"flood:{FLOOD_KEY},probe:{PROBE_KEY}",
        "--model",
        "default",
        "--max-in-flight",
        str(args.max_in_flight),
    ]
    options = {"log_level": "info" if args.access_log else "warning", "output": subprocess.DEVNULL}
    guarded = ServerProcess(
        *common,
        "--max-in-flight-per-tenant",
        str(args.share),
        "--shed-delay",
        str(args.shed_delay),
        **options,
    )
    open_ = ServerProcess(
        *common,
        "--max-in-flight-per-tenant",
        str(args.max_in_flight),
        "--shed-delay",
        "0",
        **options,
    )
    connections, share, samples = args.connections, args.share, args.samples
    plan = [
        (guarded, "alone", 0),
        (guarded, "flood at its share", share),
        (guarded, "flood beyond its share", connections),
        (open_, "same flood, no share and no delay", connections),
    ]
    with running([guarded, open_]):
        for server in (guarded, open_):
            create_flood_sessions(server.url, SESSIONS, FLOOD_KEY)
            httpx.post(
                f"{server.url}/v1/sessions", json={"session_id": "probe"}, headers=auth(PROBE_KEY)
            )
        runs = [
            [phase(server, name, count, samples) for server, name, count in plan]
            for _ in range(args.rounds)
        ]
    # Each figure is the median over the rounds: the machine is shared and noisy.
    phases = [
        Phase(
            name=name,
            flood_connections=count,
            **{
                f.name: _median([getattr(run[i], f.name) for run in runs])
                for f in fields(Phase)[2:]
            },
        )
        for i, (_, name, count) in enumerate(plan)
    ]
    ratios = [run[2].probe_median_ms / run[1].probe_median_ms for run in runs]
    return {
        "settings": {
            "max_in_flight": args.max_in_flight,
            "share": share,
            "shed_delay": args.shed_delay,
            "flood_connections": connections,
            "samples": samples,
            "rounds": args.rounds,
            "access_log": args.access_log,
        },
        "phases": [asdict(p) for p in phases],
        "flood_vs_share": statistics.median(ratios),
        "flood_vs_share_rounds": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=200, help="the flood's connections")
    parser.add_argument("--samples", type=int, default=150, help="the probe's requests per phase")
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument("--share", type=int, default=16, help="--max-in-flight-per-tenant")
    parser.add_argument("--shed-delay", type=float, default=0.25)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="servers at --log-level info (the default), writing a line per request to /dev/null",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="where flood.json and flood.md go"
    )
    args = parser.parse_args()
    require_wrk()
    result = measure(args)
    report.save(args.out, "flood", result, report.flood_markdown(result))


if __name__ == "__main__":
    main()
