"""Edges of the shared store that review found: errors that are not disconnections, order of
commands on a stream, other models' sessions next to ours, a session re-created elsewhere."""

import asyncio
import json
import time

import httpx
import numpy as np
import pytest
import redis
import websockets

from app.model.builtin import build_seed_model
from app.model.loader import load_model
from harness.redis import own_redis
from harness.servers import serve_in_thread
from tests.support.reference import StatefulReference
from tests.support.stores import KEY, memory_store


@pytest.mark.process
def test_redis_refusing_writes_is_503_without_a_hang_and_then_recovers():
    with own_redis(appendonly=False) as server:
        with serve_in_thread(load_model("seed"), backend="redis", redis_url=server.url) as url:
            sid = httpx.post(f"{url}/v1/sessions").json()["session_id"]
            assert (
                httpx.post(f"{url}/v1/sessions/{sid}/chunks", json={"inputs": [1.0]}).status_code
                == 200
            )
            admin = redis.Redis.from_url(server.url)
            admin.config_set("maxmemory", 1)  # every write is now refused with OOM
            started = time.monotonic()
            for call in (
                lambda: httpx.post(
                    f"{url}/v1/sessions/{sid}/chunks", json={"inputs": [2.0]}, timeout=10
                ),
                lambda: httpx.post(f"{url}/v1/sessions/{sid}/reset", timeout=10),
                lambda: httpx.post(f"{url}/v1/sessions", timeout=10),
            ):
                answer = call()
                assert answer.status_code == 503 and answer.headers["retry-after"], answer.text
            assert time.monotonic() - started < 10
            admin.config_set("maxmemory", 0)
            answer = httpx.post(f"{url}/v1/sessions/{sid}/chunks", json={"inputs": [2.0]})
            assert answer.status_code == 200 and answer.json()["seq"] == 2


def test_commands_on_a_stream_keep_their_place_between_chunks(redis_url, redis_prefix):
    with serve_in_thread(
        load_model("seed"), backend="redis", redis_url=redis_url, redis_prefix=redis_prefix
    ) as url:
        sid = httpx.post(f"{url}/v1/sessions").json()["session_id"]

        async def rounds():
            async with websockets.connect(
                url.replace("http", "ws") + f"/v1/sessions/{sid}/stream"
            ) as socket:
                for _ in range(25):
                    await socket.send(json.dumps({"op": "reset"}))
                    await socket.send(np.array([0.5, -0.5], "<f4").tobytes())
                    await socket.send(json.dumps({"op": "state"}))
                    reset, _, state = [await socket.recv() for _ in range(3)]
                    assert json.loads(reset)["session"]["steps"] == 0
                    assert json.loads(state)["steps"] == 2

        asyncio.run(rounds())


@pytest.mark.process
def test_another_models_session_is_refused_alone_and_left_intact(redis_url, redis_prefix):
    options = {"backend": "redis", "redis_url": redis_url, "redis_prefix": redis_prefix}
    with serve_in_thread(load_model("default"), **options) as default_url:
        foreign = httpx.post(f"{default_url}/v1/sessions").json()["session_id"]
        httpx.post(f"{default_url}/v1/sessions/{foreign}/chunks", json={"inputs": [0.1, 0.2]})
        before = httpx.get(f"{default_url}/v1/sessions/{foreign}/state").json()
        with serve_in_thread(load_model("seed"), **options) as seed_url:
            ours = httpx.post(f"{seed_url}/v1/sessions").json()["session_id"]

            async def together():
                async with httpx.AsyncClient(base_url=seed_url) as http:
                    return await asyncio.gather(
                        *(
                            http.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [1.0]})
                            for sid in [ours, foreign] * 8
                        )
                    )

            answers = asyncio.run(together())
            assert [a.status_code for a in answers] == [200, 409] * 8
            assert httpx.post(f"{seed_url}/v1/sessions/{foreign}/reset").status_code == 409
        assert httpx.get(f"{default_url}/v1/sessions/{foreign}/state").json() == before


def test_a_session_deleted_and_made_again_on_another_replica_is_not_read_from_a_stale_cache(
    redis_url, redis_prefix
):
    options = {"backend": "redis", "redis_url": redis_url, "redis_prefix": redis_prefix}
    with (
        serve_in_thread(load_model("seed"), **options) as a,
        serve_in_thread(load_model("seed"), **options) as b,
    ):
        httpx.post(f"{a}/v1/sessions", json={"session_id": "again"})
        httpx.post(f"{a}/v1/sessions/again/chunks", json={"inputs": [3.0, 3.0]})  # A caches it
        httpx.delete(f"{b}/v1/sessions/again")
        httpx.post(f"{b}/v1/sessions", json={"session_id": "again"})
        httpx.post(f"{b}/v1/sessions/again/chunks", json={"inputs": [-1.0]})
        answer = httpx.post(f"{a}/v1/sessions/again/chunks", json={"inputs": [0.5]}).json()
    reference = StatefulReference(build_seed_model())
    reference.feed(np.array([[-1.0]]))
    np.testing.assert_allclose(answer["outputs"], reference.feed(np.array([[0.5]])), atol=1e-5)
    assert answer["seq"] == 2


def test_the_memory_expiry_heap_does_not_grow_with_re_created_sessions():
    async def run():
        store = memory_store(4, [3])
        for _ in range(1000):
            await store.create("same", 60.0, 0.0, model_key=KEY)
            await store.delete("same")
        await store.create("same", 60.0, 0.0, model_key=KEY)
        for now in range(0, 600, 30):  # many sweeps while the session stays in use
            store._records["same"].last_active_at = float(now)
            await store.expire(float(now), set())
        return len(store._expiries)

    assert asyncio.run(run()) <= 2
