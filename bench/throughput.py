"""Chunk throughput of one server for 1 session against many, measured in one run.

Closed loop: each of N sessions has one keep-alive connection and sends its next chunk as soon as the
previous answer arrives. The load comes from wrk (Debian: ``apt-get install wrk``), a compiled load
generator, so that the client does not starve the server of CPU the way a Python client would. The
server runs as its own process. The machine is shared and noisy: each figure is the median of several
rounds, and the rounds interleave the session counts so that drift hits all of them alike.

    python bench/throughput.py [--model default] [--sessions 1 64] [--seconds 5] [--rounds 3] [--steps 10]
"""

from __future__ import annotations

import argparse
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
from tests.support.servers import serve_process  # noqa: E402

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
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="time steps per chunk")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench needs wrk: apt-get install wrk (or brew install wrk)")

    with serve_process("--model", args.model) as url, tempfile.TemporaryDirectory() as tmp:
        features = httpx.get(f"{url}/v1/model").json()["input_features"]
        inputs = np.random.default_rng(0).normal(size=(args.steps, features)).round(4).tolist()
        script = Path(tmp) / "chunks.lua"
        script.write_text(LUA.replace("BODY", json.dumps(json.dumps({"inputs": inputs}))))
        for i in range(max(args.sessions)):
            httpx.post(f"{url}/v1/sessions", json={"session_id": f"bench-{i}"}).raise_for_status()
        results: dict[int, list[float]] = {n: [] for n in args.sessions}
        for _ in range(args.rounds):
            for n in args.sessions:
                results[n].append(wrk_rate(url, n, args.seconds, script))

    base = statistics.median(results[args.sessions[0]])
    print(f"model={args.model} T={args.steps}, median of {args.rounds} rounds x {args.seconds:g} s, wrk")
    print("| sessions | chunks/s | time steps/s | vs first row |")
    print("|---:|---:|---:|---:|")
    for n, rates in results.items():
        rate = statistics.median(rates)
        print(f"| {n} | {rate:,.0f} | {rate * args.steps:,.0f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
