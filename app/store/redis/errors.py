"""Which Redis failures are worth a retry: those become 503 with Retry-After, never a 500."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app import metrics
from app.errors import Unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

# Redis cannot serve now, but may soon: down, too slow, loading its data, a read-only replica,
# out of memory, busy with a script, a cluster failing over or moving slots (redirects that did not
# settle: MOVED and ASK are AskError, CLUSTERDOWN and "TTL exhausted" are ClusterError; a slot no
# master serves; none of these ran the command). Each is a 503 the client may retry.
TRANSIENT = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ReadOnlyError,
    OutOfMemoryError,
    OSError,
    ClusterError,
    AskError,
    TryAgainError,
    SlotNotCoveredError,
)
TRANSIENT_REPLIES = ("BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "LOADING")
# RedisClusterException is also what redis-py raises for misuse ("Too many targets", "all keys must
# map to the same key slot"): only its words for no node reachable, or slots not all served, while
# it refreshes the cluster's layout say "try again".
CLUSTER_LAYOUT_TROUBLE = ("cannot be connected", "not covered", "could not agree")


def transient(exc: BaseException) -> bool:
    if isinstance(exc, TRANSIENT):
        return True
    if isinstance(exc, RedisClusterException):
        return any(words in str(exc) for words in CLUSTER_LAYOUT_TROUBLE) or isinstance(
            exc.__cause__, TRANSIENT
        )
    if isinstance(exc, ResponseError):  # a reply redis-py has no class for (BUSY, LOADING as text)
        return str(exc).startswith(TRANSIENT_REPLIES)
    return False


def unavailable(exc: BaseException) -> Unavailable:
    metrics.REDIS_ERRORS.labels(type(exc).__name__).inc()
    log.warning("Redis cannot serve: %s: %s", type(exc).__name__, exc)
    return Unavailable(
        f"the state store (Redis) cannot serve now ({type(exc).__name__}); retry shortly"
    )


def unreachable(operation: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Redis down, restarting or too slow is a 503 the client may retry, never a 500."""

    @functools.wraps(operation)
    async def guarded(self: Any, *args: Any, **kwargs: Any) -> T:
        try:
            return await operation(self, *args, **kwargs)
        except Exception as exc:
            if transient(exc):
                raise unavailable(exc) from None
            raise

    return guarded
