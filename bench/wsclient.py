"""A minimal WebSocket load client: one connection per session, closed loop, binary frames.

It speaks just enough of RFC 6455 for the benchmark: the upgrade, one pre-built masked frame sent
again and again, and reading the server's frames (answering pings). A WebSocket library costs several
times more CPU per message, which on a 2-core machine would be taken from the server under test.

    python -m bench.wsclient --url http://127.0.0.1:8000 --prefix bench- --sessions 64 \
        --seconds 5 --frame <hex of T x F float32>
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import struct
import time
from urllib.parse import urlsplit

import numpy as np

BINARY, CLOSE, PING, PONG = 0x2, 0x8, 0x9, 0xA


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A final, masked frame (clients must mask; the key is random per frame kind, which is enough
    for a benchmark that never crosses a proxy)."""
    key = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    mask = np.frombuffer((key * (size // 4 + 1))[:size], np.uint8)
    masked = (np.frombuffer(payload, np.uint8) ^ mask).tobytes()
    return header + key + masked


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", await reader.readexactly(2))
    elif size == 127:
        (size,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(size)


async def connect(url: str, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"upgrade refused: {head.splitlines()[0]!r}")
    return reader, writer


async def stream(url: str, sid: str, frame: bytes, deadline: float, latencies: list[float]) -> int:
    reader, writer = await connect(url, f"/v1/sessions/{sid}/stream")
    failed = 0
    try:
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            writer.write(frame)
            while True:
                opcode, payload = await read_frame(reader)
                if opcode == PING:
                    writer.write(client_frame(PONG, payload))
                elif opcode == CLOSE:
                    raise RuntimeError(f"server closed the stream of {sid}: {payload[2:]!r}")
                else:
                    break
            if opcode != BINARY:  # an error reply, in JSON
                failed += 1
            latencies.append(time.perf_counter() - sent)
        writer.write(client_frame(CLOSE, struct.pack("!H", 1000)))
        await writer.drain()
    finally:
        writer.close()
    return failed


async def run(url: str, ids: list[str], frame: bytes, seconds: float) -> dict:
    latencies: list[float] = []
    started = time.perf_counter()
    failures = await asyncio.gather(
        *(stream(url, sid, frame, started + seconds, latencies) for sid in ids)
    )
    return result(latencies, sum(failures), time.perf_counter() - started)


def result(latencies: list[float], failed: int, seconds: float) -> dict:
    """A closed-loop client's RESULT: answers that were not errors, and their latency."""
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99]) * 1e3 if latencies else (0, 0, 0)
    return {
        "requests": len(latencies) - failed,
        "failed": failed,
        "seconds": seconds,
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--frame", required=True, help="the chunk, hex-encoded float32 bytes")
    args = parser.parse_args()
    frame = client_frame(BINARY, bytes.fromhex(args.frame))
    ids = [f"{args.prefix}{i}" for i in range(args.sessions)]
    result = asyncio.run(run(args.url, ids, frame, args.seconds))
    print(
        "RESULT " + json.dumps({k: float(v) if k.endswith("_ms") else v for k, v in result.items()})
    )


if __name__ == "__main__":
    main()
