"""A count that is costly to take (a SCAN of every key, on every master), taken at most once every
``max_age_s`` and by one caller at a time: the console polls it every 2 s, and every listing page
shows it, so each would otherwise walk the whole keyspace."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class CachedCount:
    def __init__(self, take: Callable[[], Awaitable[int]], max_age_s: float):
        self._take = take
        self.max_age_s = max_age_s
        self._value: int | None = None
        self._taken_at = 0.0
        self._taking: asyncio.Task[int] | None = None

    async def get(self) -> int:
        if self._value is not None and time.monotonic() - self._taken_at < self.max_age_s:
            return self._value
        if self._taking is None:
            self._taking = asyncio.create_task(self._refresh())
        # Shielded: a caller that gives up (a client gone) does not cancel the count for the rest.
        return await asyncio.shield(self._taking)

    def adjust(self, delta: int) -> None:
        """This process's own creates and deletes show at once; other replicas' and Redis's
        expiries show at the next refresh."""
        if self._value is not None:
            self._value = max(0, self._value + delta)

    async def _refresh(self) -> int:
        try:
            value = await self._take()
            self._value, self._taken_at = value, time.monotonic()
            return value
        finally:
            self._taking = None
