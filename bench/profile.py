"""Where the server's time goes under one scenario's load: py-spy samples, summed by function.

    python -m bench.profile frames          # or small, large; writes bench/results/profile-frames.txt
    python -m bench.profile live --streams 500

The server runs as its own process under the scenario's closed-loop load (as in ``bench.run``) while
py-spy samples it (``--nonblocking``: the server is not paused). The summary gives, for the event-loop
thread and the model thread apart, the share of samples in which each function was on the stack. With
uvloop, time inside the loop's C code (polling, socket reads and writes, callbacks) shows as the
``Runner.run`` frame itself.
"""

from __future__ import annotations

import argparse
import collections
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import live, load
from bench.run import RESULTS, chunk_body, create_sessions, service
from bench.scenarios import LIVE, SCENARIOS, write_model

THREADS = {"model": "_WorkItem.run", "event loop": "Runner.run"}


def summarize(raw: Path, top: int = 25) -> str:
    """Inclusive shares per thread from py-spy's raw (collapsed) output."""
    counts = {name: collections.Counter() for name in THREADS}
    own = {name: collections.Counter() for name in THREADS}  # samples with the function on top
    totals = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = [f.split(" (")[0] for f in stack.split(";")]
        thread = next((name for name, marker in THREADS.items() if marker in frames), None)
        if thread is None:
            continue
        totals[thread] += int(n)
        own[thread][frames[-1]] += int(n)
        for frame in set(frames):
            counts[thread][frame] += int(n)
    lines = []
    for thread, counter in counts.items():
        lines.append(f"== {thread} thread: {totals[thread]} samples; inclusive")
        for frame, n in counter.most_common(top):
            lines.append(f"{100 * n / max(totals[thread], 1):5.1f}%  {frame}")
        lines.append(f"== {thread} thread: its own time (the function on top of the stack)")
        for frame, n in own[thread].most_common(top):
            lines.append(f"{100 * n / max(totals[thread], 1):5.1f}%  {frame}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--streams", type=int, default=500, help="live: how many streams")
    parser.add_argument("--server-args", default="", help="extra flags for stateful-rnn serve")
    parser.add_argument("--top", type=int, default=25, help="functions listed per thread and view")
    parser.add_argument(
        "--native", action="store_true", help="C frames too (what uvloop and picows do inside)"
    )
    args = parser.parse_args()
    load.require_wrk()
    scenario = SCENARIOS[args.scenario]
    with tempfile.TemporaryDirectory() as tmp:
        model = write_model(scenario, Path(tmp))
        server = (
            service(
                model,
                "--max-batch",
                str(max(scenario.sessions, 256)),
                "--capacity",
                "4096",
                *shlex.split(args.server_args),
            )
            .start()
            .wait_ready(180)
        )
        try:
            body, frame = chunk_body(scenario)
            if scenario is LIVE:
                live.create_sessions(server.url, args.streams)
                live.measure(server, args.streams, 4, 100.0)  # unmeasured: XLA's programs compile
                time.sleep(5)
            else:
                create_sessions(server.url, "s", scenario.sessions, body)
            raw = Path(tmp) / "profile.txt"
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    # C frames need the process paused for each sample: fewer samples then.
                    *(["--native"] if args.native else ["--nonblocking"]),
                    "-r",
                    "50" if args.native else "200",
                    "-d",
                    str(int(args.seconds)),
                    "-f",
                    "raw",
                    "-o",
                    str(raw),
                    "-p",
                    str(server.process.pid),
                ],
                stdout=subprocess.DEVNULL,
            )
            if scenario is LIVE:
                row = live.measure(server, args.streams, args.seconds - 3, 100.0)
                header = (
                    f"{scenario.what}, {args.streams} streams: {row.served_per_s:,.0f} chunks/s, "
                    f"p50 {row.p50_ms:.1f} ms, p99 {row.p99_ms:.1f} ms, server CPU {row.server_cpu:.2f}, "
                    f"generator CPU {row.client_cpu:.2f}\n"
                )
            elif scenario.transport == "websocket":
                run = load.websocket(
                    server.url,
                    server.process.pid,
                    frame=frame,
                    sessions=scenario.sessions,
                    prefix="s",
                    seconds=args.seconds,
                )
            else:
                run = load.wrk(
                    server.url,
                    server.process.pid,
                    body=body,
                    sessions=scenario.sessions,
                    prefix="s",
                    seconds=args.seconds,
                )
            if scenario is not LIVE:
                header = (
                    f"{scenario.what}: {run.rate:,.0f} chunks/s, p50 {run.p50_ms:.1f} ms, "
                    f"server CPU {run.server_cpu:.2f}, client CPU {run.client_cpu:.2f}\n"
                )
            spy.wait()
        finally:
            server.stop()
        text = header + summarize(raw, args.top)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"profile-{args.scenario}.txt").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
