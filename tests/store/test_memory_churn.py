"""The memory store under churn: sessions made and deleted by the hundred thousand leave nothing
behind, whatever their TTL."""

import asyncio
import gc
import tracemalloc

from app.store.memory import MemoryStore
from tests.support.stores import KEY, memory_store

TEN_YEARS_S = 10 * 365 * 86400.0


def test_creating_and_deleting_100k_sessions_with_a_ttl_leaves_no_memory_behind():
    # The attack: create and delete sessions with a (long) TTL, over and over. Each delete used to
    # leave its expiry entry in the heap until the TTL ran out: +14.8 MiB per 100,000.
    async def churn(store: MemoryStore, start: int, count: int) -> None:
        for i in range(start, start + count):
            await store.create(f"churn-{i}", TEN_YEARS_S, 1000.0, model_key=KEY)
            assert await store.delete(f"churn-{i}")

    async def main() -> int:
        store = memory_store(16, [4])
        await store.create(
            "keeper", TEN_YEARS_S, 1000.0, model_key=KEY
        )  # one live session with a TTL throughout
        await churn(store, 0, 2_000)  # warm: the structures reach their working size
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        await churn(store, 2_000, 100_000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert await store.count() == 1
        assert await store.expire(1000.0 + TEN_YEARS_S + 1, set()) == 1  # the keeper still expires
        assert await store.count() == 0
        return grown

    grown = asyncio.run(main())
    assert grown < 256 * 1024, (
        f"100,000 created and deleted sessions left {grown / 2**20:.1f} MiB behind"
    )
