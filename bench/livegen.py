"""The live-streams load generator: N WebSocket streams, each sending one binary chunk every P ms
on a fixed schedule (open loop), whatever the server's answers do.

Latency is timed from each chunk's *scheduled* send time, so a server that falls behind cannot
hide it by slowing the sender down (no coordinated omission); a send that leaves more than a
millisecond after its time is counted as late, a sign that the generator itself is the bottleneck.
Streams are spread evenly over the period. picows (a Cython WebSocket client, each frame masked
with a fresh key) on uvloop keeps the generator's cost per message well under the server's.

    python -m bench.livegen --url http://127.0.0.1:8000 --prefix live- --streams 1000 \\
        --period-ms 100 --frame <hex> --seconds 10 --warmup 2

It prints one line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import deque

import numpy as np
import uvloop
from picows import WSListener, WSMsgType, WSTransport, ws_connect

LATE_S = 0.002  # libuv timers tick in milliseconds


class Stream(WSListener):
    def __init__(self, run: Run):
        self.run = run
        self.sent: deque[float] = deque()  # scheduled times of the chunks awaiting their answer
        self.transport: WSTransport | None = None
        self.closed = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.BINARY:
            self.run.answered(self.sent.popleft())
        elif kind == WSMsgType.TEXT:  # an error reply: the chunk was refused
            self.sent.popleft()
            self.run.refused += 1
        elif kind == WSMsgType.PING:
            transport.send_pong(frame.get_payload_as_bytes())
        elif kind == WSMsgType.CLOSE:
            self.closed = True
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True


class Run:
    def __init__(self, measure_from: float, measure_until: float):
        self.measure_from, self.measure_until = measure_from, measure_until
        self.latencies: list[float] = []
        self.offered = self.refused = self.late = self.unanswered = 0

    def answered(self, scheduled: float) -> None:
        if self.measure_from <= scheduled < self.measure_until:
            self.latencies.append(time.monotonic() - scheduled)


async def main(args: argparse.Namespace) -> dict:
    url = args.url.replace("http", "ws", 1)
    frame = bytes.fromhex(args.frame)
    period = args.period_ms / 1000
    started = time.monotonic() + 1.0
    run = Run(started + args.warmup, started + args.warmup + args.seconds)
    connecting = asyncio.Semaphore(64)

    async def connect(index: int) -> Stream:
        async with connecting:
            _, stream = await ws_connect(
                lambda: Stream(run), f"{url}/v1/sessions/{args.prefix}{index}/stream"
            )
            return stream

    streams = await asyncio.gather(*(connect(i) for i in range(args.streams)))
    started = max(started, time.monotonic() + 0.2)
    run.measure_from, run.measure_until = (
        started + args.warmup,
        started + args.warmup + args.seconds,
    )
    offsets = np.arange(args.streams) * (period / args.streams)
    end = run.measure_until
    rounds = 0
    while (base := started + rounds * period) < end:
        for stream, offset in zip(streams, offsets):
            due = base + offset
            delay = due - time.monotonic()
            if delay > LATE_S / 2:
                await asyncio.sleep(delay)
            elif delay < -LATE_S and due >= run.measure_from:
                run.late += 1
            if stream.closed:
                continue
            stream.sent.append(due)
            stream.transport.send(WSMsgType.BINARY, frame)
            if run.measure_from <= due < run.measure_until:
                run.offered += 1
        rounds += 1
    await asyncio.sleep(args.drain_s)  # the last answers
    run.unanswered = sum(
        1 for s in streams for due in s.sent if run.measure_from <= due < run.measure_until
    )
    for stream in streams:
        if not stream.closed:
            stream.transport.disconnect()
    latencies = np.array(run.latencies) * 1000 if run.latencies else np.array([np.nan])
    return {
        "streams": args.streams,
        "period_ms": args.period_ms,
        "seconds": args.seconds,
        "offered": run.offered,
        "served": len(run.latencies),
        "refused": run.refused,
        "unanswered": run.unanswered,
        "closed": sum(s.closed for s in streams),
        "late": run.late,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p90_ms": float(np.percentile(latencies, 90)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "max_ms": float(latencies.max()),
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--period-ms", type=float, default=100.0)
    parser.add_argument("--frame", required=True, help="one chunk: T x F float32, in hex")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--drain-s", type=float, default=1.0)
    args = parser.parse_args()
    print("RESULT " + json.dumps(uvloop.run(main(args))), flush=True)


if __name__ == "__main__":
    cli()
