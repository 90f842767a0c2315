"""The store's Lua scripts: a replica whose first requests arrive together, a Redis that loses its
scripts, and a load cut off half way never answer 500, and /readyz says 200 only when the replica
can serve."""

import asyncio

import httpx
import pytest
import redis

from harness.redis import own_redis
from harness.servers import ServerProcess, wait_for
from tests.support.proxy import BreakingProxy

pytestmark = pytest.mark.process  # replica processes starting together

SCRIPT_LOAD = b"SCRIPT\r\n$4\r\nLOAD"


def replica(redis_url: str) -> ServerProcess:
    return ServerProcess("--model", "seed", "--backend", "redis", "--redis-url", redis_url)


async def together(url: str, existing: list[str], rounds: int = 1) -> list[int]:
    """Creates, chunks, resets and state reads of ``existing`` sessions, all at once."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        calls = []
        for n in range(rounds):
            for sid in existing:
                calls += [
                    http.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [0.5]}),
                    http.post("/v1/sessions"),
                    http.get(f"/v1/sessions/{sid}/state")
                    if n % 2
                    else http.post(f"/v1/sessions/{sid}/reset"),
                ]
        return [answer.status_code for answer in await asyncio.gather(*calls)]


def test_a_fresh_replica_answers_creates_and_chunks_arriving_together():
    # The attack: a new replica's first requests, creates and chunks together. Its scripts were
    # loaded one by one on first use while other requests found some loaded: 60 chunks answered 500.
    with own_redis(appendonly=False) as server:
        first = replica(server.url).start()
        try:
            first.wait_ready()
            existing = [
                httpx.post(f"{first.url}/v1/sessions").json()["session_id"] for _ in range(30)
            ]
        finally:
            first.stop()
        redis.Redis.from_url(server.url).script_flush()  # the fresh replica finds none loaded
        fresh = replica(server.url).start()
        try:
            fresh.wait_ready()
            statuses = asyncio.run(together(fresh.url, existing))
            assert set(statuses) <= {200, 201}, statuses
            for _ in range(
                3
            ):  # Redis loses them again (a restart): every caller waits for one load
                redis.Redis.from_url(server.url).script_flush()
                statuses = asyncio.run(together(fresh.url, existing, rounds=2))
                assert set(statuses) <= {200, 201}, statuses
        finally:
            fresh.stop()


def test_a_load_cut_off_half_way_is_503_until_a_load_succeeds_and_readyz_tells_the_truth():
    # The attack: the connection dropped during the second SCRIPT LOAD. Every chunk, state read and
    # reset on that replica answered 500 for good, once Redis was healthy too, while /readyz said 200.
    loads = []
    cut = {"every": False}

    def breaks(data: bytes) -> bool:
        if SCRIPT_LOAD not in data:
            return False
        loads.append(data)
        return cut["every"] or len(loads) == 2

    with own_redis(appendonly=False) as server:
        proxy = BreakingProxy(("127.0.0.1", server.port), breaks)
        app = replica(f"redis://{proxy.address}/0").start()
        try:
            app.wait_ready()  # a load was cut: ready only once one went through whole
            assert len(loads) >= 5, "the scripts are loaded before /readyz says 200"
            with httpx.Client(base_url=app.url, timeout=30) as http:
                sid = http.post("/v1/sessions").json()["session_id"]
                for call in (
                    lambda: http.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [1.0]}),
                    lambda: http.get(f"/v1/sessions/{sid}/state"),
                    lambda: http.post(f"/v1/sessions/{sid}/reset"),
                ):
                    assert call().status_code == 200

                # Redis loses its scripts and every load is cut: not ready, and 503, never 500.
                cut["every"] = True
                redis.Redis.from_url(server.url).script_flush()
                answers = [
                    http.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [1.0]}),
                    http.post(f"/v1/sessions/{sid}/reset"),
                    http.post("/v1/sessions"),
                ]
                assert [a.status_code for a in answers] == [503] * 3, [a.text for a in answers]
                assert http.get("/readyz").status_code == 503
                assert http.get(f"/v1/sessions/{sid}").json()["steps"] == 0  # the reset, before

                cut["every"] = False  # healthy again: the next caller loads them, by itself
                wait_for(
                    lambda: http.get("/readyz").status_code == 200, "ready again", 20, errors=()
                )
                answer = http.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [1.0]})
                assert answer.status_code == 200 and answer.json()["seq"] == 2, answer.text
        finally:
            app.stop()
            proxy.close()
