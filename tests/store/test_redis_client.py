"""How the store's Redis clients are built and how their failures read: no resend by redis-py
itself, a cluster that cannot be reached is a 503 (a misuse is not), and a cancelled pipeline is an
unknown outcome, never a reply."""

import asyncio

import pytest
from redis.asyncio.retry import Retry as AsyncRetry
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException

from app.store.redis.cluster import OutcomeUnknown, connect, settle
from app.store.redis.errors import transient


@pytest.mark.parametrize("url", ["redis+cluster://127.0.0.1:7000", "redis://127.0.0.1:6379/0"])
def test_clients_never_resend_by_themselves(url):
    async def main():
        client = connect(url, socket_timeout=1.0, connect_timeout=1.0)  # connects on first use
        retry = getattr(client, "retry", None) or client.connection_pool.connection_kwargs["retry"]
        assert isinstance(retry, AsyncRetry) and retry.get_retries() == 0
        await client.aclose()

    asyncio.run(main())


@pytest.mark.parametrize(
    "exc, retry",
    [
        (
            RedisClusterException(
                "Redis Cluster cannot be connected. Please provide at least one reachable node"
            ),
            True,
        ),
        (
            RedisClusterException(
                "All slots are not covered after query all startup_nodes. 5461 of 16384"
            ),
            True,
        ),
        (RedisClusterException("startup_nodes could not agree on a valid slots cache: a, b"), True),
        (RedisClusterException("Too many targets for command ('MSET',)"), False),
        (RedisClusterException("MGET - all keys must map to the same key slot"), False),
    ],
)
def test_cluster_exceptions_are_transient_only_when_about_reaching_the_cluster(exc, retry):
    assert transient(exc) is retry


def test_cluster_exception_caused_by_a_lost_connection_is_transient():
    exc = RedisClusterException("something new")
    exc.__cause__ = RedisConnectionError("refused")
    assert transient(exc)


def test_a_cancelled_pipeline_is_an_unknown_outcome_unless_this_task_is_cancelled():
    async def cancelled() -> None:
        raise asyncio.CancelledError

    async def gathered() -> list:
        return settle(
            await asyncio.gather(cancelled(), asyncio.sleep(0, ["ok"]), return_exceptions=True)
        )

    async def main():
        first, second = await gathered()
        assert isinstance(first, OutcomeUnknown) and transient(first) and second == ["ok"]

        async def being_cancelled() -> list:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:  # this task is being cancelled: that goes on
                return settle([asyncio.CancelledError()])
            return []

        task = asyncio.create_task(being_cancelled())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
