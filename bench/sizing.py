"""Sizing: memory per session on a replica and in Redis, for the README's Deploy section.

Starts its own redis-server and one server per backend (`--capacity` = N), fills N sessions with one
chunk each (so every one is hot: it holds a slot and, on Redis, a stored state and response), and
reports the growth of the server's resident memory and of Redis's ``used_memory`` per session, and
``MEMORY USAGE`` of one session's key.

    python -m bench.sizing [--model default] [--sessions 10000]
"""

from __future__ import annotations

import argparse
import asyncio

import httpx
import psutil
import redis

from harness.redis import own_redis
from harness.servers import serve_processes


def rss_bytes(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


async def fill(url: str, sessions: int, features: int) -> None:
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        gate = asyncio.Semaphore(64)

        async def one(i: int) -> None:
            async with gate:
                sid = f"size-{i:08d}"
                assert (
                    await http.post("/v1/sessions", json={"session_id": sid})
                ).status_code == 201
                answer = await http.post(
                    f"/v1/sessions/{sid}/chunks", json={"inputs": [[0.5] * features] * 10}
                )
                assert answer.status_code == 200, answer.text

        await asyncio.gather(*(one(i) for i in range(sessions)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--sessions", type=int, default=10000)
    options = parser.parse_args()
    n = options.sessions
    with own_redis(appendonly=False) as server:
        client = redis.Redis.from_url(server.url)
        for backend in ("memory", "redis"):
            args = (
                "--model",
                options.model,
                "--capacity",
                str(n),
                "--backend",
                backend,
                "--redis-url",
                server.url,
                "--redis-prefix",
                "size",
                "--session-ttl",
                "0",
            )
            with serve_processes(1, *args) as (process,):
                features = httpx.get(f"{process.url}/v1/model").json()["input_features"]
                redis_before = client.info("memory")["used_memory"]
                rss_before = rss_bytes(process.process.pid)
                asyncio.run(fill(process.url, n, features))
                rss_after = rss_bytes(process.process.pid)
                print(
                    f"{backend}: server RSS {rss_before / 2**20:.0f} MiB -> {rss_after / 2**20:.0f} MiB "
                    f"with {n} hot sessions: {(rss_after - rss_before) / n:.0f} bytes per session"
                )
                if backend == "redis":
                    used = client.info("memory")["used_memory"] - redis_before
                    sample = client.memory_usage("size:{size-00000000}", samples=0)
                    print(
                        f"redis: used_memory +{used / 2**20:.1f} MiB for {n} sessions: "
                        f"{used / n:.0f} bytes per session; MEMORY USAGE of one key: {sample} bytes"
                    )
                    client.flushall()


if __name__ == "__main__":
    main()
