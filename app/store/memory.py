"""The embedded store: session records and the state table in this process's memory.

All methods run on the event loop thread, so none needs a lock; the engine only hands copies of rows
to the TensorFlow thread and writes results back here, on the loop.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

import numpy as np

from app.errors import Conflict, Unavailable
from app.store.records import SessionRecord
from app.store.slots import SlotTable


class MemoryStore:
    kind = "memory"

    def __init__(self, capacity: int, state_units: list[int]):
        self.slots = SlotTable(capacity, state_units)
        self._records: dict[str, SessionRecord] = {}
        # (expiry time, id), one entry per session with a TTL. Use moves a session's expiry later
        # without touching the heap (a push per chunk would grow it without bound); an entry that
        # comes up early is pushed back with the session's current expiry.
        self._expiries: list[tuple[float, str]] = []

    @property
    def capacity(self) -> int:
        return self.slots.capacity

    def __len__(self) -> int:
        return len(self._records)

    async def ping(self) -> bool:
        return True

    def create(self, session_id: str, ttl_s: float, now: float) -> SessionRecord:
        if session_id in self._records:
            raise Conflict(f"session {session_id!r} already exists")
        slot = self.slots.allocate()
        if slot is None:
            raise Unavailable(
                f"all {self.capacity} session slots are in use; delete an idle session or retry later",
                retry_after=5,
            )
        record = SessionRecord(session_id, slot, created_at=now, last_active_at=now, ttl_s=ttl_s)
        self._records[session_id] = record
        self.watch(record)
        return record

    def get(self, session_id: str) -> SessionRecord | None:
        return self._records.get(session_id)

    def delete(self, session_id: str) -> bool:
        record = self._records.pop(session_id, None)
        if record is None:
            return False
        self.slots.release(record.slot)
        return True

    def reset(self, record: SessionRecord, now: float) -> None:
        self.slots.zero(record.slot)
        record.steps = 0
        self.touch(record, now)

    def touch(self, record: SessionRecord, now: float) -> None:
        record.last_active_at = now

    def is_current(self, record: SessionRecord) -> bool:
        """Whether ``record`` still owns its slot (not deleted or expired since it was read)."""
        return self._records.get(record.session_id) is record

    def state(self, record: SessionRecord) -> list[np.ndarray]:
        return self.slots.row(record.slot)

    def set_state(self, record: SessionRecord, values: list[np.ndarray]) -> None:
        self.slots.set_row(record.slot, values)

    def page(self, limit: int, after: str | None) -> tuple[list[SessionRecord], str | None]:
        """Sessions in id order, ``limit`` at most, starting after id ``after``."""
        ids = sorted(i for i in self._records if after is None or i > after)
        chosen = ids[:limit]
        following = chosen[-1] if len(ids) > limit else None
        return [self._records[i] for i in chosen], following

    def due(self, now: float) -> Iterator[SessionRecord]:
        """Sessions whose TTL has run out, each once (the caller decides whether to expire them)."""
        while self._expiries and self._expiries[0][0] <= now:
            _, session_id = heapq.heappop(self._expiries)
            record = self._records.get(session_id)
            if record is None:
                continue
            if record.expired(now):
                yield record
            else:
                self.watch(record)

    def watch(self, record: SessionRecord) -> None:
        expires = record.expires_at
        if expires is not None:
            heapq.heappush(self._expiries, (expires, record.session_id))
