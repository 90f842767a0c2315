"""One Redis or a Redis Cluster behind the same store.

``redis+cluster://host:port`` (or ``rediss+cluster://``) picks :class:`RedisCluster`; any node is
enough to find the rest. Everything the store does per session works unchanged in a cluster, since
a session's keys share one hash slot (``<prefix>:{<id>}``) and each script touches only that key.
Two things differ, and live here: SCAN walks one node at a time, so a listing cursor must say which
node it is on; and readiness needs every master, not just one.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

SCHEMES = {"redis+cluster://": "redis://", "rediss+cluster://": "rediss://"}
SLOTS = 16384

Client = aioredis.Redis | RedisCluster


def is_cluster(url: str) -> bool:
    return url.startswith(tuple(SCHEMES))


def connect(url: str, socket_timeout: float, connect_timeout: float) -> Client:
    """A client that never sends a command twice by itself: a script resent after a timeout could
    apply twice, so retrying is the engine's business, after reading the session again. Redirects
    (MOVED, ASK, TRYAGAIN) are still followed: a redirected command did not run."""
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "health_check_interval": 10,
    }
    if not is_cluster(url):
        return aioredis.Redis.from_url(
            url, retry_on_timeout=False, retry=AsyncRetry(NoBackoff(), 0), **options
        )
    for scheme, plain in SCHEMES.items():
        if url.startswith(scheme):
            url = plain + url[len(scheme) :]
    # A cluster has only database 0: a path (/0) is dropped rather than refused.
    url = urlunsplit(urlsplit(url)._replace(path=""))
    # Since redis-py 6 ``retry`` alone sets how often the cluster client resends a command or a
    # pipeline; the deprecated ``cluster_error_retry_attempts`` (3 by default) is then ignored, but
    # is set to 0 as well, so that no reading of the options can resend.
    return RedisCluster.from_url(
        url, retry=AsyncRetry(NoBackoff(), 0), cluster_error_retry_attempts=0, **options
    )


class Keyspace:
    """Where one Redis and a cluster differ: the nodes a listing walks, pipelines (one per master)
    and readiness. A node is named by the lowest slot it serves, so a listing cursor still points at
    the right slots after a failover, where a replica takes them over under another address. One
    Redis is one node, named 0."""

    def __init__(self, client: Client):
        self.client = client

    async def _slot_table(self) -> None:
        # redis-py fills its slot table on first use (and again after an error); these calls read
        # it before sending anything. initialize() does nothing once the table is filled.
        if isinstance(self.client, RedisCluster):
            await self.client.initialize()

    async def nodes(self) -> list[int]:
        if not isinstance(self.client, RedisCluster):
            return [0]
        await self._slot_table()
        # One CLUSTER SLOTS: each slot range names its master; a master's name is its lowest slot.
        ranges = await self.client.cluster_slots(target_nodes=RedisCluster.RANDOM)
        lowest: dict[Any, int] = {}
        for (start, _end), holders in ranges.items():
            primary = tuple(holders["primary"])
            lowest[primary] = min(int(start), lowest.get(primary, SLOTS))
        return sorted(lowest.values())

    async def scan(self, node: int, cursor: int, match: str, count: int) -> tuple[int, list[bytes]]:
        if not isinstance(self.client, RedisCluster):
            return await self.client.scan(cursor, match=match, count=count)
        target = self.client.nodes_manager.get_node_from_slot(node)
        cursors, keys = await self.client.scan(
            cursor, match=match, count=count, target_nodes=target
        )
        return cursors[target.name], keys

    async def pipeline(self, commands: list[tuple[Any, ...]], keys: list[str]) -> list[Any]:
        """Send ``commands`` (``keys[i]`` is the i-th one's key) in one round trip per master, all
        masters at once. Each result is the reply or the error it met. In a cluster, a master that
        fails fails only its own commands, so one master's failover does not fail every session of
        a batch; with one Redis, a lost connection raises, as a pipeline does."""
        if not isinstance(self.client, RedisCluster):
            return await self._send(commands)  # one round trip, nothing to split or gather
        groups = await self._groups(keys)
        answers = settle(
            await asyncio.gather(
                *(self._send([commands[i] for i in group]) for group in groups),
                return_exceptions=True,
            )
        )
        if len(groups) == 1 and isinstance(answers[0], Exception):
            raise answers[0]
        results: list[Any] = [None] * len(commands)
        for group, answer in zip(groups, answers):
            for position, index in enumerate(group):
                results[index] = answer if isinstance(answer, Exception) else answer[position]
        return results

    async def _groups(self, keys: list[str]) -> list[list[int]]:
        await self._slot_table()
        groups: dict[str, list[int]] = {}
        for index, key in enumerate(keys):
            node = self.client.nodes_manager.get_node_from_slot(self.client.keyslot(key))
            groups.setdefault(node.name, []).append(index)
        return list(groups.values())

    async def _send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return await pipe.execute(raise_on_error=False)

    async def ping(self) -> bool:
        """One Redis answers; or every master of the cluster answers and says the cluster is ok
        (a master down with no replica promoted yet leaves slots unserved: not ready)."""
        if not isinstance(self.client, RedisCluster):
            return bool(await self.client.ping())
        await self._slot_table()
        primaries = self.client.get_primaries()
        infos = await asyncio.gather(
            *(self.client.cluster_info(target_nodes=node) for node in primaries)
        )
        return bool(primaries) and all(info.get("cluster_state") == "ok" for info in infos)


class OutcomeUnknown(RedisConnectionError):
    """A master's pipeline was cancelled under a task that was not: its commands may or may not
    have run. A connection error, so that it answers 503 (retry after reading the session again),
    never "gone"."""


def settle(answers: list[Any]) -> list[Any]:
    """gather(return_exceptions=True)'s answers, where a cancelled sub-task gives CancelledError,
    a BaseException that callers testing for Exception would take for a reply. If this task itself
    is being cancelled, the cancellation goes on; otherwise each such answer becomes
    :class:`OutcomeUnknown`."""
    settled = []
    for answer in answers:
        if isinstance(answer, BaseException) and not isinstance(answer, Exception):
            task = asyncio.current_task()
            if not isinstance(answer, asyncio.CancelledError) or (
                task is not None and task.cancelling()
            ):
                raise answer
            answer = OutcomeUnknown("a pipeline to Redis was cancelled; whether it ran is unknown")
        settled.append(answer)
    return settled


async def reachable(keyspace: Keyspace) -> bool:
    try:
        return await keyspace.ping()
    except (RedisError, RedisClusterException, OSError):
        return False
