"""The embedded store: session records and the state table in this process's memory.

All methods run on the event loop thread and none awaits anything, so each is atomic without a
lock; the engine hands copies of rows to the TensorFlow thread and commits results here, on the loop.
Each model version has its own table of ``capacity`` rows, and ``capacity`` bounds the sessions of
all versions together.
"""

from __future__ import annotations

import bisect
import heapq
from collections import Counter

import numpy as np

from app import metrics
from app.errors import Conflict, ServiceError, Unavailable
from app.store.base import Checkout, Commit, Outcome, tenant_full
from app.store.records import LastChunk, SessionRecord
from app.store.slots import SlotTable


class MemoryStore:
    kind = "memory"

    def __init__(self, capacity: int, tenant_quota: int = 0):
        metrics.use_backend(self.kind)
        self._capacity = capacity
        self.tables: dict[str, SlotTable] = {}
        self.tenant_quota = tenant_quota
        self._retired: dict[str, str] = {}
        self._per_tenant: Counter[str] = Counter()
        self._per_model: Counter[str] = Counter()
        self._records: dict[str, SessionRecord] = {}
        self._slot_of: dict[str, int] = {}
        # (expiry time, id) for sessions with a TTL. Use moves a session's expiry later without
        # touching the heap (a push per chunk would grow it without bound); an entry that comes up
        # early is pushed back with the session's current expiry. ``_due`` names each session's
        # one live entry; entries left by deleted or re-created sessions are dropped when they come
        # up, or sooner, when they outnumber the live ones (``_compact``): a TTL may be ten years,
        # and churn must not keep an entry per session ever made.
        self._expiries: list[tuple[float, str]] = []
        self._due: dict[str, float] = {}
        # Every id in order, for listing: sorted once, at the first listing (not while a snapshot
        # loads), then kept in order by each create and delete (a bisect and a memmove, where a
        # sort of 100,000 ids per page would block the event loop while sessions come and go).
        self._sorted_ids: list[str] | None = None

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def hot(self) -> int:
        return len(self._records)

    def add_model(self, key: str, fingerprint: str, state_units: list[int]) -> None:
        if key not in self.tables:
            self.tables[key] = SlotTable(self._capacity, state_units)

    def drop_model(self, key: str) -> None:
        if self._per_model[key]:
            raise ServiceError(f"model version {key} still has {self._per_model[key]} sessions")
        self.tables.pop(key, None)

    async def count_by_model(self, fresh: bool = False) -> dict[str, int]:
        return {key: count for key, count in self._per_model.items() if count}

    async def sessions_of(self, key: str) -> list[str]:
        return [sid for sid, record in self._records.items() if record.model_key == key]

    async def mark_retired(self, key: str, mode: str) -> None:
        self._retired[key] = mode

    async def retired(self) -> dict[str, str]:
        return dict(self._retired)

    async def ping(self) -> bool:
        return True

    async def count(self) -> int:
        return len(self._records)

    def __len__(self) -> int:
        return len(self._records)

    async def close(self) -> None:
        pass

    # -- sessions -----------------------------------------------------------------------------

    async def create(
        self,
        session_id: str,
        ttl_s: float,
        now: float,
        tenant: str | None = None,
        *,
        model_key: str,
    ) -> SessionRecord:
        existing = self._records.get(session_id)
        if existing is not None and existing.expired(now):
            await self.delete(session_id)  # gone to its clients already; the sweep had not come
        elif existing is not None:
            raise Conflict(f"session {session_id!r} already exists")
        if (
            tenant is not None
            and self.tenant_quota
            and self._per_tenant[tenant] >= self.tenant_quota
        ):
            raise tenant_full(tenant, self.tenant_quota)
        slot = self.tables[model_key].allocate() if len(self._records) < self._capacity else None
        if slot is None:
            raise Unavailable(
                f"all {self.capacity} session slots are in use; delete an idle session or retry later",
                retry_after=5,
            )
        record = SessionRecord(
            session_id,
            created_at=now,
            last_active_at=now,
            ttl_s=ttl_s,
            tenant=tenant,
            model_key=model_key,
        )
        self.insert(record, slot)
        return record

    def insert(self, record: SessionRecord, slot: int) -> None:
        """Add ``record``, its state in ``slot`` of its version's table (a snapshot's restore)."""
        self._per_model[record.model_key] += 1
        if self._sorted_ids is not None and record.session_id not in self._records:
            bisect.insort(self._sorted_ids, record.session_id)
        self._records[record.session_id] = record
        if record.tenant is not None:
            self._per_tenant[record.tenant] += 1
        self._slot_of[record.session_id] = slot
        self._watch(record)

    async def get(self, session_id: str, last: bool = False) -> SessionRecord | None:
        return self._records.get(session_id)

    async def delete(self, session_id: str) -> bool:
        record = self._records.pop(session_id, None)
        if record is None:
            return False
        if self._sorted_ids is not None:
            del self._sorted_ids[bisect.bisect_left(self._sorted_ids, session_id)]
        if record.tenant is not None:
            self._per_tenant[record.tenant] -= 1
            if not self._per_tenant[record.tenant]:
                del self._per_tenant[record.tenant]
        self.tables[record.model_key].release(self._slot_of.pop(session_id))
        self._per_model[record.model_key] -= 1
        if self._due.pop(session_id, None) is not None:
            self._compact()
        return True

    async def reset(self, session_id: str, now: float, *, model_key: str) -> SessionRecord | None:
        record = self._on(session_id, model_key)
        if record is not None:
            self.tables[model_key].zero(self._slot_of[session_id])
            record.steps = 0
            self._touch(record, now)
        return record

    async def read_state(self, session_id: str) -> tuple[SessionRecord, list[np.ndarray]] | None:
        record = self._records.get(session_id)
        if record is None:
            return None
        return record, self.tables[record.model_key].row(self._slot_of[session_id])

    async def write_state(
        self, session_id: str, values: list[np.ndarray], now: float, *, model_key: str
    ) -> SessionRecord | None:
        record = self._on(session_id, model_key)
        if record is not None:
            self.tables[model_key].set_row(self._slot_of[session_id], values)
            self._touch(record, now)
        return record

    def _on(self, session_id: str, model_key: str) -> SessionRecord | None:
        record = self._records.get(session_id)
        if record is not None and record.model_key != model_key:
            raise Conflict(
                f"session {session_id!r} moved to model version {record.model_key} meanwhile; retry"
            )
        return record

    async def migrate(
        self, session_id: str, source: str, target: str, keep_state: bool
    ) -> bool | None:
        record = self._records.get(session_id)
        if record is None:
            return None
        if record.model_key != source:
            return record.model_key == target
        old, new = self.tables[source], self.tables[target]
        slot = new.allocate()  # never None: every table has a row for every session there is
        if keep_state:
            new.set_row(slot, old.row(self._slot_of[session_id]))
        else:
            record.steps = 0
        old.release(self._slot_of[session_id])
        self._slot_of[session_id] = slot
        record.model_key = target
        self._per_model[source] -= 1
        self._per_model[target] += 1
        return True

    async def page(self, limit: int, cursor: str | None) -> tuple[list[SessionRecord], str | None]:
        """Sessions in id order, ``limit`` at most, after id ``cursor``."""
        if self._sorted_ids is None:
            self._sorted_ids = sorted(self._records)
        ids = self._sorted_ids
        start = 0 if cursor is None else bisect.bisect_right(ids, cursor)
        chosen = ids[start : start + limit]
        following = chosen[-1] if len(ids) > start + limit else None
        return [self._records[i] for i in chosen], following

    def items(self) -> list[tuple[SessionRecord, int]]:
        """Every session with its slot (for snapshots)."""
        return [(record, self._slot_of[sid]) for sid, record in self._records.items()]

    # -- the engine's batch -------------------------------------------------------------------

    async def checkout(
        self, requests: list[tuple[str, int | None]], pinned: set[str]
    ) -> list[Checkout | None]:
        found = []
        for session_id, _ in requests:
            record = self._records.get(session_id)
            found.append(
                None
                if record is None
                else Checkout(record, self._slot_of[session_id], "", record.model_key)
            )
        return found

    async def commit(self, commits: list[Commit]) -> list[Outcome]:
        outcomes = []
        for commit in commits:
            record = commit.checkout.record
            # Deleted (or expired, and the slot maybe handed on) while the chunk ran.
            if self._records.get(record.session_id) is not record:
                outcomes.append(Outcome.GONE)
                continue
            if (
                record.model_key != commit.checkout.model_key
            ):  # moved to another version: run it there
                outcomes.append(Outcome.CONFLICT)
                continue
            self.tables[record.model_key].set_row(commit.checkout.slot, commit.states)
            record.seq, record.steps = commit.seq, commit.steps
            record.last_chunk = LastChunk(commit.steps, commit.outputs)
            self._touch(record, commit.now)
            outcomes.append(Outcome.APPLIED)
        return outcomes

    # -- expiry -------------------------------------------------------------------------------

    async def expire(self, now: float, busy: set[str]) -> int:
        expired = 0
        while self._expiries and self._expiries[0][0] <= now:
            when, session_id = heapq.heappop(self._expiries)
            record = self._records.get(session_id)
            if record is None or self._due.get(session_id) != when:
                continue  # an entry of a deleted session, or one pushed again since
            if record.expired(now) and session_id not in busy:
                await self.delete(session_id)
                expired += 1
            else:
                self._watch(record, later_than=now)
        return expired

    def _touch(self, record: SessionRecord, now: float) -> None:
        record.last_active_at = now

    def _watch(self, record: SessionRecord, later_than: float = 0.0) -> None:
        expires = record.expires_at
        if expires is not None:
            # A busy session past its time is looked at again in a second, not in a hot loop.
            when = max(expires, later_than + 1.0)
            self._due[record.session_id] = when
            heapq.heappush(self._expiries, (when, record.session_id))
            self._compact()

    def _compact(self) -> None:
        """Rebuild the heap from the live entries once the dead ones are as many: O(n) now and
        then, O(1) per change on average, and the heap never holds more than twice what lives."""
        if len(self._expiries) > 2 * len(self._due) + 64:
            self._expiries = [(when, session_id) for session_id, when in self._due.items()]
            heapq.heapify(self._expiries)
