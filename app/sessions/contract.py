"""What the API needs from the sessions layer: the one seam between them.

Every transport (HTTP, the WebSocket stream, ``/v2`` over HTTP and gRPC) reaches sessions through
:class:`Sessions` and nothing else. Two classes implement it:
:class:`app.sessions.service.SessionService`, in the process that runs the engine, and
:class:`app.sessions.remote.RemoteSessions`, in an API worker process (``--workers N``), which
sends each call to the engine process's service; its methods are made from this contract's names,
not written twice. ``tests/sessions/test_contract.py`` checks that both implement every method
here with the same signature.

**Where a chunk enters the sessions layer: :meth:`Sessions.submit`** (and
:meth:`Sessions.sequence` for a request of an Open Inference Protocol sequence, which may also
start or end its session). A chunk takes its place in its session's line the moment the call
returns, before anything is awaited: a transport that places chunks one after another keeps their
order without awaiting each.

Errors are :class:`app.errors.ServiceError` subclasses, each knowing its HTTP status; the API maps
them at one boundary (``app/api/errors.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Protocol, overload, runtime_checkable

import numpy as np

from app.engine import ChunkResult, Reply
from app.engine.tally import Tally
from app.model.spec import ModelSpec
from app.store.records import SessionRecord


@runtime_checkable
class Sessions(Protocol):
    """The sessions layer as the API sees it. ``scope``: the caller's tenant (None: an admin, who
    sees every session); a session of another tenant is "not found"."""

    capacity: int
    """Sessions the state table holds (the memory backend's hard limit; Redis's hot cache)."""
    backend: str
    """``"memory"`` or ``"redis"``."""
    max_features: int
    """The most input features of any version served at start (the limits on a chunk's size)."""

    # -- chunks ------------------------------------------------------------------------------

    @overload
    def submit(
        self,
        session_id: str,
        inputs: np.ndarray,
        seq: int | None = None,
        scope: str | None = None,
        transport: str = "http",
        reply: None = None,
    ) -> asyncio.Future[ChunkResult]: ...

    @overload
    def submit(
        self,
        session_id: str,
        inputs: np.ndarray,
        seq: int | None = None,
        scope: str | None = None,
        transport: str = "http",
        *,
        reply: Reply,
    ) -> Reply: ...

    def submit(
        self,
        session_id: str,
        inputs: np.ndarray,
        seq: int | None = None,
        scope: str | None = None,
        transport: str = "http",
        reply: Reply | None = None,
    ) -> asyncio.Future[ChunkResult] | Reply:
        """Apply one chunk ``inputs`` [T, F] (float32) to the session's state, after its earlier
        work and before its later work. The chunk is in its session's line when this returns; its
        answer is the future returned, or, given ``reply``, settles it (the stream's way: no
        future per chunk). ``seq``: the chunk's number, for retries (a repeated seq is answered
        what it was, and nothing is applied) and order (a gap is refused). ``transport`` labels
        the metrics. Raises at once only when nothing can be queued (the model warming up, the
        queue full)."""
        ...

    def sequence(
        self,
        session_id: str,
        inputs: np.ndarray,
        *,
        tenant: str | None,
        scope: str | None,
        start: bool,
        end: bool,
        seq: int | None = None,
        model: str | None = None,
        version: int | None = None,
        transport: str = "v2",
    ) -> Awaitable[ChunkResult]:
        """One request of an Open Inference Protocol sequence: ``start`` creates the session
        (``model``'s ``version``, owned by ``tenant``) or resets it if it is live; the chunk is
        applied; ``end`` deletes the session after it. All three are in the session's line when
        this returns, so a sequence's requests apply in the order they were made. A refused chunk
        ends nothing; a retried final request (same ``seq``) is answered what the first was."""
        ...

    # -- sessions ----------------------------------------------------------------------------

    async def create(
        self,
        session_id: str | None = None,
        ttl_s: float | None = None,
        tenant: str | None = None,
        model: str | None = None,
        version: int | None = None,
    ) -> SessionRecord:
        """A new session (a random id unless ``session_id`` is given), owned by ``tenant`` (None:
        by no tenant, for admins only), idle ``ttl_s`` at most (None: the server's default; 0:
        forever), running ``model``'s ``version`` (default: the only model's newest ready one)."""
        ...

    async def get(self, session_id: str, scope: str | None = None) -> SessionRecord:
        """The session's record (seq, steps, version, lifetime)."""
        ...

    async def delete(self, session_id: str, scope: str | None = None) -> None:
        """Delete the session, after its earlier work; its slot is free at once."""
        ...

    async def reset(self, session_id: str, scope: str | None = None) -> SessionRecord:
        """Zero the session's state (as Keras's ``reset_states()``), after its earlier work; seq
        and steps go on counting."""
        ...

    async def page(self, limit: int, cursor: str | None) -> tuple[list[SessionRecord], str | None]:
        """Up to ``limit`` sessions after ``cursor`` (None: from the start), and the cursor of the
        next page (None: this was the last)."""
        ...

    async def last_outputs(
        self, session_id: str, scope: str | None = None
    ) -> tuple[SessionRecord, np.ndarray | None]:
        """The session, and its last chunk's outputs (what a retry of it would be answered; None
        before the first chunk), read without taking a turn in its line."""
        ...

    async def state(
        self, session_id: str, scope: str | None = None
    ) -> tuple[SessionRecord, ModelSpec, list[np.ndarray]]:
        """The session, the version it runs, and its row of each state tensor, in model order, all
        read in one turn of its line."""
        ...

    async def set_state(
        self,
        session_id: str,
        values: list[np.ndarray],
        scope: str | None = None,
        model: str | None = None,
    ) -> SessionRecord:
        """Replace the session's state: one row per state tensor, in model order, checked by the
        caller against version ``model`` (a ``name/version`` key; refused if the session has moved
        to another version since)."""
        ...

    async def session_model(self, session_id: str, scope: str | None = None) -> ModelSpec:
        """The version the session runs (503 while it is still loading on this replica)."""
        ...

    # -- the service as a whole --------------------------------------------------------------

    async def count(self) -> int:
        """Sessions in the store (on Redis: every replica's, approximately)."""
        ...

    async def unready(self) -> str | None:
        """Why this replica cannot serve now (the model warming up, the store not answering), or
        None when it can."""
        ...

    async def overview(self) -> dict[str, Any]:
        """Backend, slots, sessions, queue and the last minute's figures, for the console."""
        ...

    # -- models ------------------------------------------------------------------------------

    async def models(self, name: str | None = None) -> list[dict[str, Any]]:
        """Each model (or ``name`` only) with its versions and their states, as ``GET /v1/models``
        lists them."""
        ...

    async def default_model(self) -> ModelSpec:
        """The version a session created without naming one runs."""
        ...

    async def model_spec(self, name: str, version: int | None = None) -> ModelSpec:
        """A served version of ``name`` (default: the newest ready one)."""
        ...

    async def model_stats(
        self, name: str | None = None, version: int | None = None
    ) -> list[tuple[ModelSpec, Tally]]:
        """Each version served (of ``name``, or that version) and what this engine did with it."""
        ...

    async def load_model(self, name: str) -> dict[str, Any]:
        """Load ``name``'s versions from the repository now (the repository API's load)."""
        ...

    async def unload_model(self, name: str) -> dict[str, Any]:
        """Stop serving every version of ``name`` (its sessions drain first); permanent."""
        ...

    async def retire(self, name: str, version: int, mode: str) -> dict[str, Any]:
        """Retire a version: ``mode`` "drain" (its sessions finish on it), "carry" (they move to
        the newest ready version with their state) or "reset" (they move there, state zeroed)."""
        ...


#: The contract's methods, by name: what a worker may call in the engine process.
CALLS = frozenset(
    name for name, member in vars(Sessions).items() if callable(member) and not name.startswith("_")
)
