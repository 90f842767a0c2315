"""What every state store offers the layers above it.

The engine runs a batch in three steps: ``checkout`` the batch's sessions (fresh records, state rows
in the slot table), compute, ``commit`` the new states. A commit is atomic per session and applies
only if nobody changed the session since its checkout; otherwise the engine checks out again and
recomputes. The memory store is the only writer of its sessions, so its commits never conflict; the
Redis store is shared by replicas, and its commits compare versions.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from app.errors import ServiceError, TooManyRequests
from app.store.records import SessionRecord
from app.store.slots import SlotTable


@dataclass(eq=False)
class Checkout:
    """A session ready to run: its record as the store has it now, its state in ``slot`` of its
    model version's table (None: this replica has no table for that version, or the session's
    fingerprint is not the table's, so its state was not placed and it must not run)."""

    record: SessionRecord
    slot: int | None
    revision: str
    model_key: str | None = (
        None  # the version it ran on at checkout (its commit must find it there)
    )


@dataclass(eq=False)
class Commit:
    checkout: Checkout
    seq: int
    steps: int
    now: float
    outputs: bytes  # the chunk's outputs, float32: kept as the session's LastChunk
    states: list[np.ndarray]  # the session's new row of each state tensor


def tenant_full(tenant: str, quota: int) -> TooManyRequests:
    """A create refused by the tenant's session quota (``--max-sessions-per-tenant``), either backend."""
    return TooManyRequests(f"tenant {tenant!r} holds {quota} sessions, its limit; delete one first")


class Outcome(enum.Enum):
    APPLIED = "applied"
    CONFLICT = "conflict"  # someone else changed the session first: check out again, recompute
    GONE = "gone"  # deleted or expired meanwhile


class StateStore(Protocol):
    """Sessions of every model version served; each version's state rows in a table of its own
    (``tables``, by ``name/version``: versions differ in their state's shape)."""

    kind: str
    """``"memory"`` or ``"redis"``."""
    tables: dict[str, SlotTable]
    """Each served version's state rows, by ``name/version``: the engine gathers a batch's rows
    from them and the store writes the new rows back at commit."""

    @property
    def capacity(self) -> int:
        """Rows of each version's table."""
        ...

    @property
    def hot(self) -> int:
        """Sessions holding a row of a table now."""
        ...

    def add_model(self, key: str, fingerprint: str, state_units: list[int]) -> None:
        """Give version ``key`` a table; its sessions can run from now on."""
        ...

    def drop_model(self, key: str) -> None:
        """Take version ``key``'s table away (no session of this replica may hold a row of it)."""
        ...

    async def ping(self) -> bool:
        """Whether the store answers now (readiness)."""
        ...

    async def count(self) -> int:
        """Live sessions (on Redis: every replica's, a count up to a few seconds old)."""
        ...

    async def create(
        self,
        session_id: str,
        ttl_s: float,
        now: float,
        tenant: str | None = None,
        *,
        model_key: str,
    ) -> SessionRecord:
        """A new session of version ``model_key``, its state zeroed, owned by ``tenant``, idle
        ``ttl_s`` at most (0: forever). Conflict if the id is taken; 503 when no slot is free
        (memory), 429 beyond the tenant's quota."""
        ...

    async def get(self, session_id: str, last: bool = False) -> SessionRecord | None:
        """The session; with ``last``, its ``last_chunk`` filled too (None before its first)."""
        ...

    async def delete(self, session_id: str) -> bool:
        """Delete the session and free its slot; False if there was none."""
        ...

    # A reset or a state write names the version the caller checked the session runs: one that
    # has moved to another meanwhile is refused (Conflict), never given the wrong shape of state.

    async def reset(self, session_id: str, now: float, *, model_key: str) -> SessionRecord | None:
        """Zero the session's state and its steps (seq goes on); None if it is gone."""
        ...

    async def read_state(self, session_id: str) -> tuple[SessionRecord, list[np.ndarray]] | None:
        """The session and its row of each state tensor, in model order; None if it is gone."""
        ...

    async def write_state(
        self, session_id: str, values: list[np.ndarray], now: float, *, model_key: str
    ) -> SessionRecord | None:
        """Replace the session's row of each state tensor; None if it is gone."""
        ...

    async def migrate(
        self, session_id: str, source: str, target: str, keep_state: bool
    ) -> bool | None:
        """Move a session of version ``source`` to ``target``, with its state or zeroed (steps 0).
        True if moved (or found on ``target`` already: another replica moved it), False if it runs
        neither, None if it is gone."""
        ...

    async def count_by_model(self, fresh: bool = False) -> dict[str, int]:
        """Live sessions per version (on Redis: every replica's; up to a few seconds old, unless
        ``fresh``)."""
        ...

    async def sessions_of(self, key: str) -> list[str]:
        """The ids of version ``key``'s live sessions (on Redis: every replica's)."""
        ...

    async def mark_retired(self, key: str, mode: str) -> None:
        """Record that version ``key`` is retired (``mode``: what becomes of its sessions), for
        every replica to see."""
        ...

    async def retired(self) -> dict[str, str]:
        """Every retired version, with its mode."""
        ...

    async def page(self, limit: int, cursor: str | None) -> tuple[list[SessionRecord], str | None]:
        """Up to ``limit`` sessions after the session id ``cursor`` (None: from the start), and the
        id to continue after (None: this was the last page). Every session present throughout a
        listing is listed exactly once."""
        ...

    async def checkout(
        self, requests: list[tuple[str, int | None]], pinned: set[str]
    ) -> list[Checkout | ServiceError | None]:
        """Check out each (session id, requested seq); None for a session that does not exist,
        an error for one that cannot be run (another model's state, Redis failing for it).

        The record's ``last_chunk`` must be filled when the requested seq equals the session's
        ``seq`` (a replay). Sessions in ``pinned`` hold slots that must not be given up now.
        """
        ...

    async def commit(self, commits: list[Commit]) -> list[Outcome | ServiceError]:
        """Write each checked-out session's new state, seq, steps and last answer, atomically per
        session and only if it is still at the revision it was checked out at (else CONFLICT: the
        engine computes the chunk again); GONE if it was deleted or expired meanwhile."""
        ...

    async def expire(self, now: float, busy: set[str]) -> int:
        """Delete sessions idle past their TTL, except ``busy`` ones; how many were deleted."""
        ...

    async def close(self) -> None:
        """Release connections (Redis); the memory store has nothing to release."""
        ...
