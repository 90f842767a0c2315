"""WebSocket frames/s against HTTP chunks/s for many concurrent streams, in one run.

Each of N sessions sends its next chunk as soon as the last is answered (closed loop), for the same
time, over the same server process, rounds interleaved. WebSocket load comes from Python's
`websockets` (binary float32 frames, one connection per stream); HTTP load from wrk (one keep-alive
connection per session); a Python HTTP client could not load the server (httpx managed ~120
chunks/s here), so the HTTP side has the faster client. The machine is shared and noisy: each figure
is the median of the rounds.

    python bench/streams.py [--model default] [--streams 64] [--steps 1] [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.throughput import LUA, wrk_rate  # noqa: E402
from tests.support.servers import serve_processes  # noqa: E402


async def websocket_rate(url: str, ids: list[str], frame: bytes, seconds: float) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def stream(sid: str) -> None:
        nonlocal done
        async with websockets.connect(url.replace("http", "ws") + f"/v1/sessions/{sid}/stream") as socket:
            while time.perf_counter() < deadline:
                await socket.send(frame)
                reply = await socket.recv()
                assert isinstance(reply, bytes), reply
                done += 1

    started = time.perf_counter()
    await asyncio.gather(*(stream(sid) for sid in ids))
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1, help="time steps per chunk (1: audio-frame-like)")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench needs wrk: apt-get install wrk (or brew install wrk)")
    results: dict[str, list[float]] = {"websocket (binary, websockets)": [], "http (wrk)": []}
    with serve_processes(1, "--model", args.model) as (server,), tempfile.TemporaryDirectory() as tmp:
        url = server.url
        features = httpx.get(f"{url}/v1/model").json()["input_features"]
        inputs = np.random.default_rng(0).normal(size=(args.steps, features)).astype(np.float32)
        body = json.dumps({"inputs": inputs.round(4).tolist()})
        script = Path(tmp) / "chunks.lua"
        script.write_text(LUA.replace("BODY", json.dumps(body)))
        ids = [f"bench-{i}" for i in range(args.streams)]
        for sid in ids:
            httpx.post(f"{url}/v1/sessions", json={"session_id": sid}).raise_for_status()
        for _ in range(args.rounds):
            results["websocket (binary, websockets)"].append(
                asyncio.run(websocket_rate(url, ids, inputs.astype("<f4").tobytes(), args.seconds)))
            results["http (wrk)"].append(wrk_rate(url, args.streams, args.seconds, script))
    print(f"model={args.model}, {args.streams} streams, T={args.steps}, "
          f"median of {args.rounds} rounds x {args.seconds} s")
    print("| transport (load generator) | chunks/s | vs http (wrk) |")
    print("|---|---:|---:|")
    base = statistics.median(results["http (wrk)"])
    for name, rates in results.items():
        rate = statistics.median(rates)
        print(f"| {name} | {rate:,.0f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
