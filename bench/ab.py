"""A/B: this tree's server against the same server at another commit, side by side in one run.

``python -m bench.ab --base REV`` checks REV out into a temporary worktree, starts both servers on
the small scenario's model (memory backend), and runs alternating closed-loop rounds of the small
scenario over HTTP (wrk) and the frames scenario over WebSocket (``bench.wsclient``), so that the
machine's noise falls on both alike. It prints each round's chunks/s, both sides' CPU, and the
ratio of the medians (this tree / base): what a change costs or saves on the hot path.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from bench import live, load
from bench.run import chunk_body, create_sessions, settle
from bench.scenarios import FRAMES, SMALL, write_model
from harness.servers import ROOT, ServerProcess, running


class ServerAt(ServerProcess):
    """``python -m app serve`` run from another checkout of the project (``-m`` imports ``app``
    from the working directory first)."""

    def __init__(self, checkout: Path, *args: str):
        super().__init__(*args)
        self.checkout = checkout

    def start(self) -> ServerAt:
        self.process = subprocess.Popen(
            self.command(), cwd=self.checkout, stdout=self.output, stderr=self.output
        )
        return self


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the commit to compare against (e.g. HEAD~3)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument(
        "--streams", type=int, default=300, help="live streams, for the live scenario"
    )
    parser.add_argument(
        "--scenarios",
        nargs="+",
        default=["small", "frames", "live"],
        choices=["small", "frames", "live"],
    )
    parser.add_argument("--server-args", default="", help="extra flags for both servers")
    args = parser.parse_args()
    load.require_wrk()
    with tempfile.TemporaryDirectory(prefix="srnn-ab-") as folder:
        checkout = Path(folder) / "base"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(checkout), args.base],
            cwd=ROOT,
            check=True,
        )
        try:
            model = write_model(SMALL, Path(folder))
            compare(checkout, model, args)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(checkout)], cwd=ROOT, check=False
            )


def compare(checkout: Path, model: Path, args: argparse.Namespace) -> None:
    flags = (
        "--model",
        str(model),
        "--log-level",
        "warning",
        "--capacity",
        str(max(1024, args.streams)),
        *shlex.split(args.server_args),
    )
    servers = {"base": ServerAt(checkout, *flags), "this": ServerProcess(*flags)}
    body, _ = chunk_body(SMALL)
    _, frame = chunk_body(FRAMES)  # the same model: GRU 64 over F = 16
    live_frame = np.random.default_rng(0).normal(size=(10, SMALL.features)).astype("<f4").tobytes()
    results: dict[str, dict[str, list]] = {name: {} for name in args.scenarios}
    with running(list(servers.values()), timeout=180):
        for server in servers.values():
            create_sessions(
                server.url, "ab", max(SMALL.sessions, FRAMES.sessions, args.streams), body
            )
        for number in range(args.rounds):
            order = list(servers.items()) if number % 2 == 0 else list(servers.items())[::-1]
            for name, server in order:
                if "small" in results:
                    settle(servers)
                    results["small"].setdefault(name, []).append(
                        load.wrk(
                            server.url,
                            server.process.pid,
                            body=body,
                            sessions=SMALL.sessions,
                            prefix="ab",
                            seconds=args.seconds,
                        )
                    )
                if "frames" in results:
                    settle(servers)
                    results["frames"].setdefault(name, []).append(
                        load.websocket(
                            server.url,
                            server.process.pid,
                            frame=frame,
                            sessions=FRAMES.sessions,
                            prefix="ab",
                            seconds=args.seconds,
                        )
                    )
                if "live" in results:
                    settle(servers)
                    results["live"].setdefault(name, []).append(
                        live.measure(
                            server, args.streams, args.seconds, 100.0, frame=live_frame, prefix="ab"
                        )
                    )
    for scenario, runs in results.items():
        if scenario == "live":
            print(f"\nlive, {args.streams} streams: server CPU per chunk (µs), p99 ms per round")
            for name, measured in runs.items():
                per_chunk = [1e6 * r.server_cpu / r.served_per_s for r in measured]
                print(
                    f"  {name:>4}: median {statistics.median(per_chunk):.0f} µs, p99 "
                    f"{statistics.median(r.p99_ms for r in measured):.1f} ms; "
                    + ", ".join(f"{c:.0f} ({r.p99_ms:.0f})" for c, r in zip(per_chunk, measured))
                )
            ratio = statistics.median(
                1e6 * r.server_cpu / r.served_per_s for r in runs["this"]
            ) / statistics.median(1e6 * r.server_cpu / r.served_per_s for r in runs["base"])
            print(f"  CPU per chunk, this / base = {ratio:.2f}")
            continue
        print(f"\n{scenario}: chunks/s per round (server CPU, client CPU)")
        for name, measured in runs.items():
            rounds_text = ", ".join(
                f"{r.rate:,.0f} ({r.server_cpu:.2f}, {r.client_cpu:.2f})" for r in measured
            )
            print(
                f"  {name:>4}: median {statistics.median(r.rate for r in measured):,.0f}; {rounds_text}"
            )
        ratio = statistics.median(r.rate for r in runs["this"]) / statistics.median(
            r.rate for r in runs["base"]
        )
        print(f"  this / base = {ratio:.2f}")


if __name__ == "__main__":
    main()
