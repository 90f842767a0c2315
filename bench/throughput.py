"""Chunk throughput of one server for 1 session against many, per state backend, in one run.

Closed loop: each of N sessions has one keep-alive connection and sends its next chunk as soon as the
previous answer arrives. The load comes from wrk (Debian: ``apt-get install wrk``), a compiled load
generator, so that the client does not starve the server of CPU the way a Python client would. The
server runs as its own process. The machine is shared and noisy: each figure is the median of several
rounds, and the rounds interleave the session counts so that drift hits all of them alike.

    python bench/throughput.py [--model default] [--sessions 1 64] [--backends memory redis]
                               [--seconds 5] [--rounds 3] [--steps 10] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.redis import delete_prefix, new_prefix  # noqa: E402
from tests.support.servers import serve_processes  # noqa: E402

# One wrk thread per session, each with one connection: session i's chunks never overlap.
LUA = """
local created = 0
function setup(thread)
  thread:set("sid", "bench-" .. created)
  created = created + 1
end
function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = BODY
  path = "/v1/sessions/" .. sid .. "/chunks"
end
function request()
  return wrk.format(nil, path)
end
"""


def wrk_rate(url: str, sessions: int, seconds: float, script: Path) -> float:
    done = subprocess.run(
        ["wrk", f"-t{sessions}", f"-c{sessions}", f"-d{int(seconds)}s", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    )
    if "Non-2xx" in done.stdout:
        raise RuntimeError(f"errors during the run:\n{done.stdout}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", done.stdout).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--backends", nargs="+", default=["memory", "redis"], choices=["memory", "redis"])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="time steps per chunk")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench needs wrk: apt-get install wrk (or brew install wrk)")

    prefix = new_prefix()
    results: dict[tuple[str, int], list[float]] = {}
    with contextlib.ExitStack() as stack:
        urls = {}
        for backend in args.backends:
            extra = ("--redis-url", args.redis_url, "--redis-prefix", prefix) if backend == "redis" else ()
            (server,) = stack.enter_context(serve_processes(1, "--model", args.model, "--backend", backend, *extra))
            urls[backend] = server.url
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        features = httpx.get(f"{urls[args.backends[0]]}/v1/model").json()["input_features"]
        inputs = np.random.default_rng(0).normal(size=(args.steps, features)).round(4).tolist()
        script = Path(tmp) / "chunks.lua"
        script.write_text(LUA.replace("BODY", json.dumps(json.dumps({"inputs": inputs}))))
        for url in urls.values():
            for i in range(max(args.sessions)):
                httpx.post(f"{url}/v1/sessions", json={"session_id": f"bench-{i}"}).raise_for_status()
        for _ in range(args.rounds):  # interleaved, so drift on a shared machine hits all alike
            for backend, url in urls.items():
                for n in args.sessions:
                    results.setdefault((backend, n), []).append(wrk_rate(url, n, args.seconds, script))
    if "redis" in args.backends:
        delete_prefix(args.redis_url, prefix)

    first = args.backends[0]
    print(f"model={args.model} T={args.steps}, median of {args.rounds} rounds x {args.seconds} s, wrk")
    print(f"| backend | sessions | chunks/s | time steps/s | vs {first} | vs 1 session |")
    print("|---|---:|---:|---:|---:|---:|")
    for (backend, n), rates in results.items():
        rate = statistics.median(rates)
        base = statistics.median(results[(first, n)])
        single = statistics.median(results[(backend, args.sessions[0])])
        print(f"| {backend} | {n} | {rate:,.0f} | {rate * args.steps:,.0f} | {rate / base:.2f}x "
              f"| {rate / single:.2f}x |")


if __name__ == "__main__":
    main()
