"""Listing and counting sessions on a real Redis and in memory: pages that stop inside a SCAN step
resume after the last key handed out, while sessions come and go; malformed cursors are 422s; the
costly count is cached; the memory listing keeps its order through creates and deletes."""

import asyncio
import random

import pytest
import redis

from app.errors import InvalidInput
from app.store.redis import RedisStore
from harness.redis import own_redis
from tests.support.stores import KEY, memory_store


def redis_store(url: str, prefix: str) -> RedisStore:
    store = RedisStore(url, prefix, capacity=8)
    store.add_model(KEY, "fp", [2])
    return store


async def list_all(store, limit: int, between=None) -> list[str]:
    listed, cursor = [], None
    while True:
        records, cursor = await store.page(limit, cursor)
        assert len(records) <= limit
        listed += [r.session_id for r in records]
        if cursor is None:
            return listed
        if between is not None:
            await between()


@pytest.mark.process
@pytest.mark.parametrize("backend", ["redis", "memory"])
def test_sessions_present_throughout_are_listed_exactly_once_while_others_churn(backend):
    async def main(url):
        store = redis_store(url, "churn") if backend == "redis" else memory_store(1000, [2])
        rng = random.Random(3)
        stable = {f"s{i:03d}" for i in range(60)}  # fewer than one SCAN step: every page splits it
        for sid in stable:
            await store.create(sid, 0.0, 1.0, model_key=KEY)
        made = 0

        async def churn():
            nonlocal made
            for _ in range(3):  # ids that sort before and after the pages' last keys
                made += 1
                await store.create(f"{rng.choice('ay')}-churn{made}", 0.0, 1.0, model_key=KEY)
            await store.delete(f"{rng.choice('ay')}-churn{rng.randint(1, made)}")

        try:
            listed = await list_all(store, 7, churn)
            assert sorted(sid for sid in listed if sid in stable) == sorted(stable), (
                "missed or repeated"
            )
            if backend == "memory":
                assert listed == sorted(listed)
        finally:
            if backend == "redis":
                await store.close()

    # A Redis of its own: no other keys, so one SCAN step returns most sessions and pages split it.
    with own_redis(appendonly=False) as server:
        asyncio.run(main(server.url))


@pytest.mark.parametrize(
    "cursor",
    [
        "-1:0",
        "0:-5",
        "0:+5",
        "0: 5",
        "0:18446744073709551616",
        "7:0",
        "x",
        "0:0:-1:a",
        "0:0:0:",
        "0",
    ],
)
def test_a_malformed_cursor_is_invalid_input_not_a_crash(cursor, redis_url, redis_prefix):
    async def main():
        store = redis_store(redis_url, redis_prefix)
        try:
            with pytest.raises(InvalidInput):
                await store.page(5, cursor)
        finally:
            await store.close()

    asyncio.run(main())


@pytest.mark.process
def test_the_count_is_cached_and_taken_by_one_caller_at_a_time():
    async def main(url):
        store = redis_store(url, "count")
        try:
            await store.create("one", 0.0, 1.0, model_key=KEY)
            admin = redis.Redis.from_url(url)
            scans_before = admin.info("commandstats").get("cmdstat_scan", {}).get("calls", 0)
            assert await asyncio.gather(*(store.count() for _ in range(20))) == [1] * 20
            scans = admin.info("commandstats")["cmdstat_scan"]["calls"] - scans_before
            assert scans == 1, "one walk of the keyspace for twenty callers"
            await store.create("two", 0.0, 1.0, model_key=KEY)
            assert await store.count() == 2, "this replica's own creates show at once"
            admin.hset("count:{elsewhere}", "ver", "x")  # another replica's create
            assert await store.count() == 2, "within the cache's age, the count is the one taken"
            store._count.max_age_s = 0.0
            assert await store.count() == 3
            await store.delete("one")
            assert await store.count() == 2
        finally:
            await store.close()

    with own_redis(appendonly=False) as server:  # its own: nobody else's SCANs in its stats
        asyncio.run(main(server.url))
