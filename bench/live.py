"""Live streams: how many real-time streams one server holds.

Each of N streams sends a T-step binary chunk every P ms over its own WebSocket (open loop, see
``bench.livegen``), into the live scenario's model (GRU 64 over F = 16, a per-step Dense 16). A
sweep over N (after an unmeasured run at the middle N, which has the model's programs compiled for
the batch sizes that matter) finds the **capacity**: the most streams served with p99 < 50 ms and nothing refused,
closed or left unanswered. Both sides' CPU is reported (the generator shares the machine).

    python -m bench.live                            # the default sweep, results in bench/results/
    python -m bench.live --streams 500,1000 --seconds 5 --out /tmp/live
    python -m bench.live --server-args "--workers 2"
    python -m bench.live --streams 250,500,750 --delays 0,1,2,5   # the batching delay's trade-off

Writes ``live.json`` and ``live.md`` to ``--out`` (default ``bench/results``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np

from bench import load, report
from bench.scenarios import LIVE, write_model
from harness.metrics import scrape
from harness.servers import ServerProcess, running
from harness.wrk import result_of

RESULTS = Path(__file__).resolve().parent / "results"
P99_TARGET_MS = 50.0
TARGET_STREAMS = 1000  # the capacity asked for, and where the CPU per chunk is read
PREFIX = "live-"


@dataclass
class Row:
    streams: int
    offered_per_s: float
    served_per_s: float
    refused: int
    unanswered: int
    closed: int
    late: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    server_cpu: float
    client_cpu: float
    mean_batch: float  # chunks per model call in the run

    @property
    def holds(self) -> bool:
        """Real time: p99 under the target, and every chunk answered."""
        return (
            self.p99_ms < P99_TARGET_MS
            and self.refused == 0
            and self.unanswered == 0
            and self.closed == 0
        )


def live_frame() -> bytes:
    inputs = np.random.default_rng(0).normal(size=(LIVE.steps, LIVE.features)).astype("<f4")
    return inputs.tobytes()


def create_sessions(url: str, count: int) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        for i in range(count):
            client.post(
                "/v1/sessions", json={"session_id": f"{PREFIX}{i}", "ttl_s": 0}
            ).raise_for_status()


def measure(
    server: ServerProcess,
    streams: int,
    seconds: float,
    period_ms: float,
    frame: bytes | None = None,
    prefix: str = PREFIX,
    warmup: float = 2.0,
) -> Row:
    """One run of ``streams`` streams, sessions ``prefix0``... (made already), ``frame`` each,
    timed after ``warmup`` seconds."""
    frame = frame if frame is not None else live_frame()
    command = [
        sys.executable,
        "-m",
        "bench.livegen",
        "--url",
        server.url,
        "--prefix",
        prefix,
        "--streams",
        str(streams),
        "--period-ms",
        str(period_ms),
        "--frame",
        frame.hex(),
        "--seconds",
        str(seconds),
        "--warmup",
        str(warmup),
    ]
    before = batches(server.url)
    with load.Measured(server.process.pid) as cpu:
        text, client_cpu = load.run_child(command)
    calls, chunks = (after - first for after, first in zip(batches(server.url), before))
    found = result_of(text)
    return Row(
        streams=streams,
        offered_per_s=found["offered"] / seconds,
        served_per_s=found["served"] / seconds,
        refused=found["refused"],
        unanswered=found["unanswered"],
        closed=found["closed"],
        late=found["late"],
        p50_ms=found["p50_ms"],
        p90_ms=found["p90_ms"],
        p99_ms=found["p99_ms"],
        max_ms=found["max_ms"],
        server_cpu=cpu.cpu,
        client_cpu=client_cpu,
        mean_batch=chunks / calls if calls else 0.0,
    )


def batches(url: str) -> tuple[float, float]:
    """Model calls so far, and the chunks they ran (the batch-size histogram's count and sum)."""
    samples = scrape(url)
    return samples.get("srnn_batch_size_count", 0.0), samples.get("srnn_batch_size_sum", 0.0)


def sweep(
    counts: list[int],
    seconds: float,
    period_ms: float,
    server_args: list[str],
    first_seconds: float = 0.0,
) -> dict:
    """The capacity sweep; with ``first_seconds``, a run of that long first, from the moment the
    new server is ready (no warm-up), at the target's stream count (or the largest below it): what
    a server serves before anything has warmed up under load."""
    first = None
    with tempfile.TemporaryDirectory() as folder:
        model = write_model(LIVE, Path(folder))
        server = ServerProcess("--model", str(model), "--capacity", str(max(counts)), *server_args)
        with running([server], timeout=180):
            create_sessions(server.url, max(counts))
            if first_seconds:
                streams = max([c for c in counts if c <= TARGET_STREAMS] or [min(counts)])
                first = measure(server, streams, first_seconds, period_ms, warmup=0.0)
                print(
                    f"first {first_seconds:g} s after ready, {streams} streams: p99 "
                    f"{first.p99_ms:.1f} ms, refused {first.refused}",
                    flush=True,
                )
            # Unmeasured: the batch sizes of the rows that matter appear (on TensorFlow with XLA,
            # their programs compile in the background) before any row is timed.
            measure(server, counts[len(counts) // 2], 4, period_ms)
            time.sleep(5)
            rows = []
            for count in counts:
                time.sleep(2)  # the last run's backlog, if any, is gone
                rows.append(measure(server, count, seconds, period_ms))
                print(
                    f"{count} streams: p50 {rows[-1].p50_ms:.1f} ms, p99 {rows[-1].p99_ms:.1f} ms, "
                    f"refused {rows[-1].refused}, server CPU {rows[-1].server_cpu:.2f}",
                    flush=True,
                )
    held = [row.streams for row in rows if row.holds]
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "scenario": LIVE.what,
        "period_ms": period_ms,
        "seconds": seconds,
        "server_args": " ".join(server_args),
        "p99_target_ms": P99_TARGET_MS,
        "capacity": max(held) if held else 0,
        "rows": [{**asdict(row), "holds": row.holds} for row in rows],
        "first": None if first is None else {**asdict(first), "seconds": first_seconds},
    }


def delay_curve(
    counts: list[int], delays: list[float], seconds: float, period_ms: float, server_args: list[str]
) -> dict:
    """The sweep again for each ``--max-batch-delay-ms``: what waiting for company buys (bigger
    batches, fewer model calls) and what it costs (latency)."""
    sweeps = []
    for delay in delays:
        sweeps.append(
            {
                "delay_ms": delay,
                **sweep(
                    counts, seconds, period_ms, [*server_args, "--max-batch-delay-ms", f"{delay:g}"]
                ),
            }
        )
    return {
        "when": sweeps[0]["when"],
        "scenario": LIVE.what,
        "period_ms": period_ms,
        "seconds": seconds,
        "server_args": " ".join(server_args),
        "sweeps": sweeps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--streams",
        default="250,500,750,1000,1250,1500",
        help="stream counts to sweep, comma-separated",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per count")
    parser.add_argument("--period-ms", type=float, default=100.0)
    parser.add_argument("--server-args", default="", help="extra flags for stateful-rnn serve")
    parser.add_argument(
        "--delays",
        help="batch delays in ms, comma-separated: the sweep for each "
        "(--max-batch-delay-ms), written as live-delays.json and .md",
    )
    parser.add_argument(
        "--first-seconds",
        type=float,
        default=0.0,
        help="first measure this long from the moment the server is ready, without warm-up",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    counts = sorted(int(c) for c in args.streams.split(","))
    if args.delays:
        delays = [float(d) for d in args.delays.split(",")]
        result = delay_curve(
            counts, delays, args.seconds, args.period_ms, shlex.split(args.server_args)
        )
        report.save(args.out, "live-delays", result, report.delay_table(result))
        return
    result = sweep(
        counts, args.seconds, args.period_ms, shlex.split(args.server_args), args.first_seconds
    )
    report.save(args.out, "live", result, report.live_table(result))


if __name__ == "__main__":
    main()
