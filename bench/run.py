"""The benchmark: this service against its ceilings and the naive baseline, side by side in one run.

    make bench                          # or: python -m bench.run [--seconds 5] [--rounds 3] [--quick]

Every figure of one target comes from the same run as the figures it is compared with, so a ratio holds
even though the machine is shared and noisy; each closed-loop figure is the median of ``--rounds``
rounds, and the rounds interleave the targets so that drift hits all of them alike. Results go to
``bench/results/``: ``latest.json`` (everything), ``latest.md`` (the table the README shows) and two
plots. See ``bench/targets.py`` for what is checked.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

from bench import live, load, report, targets
from bench.load import Run
from bench.scenarios import FRAMES, LARGE, OUTPUTS, SMALL, Scenario, write_model
from harness.redis import delete_prefix, new_prefix
from harness.servers import ServerProcess, running

RESULTS = Path(__file__).resolve().parent / "results"


class Module(ServerProcess):
    """A benchmark server (``python -m MODULE --port P ARGS``) rather than ``stateful-rnn serve``."""

    def __init__(self, module: str, *args: str):
        super().__init__(*args)
        self.module = module

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, "--port", str(self.port), *self.args]


def service(model: Path, *args: str) -> ServerProcess:
    return ServerProcess("--model", str(model), *args)


def ceiling(scenario: Scenario) -> ServerProcess:
    return Module(
        "bench.ceiling",
        "--features",
        str(scenario.features),
        "--outputs",
        str(OUTPUTS),
        "--per-step",
    )


def bare(scenario: Scenario) -> ServerProcess:
    return Module(
        "bench.ceiling",
        "--features",
        str(scenario.features),
        "--outputs",
        str(OUTPUTS),
        "--per-step",
        "--bare",
    )


def naive(model: Path) -> ServerProcess:
    return Module("bench.naive", "--model", str(model))


def create_sessions(url: str, prefix: str, count: int, body: bytes) -> None:
    """Sessions ``prefix0`` .. ``prefix<count-1>``, each sent one chunk: no server is measured on its
    first calls (the naive baseline builds each session's Keras model then)."""
    with httpx.Client(base_url=url, timeout=120) as client:
        for i in range(count):
            client.post("/v1/sessions", json={"session_id": f"{prefix}{i}"}).raise_for_status()
            client.post(
                f"/v1/sessions/{prefix}{i}/chunks",
                content=body,
                headers={"Content-Type": "application/json"},
            ).raise_for_status()


def chunk_body(scenario: Scenario) -> tuple[bytes, bytes]:
    """One chunk of the scenario, as a JSON body and as a binary frame."""
    inputs = (
        np.random.default_rng(0).normal(size=(scenario.steps, scenario.features)).astype(np.float32)
    )
    return json.dumps({"inputs": inputs.round(4).tolist()}).encode(), inputs.astype("<f4").tobytes()


def median_run(runs: list[Run]) -> dict:
    """The round with the median rate, with every round's rate kept beside it."""
    chosen = sorted(runs, key=lambda r: r.rate)[len(runs) // 2]
    return {**summary(chosen), "rounds": [round(r.rate, 1) for r in runs]}


def summary(run: Run) -> dict:
    return {
        "chunks_per_s": run.rate,
        "p50_ms": run.p50_ms,
        "p90_ms": run.p90_ms,
        "p99_ms": run.p99_ms,
        "failed": run.failed,
        "late": run.late,
        "server_cpu": run.server_cpu,
        "client_cpu": run.client_cpu,
        "server_rss_mb": run.server_rss_mb,
    }


def settle(servers: dict[str, ServerProcess], timeout: float = 30) -> None:
    """Wait until no server is still busy with the last run's requests (the naive baseline finishes
    its backlog for seconds after the load stops), so that it takes no CPU from the next run."""
    processes = [psutil.Process(server.process.pid) for server in servers.values()]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = [sum(p.cpu_times()[:2]) for p in processes]
        time.sleep(0.3)
        if all(sum(p.cpu_times()[:2]) - b < 0.3 * 0.1 for p, b in zip(processes, before)):
            return


def closed_loops(
    servers: dict[str, ServerProcess],
    scenario: Scenario,
    counts: dict[str, list[int]],
    args,
    transport: str = "http",
) -> dict[str, dict[int, dict]]:
    """Each server at each session count, closed loop, rounds interleaved."""
    body, frame = chunk_body(scenario)
    runs: dict[str, dict[int, list[Run]]] = {
        name: {n: [] for n in counts[name]} for name in servers
    }
    for _ in range(args.rounds):
        for name, server in servers.items():
            for n in counts[name]:
                pid = server.process.pid
                settle(servers)
                if transport == "http":
                    run = load.wrk(
                        server.url, pid, body=body, sessions=n, prefix="s", seconds=args.seconds
                    )
                else:
                    run = load.websocket(
                        server.url, pid, frame=frame, sessions=n, prefix="s", seconds=args.seconds
                    )
                runs[name][n].append(run)
                print(
                    f"  {scenario.name} {transport} {name:<8} {n:>5} sessions: {run.rate:>9,.0f} chunks/s "
                    f"p99 {run.p99_ms:6.1f} ms  cpu server {run.server_cpu:.2f} client {run.client_cpu:.2f}",
                    flush=True,
                )
    return {name: {n: median_run(r) for n, r in by_n.items()} for name, by_n in runs.items()}


def open_loop(
    server: ServerProcess,
    scenario: Scenario,
    peak: float,
    args,
    running_now: dict[str, ServerProcess],
) -> list[dict]:
    """Latency at fixed offered rates, fractions of the closed-loop peak."""
    body, _ = chunk_body(scenario)
    points = []
    for fraction in args.fractions:
        rate = max(1.0, peak * fraction)
        settle(running_now)
        run = load.wrk(
            server.url,
            server.process.pid,
            body=body,
            sessions=scenario.sessions,
            prefix="s",
            seconds=args.seconds,
            rate=rate,
        )
        points.append({"fraction": fraction, "offered_per_s": rate, **summary(run)})
        print(
            f"  open loop {fraction:4.0%} of peak = {rate:,.0f}/s: served {run.rate:,.0f}/s, "
            f"p50 {run.p50_ms:.1f} p90 {run.p90_ms:.1f} p99 {run.p99_ms:.1f} ms, late {run.late}",
            flush=True,
        )
    return points


def start_to_ready(tries: int) -> dict:
    """Seconds from starting ``stateful-rnn serve`` (default model) to ``/readyz`` answering 200."""
    times = []
    for _ in range(tries):
        server = ServerProcess()
        started = time.perf_counter()
        server.start()
        try:
            server.wait_ready(120)
            times.append(time.perf_counter() - started)
        finally:
            server.stop()
    return {"seconds": statistics.median(times), "tries": times}


def idle_sessions(model: Path, count: int) -> dict:
    """Resident memory taken by ``count`` idle sessions of the model, and the time to create them."""
    server = service(model, "--capacity", str(count)).start()
    try:
        server.wait_ready(180)
        process = psutil.Process(server.process.pid)
        before = process.memory_info().rss
        created = load.create_sessions(server.url, count)
        after = process.memory_info().rss
        active = httpx.get(f"{server.url}/v1/sessions", params={"limit": 1}).json()["active"]
    finally:
        server.stop()
    return {
        "sessions": active,
        "seconds": created["seconds"],
        "per_s": active / created["seconds"],
        "rss_before_mb": before / 2**20,
        "rss_after_mb": after / 2**20,
        "rss_growth_mb": (after - before) / 2**20,
        "bytes_per_session": (after - before) / max(active, 1),
        "client_cpu": created["client_cpu"],
    }


def scenario_small(models: dict, prefix: str, args) -> dict:
    model = models["small"]
    servers = {
        "bare": bare(SMALL),
        "ceiling": ceiling(SMALL),
        "memory": service(model),
        "redis": service(
            model, "--backend", "redis", "--redis-url", args.redis_url, "--redis-prefix", prefix
        ),
        "naive": naive(model),
    }
    sweep = sorted(set(args.sweep) | {SMALL.sessions})
    counts = dict.fromkeys(servers, sweep)
    counts["bare"] = [SMALL.sessions]  # a reference point, not a curve
    counts["naive"] = [
        n for n in sweep if n <= SMALL.sessions
    ]  # a Keras model per session: memory-bound
    with running(list(servers.values()), timeout=180):
        for name, server in servers.items():
            create_sessions(server.url, "s", max(counts[name]), chunk_body(SMALL)[0])
        closed = closed_loops(servers, SMALL, counts, args)
        peak = closed["memory"][SMALL.sessions]["chunks_per_s"]
        print(
            f"  open loop against memory, {SMALL.sessions} sessions, peak {peak:,.0f}/s", flush=True
        )
        latency = {"memory": open_loop(servers["memory"], SMALL, peak, args, servers)}
        peak = closed["redis"][SMALL.sessions]["chunks_per_s"]
        latency["redis"] = open_loop(servers["redis"], SMALL, peak, args, servers)
    return {"scenario": SMALL.as_dict(), "closed": closed, "open": latency}


def scenario_frames(models: dict, prefix: str, args) -> dict:
    model = models["frames"]
    servers = {
        "ceiling": ceiling(FRAMES),
        "memory": service(model),
        "redis": service(
            model, "--backend", "redis", "--redis-url", args.redis_url, "--redis-prefix", prefix
        ),
    }
    counts = {name: [FRAMES.sessions] for name in servers}
    with running(list(servers.values()), timeout=180):
        for server in servers.values():
            create_sessions(server.url, "s", FRAMES.sessions, chunk_body(FRAMES)[0])
        websocket = closed_loops(servers, FRAMES, counts, args, transport="websocket")
        http = closed_loops({"memory": servers["memory"]}, FRAMES, counts, args)
    return {"scenario": FRAMES.as_dict(), "closed": websocket, "http": http}


def scenario_large(models: dict, args) -> dict:
    model = models["large"]
    batch = LARGE.sessions
    servers = {"ceiling": ceiling(LARGE), "memory": service(model, "--max-batch", str(batch))}
    counts = {name: [LARGE.sessions] for name in servers}
    with running(list(servers.values()), timeout=180):
        for server in servers.values():
            create_sessions(server.url, "s", LARGE.sessions, chunk_body(LARGE)[0])
        http = closed_loops(servers, LARGE, counts, args)
        websocket = closed_loops(servers, LARGE, counts, args, transport="websocket")
    text, cpu = load.run_child(
        [
            sys.executable,
            "-m",
            "bench.compute",
            "--model",
            str(model),
            "--batch",
            str(batch),
            "--steps",
            str(LARGE.steps),
            "--seconds",
            str(args.seconds),
        ]
    )
    compute = {**load.result_of(text), "cpu": cpu}
    print(f"  compute ceiling, batch {batch}: {compute['chunks_per_s']:,.0f} chunks/s", flush=True)
    return {"scenario": LARGE.as_dict(), "closed": http, "websocket": websocket, "compute": compute}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--sweep",
        type=int,
        nargs="+",
        default=[1, 4, 16, 64, 256],
        help="session counts for the small scenario's throughput curve",
    )
    parser.add_argument(
        "--fractions",
        type=float,
        nargs="+",
        default=[0.1, 0.25, 0.5, 0.75, 0.9],
        help="open-loop rates, as fractions of the closed-loop peak",
    )
    parser.add_argument(
        "--idle", type=int, default=100_000, help="idle sessions for the memory check"
    )
    parser.add_argument(
        "--scenarios", nargs="+", default=["small", "frames", "large", "live", "idle", "start"]
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 1 round of 2 s, fewer points"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds, args.sweep, args.fractions, args.idle = (
            2,
            1,
            [1, 64],
            [0.5],
            5000,
        )
    load.require_wrk()

    results: dict = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": psutil.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_before": os.getloadavg()[0],
        },
        "settings": {"seconds": args.seconds, "rounds": args.rounds},
    }
    prefix = new_prefix()
    with tempfile.TemporaryDirectory() as tmp:
        models = {s.name: write_model(s, Path(tmp)) for s in (SMALL, LARGE, FRAMES)}
        try:
            if "start" in args.scenarios:
                print("start to ready (default model)", flush=True)
                results["start"] = start_to_ready(1 if args.quick else 3)
            if "small" in args.scenarios:
                print("small", flush=True)
                results["small"] = scenario_small(models, prefix, args)
            if "frames" in args.scenarios:
                print("frames", flush=True)
                results["frames"] = scenario_frames(models, prefix + "f", args)
            if "large" in args.scenarios:
                print("large", flush=True)
                results["large"] = scenario_large(models, args)
            if "live" in args.scenarios:
                print("live streams", flush=True)
                counts = [250, 500, 1000] if args.quick else [500, 1000, 1500, 2000]
                results["live"] = live.sweep(
                    counts,
                    3 if args.quick else 10,
                    100.0,
                    [],
                    first_seconds=10 if args.quick else 60,
                )
            if "idle" in args.scenarios:
                print(f"{args.idle:,} idle sessions", flush=True)
                results["idle"] = idle_sessions(models["small"], args.idle)
        finally:
            delete_prefix(args.redis_url, prefix)
            delete_prefix(args.redis_url, prefix + "f")
    results = json.loads(json.dumps(results))  # as a reader of latest.json sees them: string keys
    results["targets"] = targets.check(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(results, indent=1))
    table = report.markdown(results)
    (args.out / "latest.md").write_text(table)
    report.plots(results, args.out)
    print(table)


if __name__ == "__main__":
    main()
