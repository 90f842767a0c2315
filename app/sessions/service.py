"""Sessions: ids, lifetimes and the documents that describe them; chunks go on to the engine."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import math
import time
from collections import OrderedDict
from typing import Any

import numpy as np

from app.engine.core import ChunkResult, Engine
from app.engine.lines import Reply
from app.engine.tally import Tally
from app.errors import InvalidInput, SessionNotFound, TooManyRequests, Unavailable
from app.model.spec import ModelSpec
from app.sessions import periodic, rules
from app.sessions.contract import Sessions
from app.sessions.names import MAX_TTL_S, PATH_STEPS, SEQUENCE_PREFIX, SESSION_ID, new_session_id
from app.sessions.rules import last_answer, wrong_model
from app.sessions.versions import Versions
from app.stats import RollingStats
from app.store.records import SessionRecord

log = logging.getLogger(__name__)
# How long ended sequences' final answers are kept for retries (per process), and in how much
# memory at most (their outputs; the oldest go first).
ENDED_KEEP_S, ENDED_BYTES = 60.0, 64 * 2**20
ENTRY_BYTES = 512  # what an entry costs beside its outputs (its objects), about


class SessionService(Sessions):
    """The sessions layer in the process that runs the engine: the contract's methods (documented
    there, app.sessions.contract) over the engine, the store and the model versions. Routes never
    reach those themselves, so the service can live in another process (app.sessions.remote)."""

    def __init__(
        self,
        engine: Engine,
        versions: Versions,
        default_ttl_s: float,
        stats: RollingStats | None = None,
    ):
        self.engine = engine
        self.store = engine.store
        self.versions = versions
        engine.admit = rules.admission(versions)  # what a chunk meets in its turn
        self.default_ttl_s = default_ttl_s
        self.stats = stats or RollingStats()
        self._sweeper: asyncio.Task | None = None
        # The answers of sequences' final requests, for their retries: session id -> (tenant
        # scope, when it ended, the answer). Kept a while in this process, not in the store.
        self._ended: OrderedDict[str, tuple[str | None, float, ChunkResult]] = OrderedDict()
        self._ended_bytes = 0

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._sweeper = asyncio.create_task(
            periodic.every(1.0, self.sweep, "expiring idle sessions failed"), name="session-sweeper"
        )
        self.stats.start()

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        await self.versions.stop()
        await self.stats.stop()

    # -- the service as a whole ---------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self.store.capacity

    @property
    def backend(self) -> str:
        return self.store.kind

    async def unready(self) -> str | None:
        """Why this replica cannot serve now (the model warming up, the store not answering), or
        None when it can."""
        if not self.engine.ready:
            return "the model is still compiling and warming up"
        if not await self.store.ping():
            return "the state store does not answer"
        return None

    async def count(self) -> int:
        """Sessions in the store (on Redis: every replica's, approximately; see CachedCount)."""
        return await self.store.count()

    async def overview(self) -> dict[str, Any]:
        """Backend, slots, sessions, queue and the last minute's figures, for the console."""
        try:
            total: int | None = await self.store.count()
        except Unavailable:
            total = None  # Redis is down: this replica's own figures are still worth showing
        return {
            "backend": self.backend,
            "sessions": {"capacity": self.capacity, "hot": self.store.hot, "total": total},
            "queue_depth": self.engine.depth,
            **self.stats.summary(),
        }

    # -- models -------------------------------------------------------------------------------

    @property
    def max_features(self) -> int:
        """The most input features of any version served (for the limits on a chunk's size)."""
        return self.versions.max_features

    async def models(self, name: str | None = None) -> list[dict[str, Any]]:
        return await self.versions.describe(name)

    async def default_model(self) -> ModelSpec:
        """The version a session created without naming one runs."""
        return self.versions.entries[self.versions.choose(None, None)].spec

    async def model_spec(self, name: str, version: int | None = None) -> ModelSpec:
        """A served version of ``name`` (default: the newest ready one)."""
        return self.versions.entries[self.versions.choose(name, version)].spec

    async def model_stats(
        self, name: str | None = None, version: int | None = None
    ) -> list[tuple[ModelSpec, Tally]]:
        """Each version served (of ``name``, or that version) and what this engine did with it."""
        tallies = self.engine.tallies
        return [
            (entry.spec, tallies.get(entry.key) or Tally())
            for entry in self.versions.serving(name, version)
        ]

    async def load_model(self, name: str) -> dict[str, Any]:
        return await self.versions.load(name)

    async def unload_model(self, name: str) -> dict[str, Any]:
        return await self.versions.unload(name)

    async def retire(self, name: str, version: int, mode: str) -> dict[str, Any]:
        return await self.versions.retire(name, version, mode)

    async def session_model(self, session_id: str, scope: str | None = None) -> ModelSpec:
        """The spec of the version the session runs (503 while it loads here)."""
        return self.versions.spec_of(await self.get(session_id, scope))

    async def sweep(self) -> int:
        """Delete sessions idle past their TTL; a session with work in flight is not idle."""
        expired = await self.store.expire(time.time(), self.engine.busy_sessions)
        if expired:
            log.info("expired %d idle sessions", expired)
        return expired

    # -- sessions -----------------------------------------------------------------------------

    async def create(
        self,
        session_id: str | None = None,
        ttl_s: float | None = None,
        tenant: str | None = None,
        model: str | None = None,
        version: int | None = None,
    ) -> SessionRecord:
        """A new session, owned by ``tenant`` (None: by no tenant, for admins only), running
        ``model``'s ``version`` (default: the only model's, and its newest ready version)."""
        if session_id is None:
            session_id = new_session_id()
        elif not SESSION_ID.fullmatch(session_id):
            raise InvalidInput(
                "session_id must be 1 to 128 characters from A-Z a-z 0-9 . _ : -",
                errors=[{"loc": ["body", "session_id"], "msg": "bad session id"}],
            )
        elif session_id in PATH_STEPS:
            raise InvalidInput(
                f"session_id {session_id!r} is a URL path step (clients collapse it): choose another",
                errors=[{"loc": ["body", "session_id"], "msg": "bad session id"}],
            )
        elif session_id.startswith(SEQUENCE_PREFIX):
            raise InvalidInput(
                f"session ids beginning {SEQUENCE_PREFIX!r} are the Open Inference Protocol's "
                "sequences (start one with sequence_start): choose another",
                errors=[{"loc": ["body", "session_id"], "msg": "bad session id"}],
            )
        if ttl_s is None:
            ttl_s = self.default_ttl_s
        elif not (math.isfinite(ttl_s) and 0 <= ttl_s <= MAX_TTL_S):
            raise InvalidInput(
                f"ttl_s must be a number of seconds from 0 (never expire) to {MAX_TTL_S:.0f}",
                errors=[{"loc": ["body", "ttl_s"], "msg": "bad ttl"}],
            )
        key = self.versions.choose(model, version)
        try:
            return await self.store.create(
                session_id, float(ttl_s), time.time(), tenant, model_key=key
            )
        except (Unavailable, TooManyRequests):
            if not await self.sweep():  # expired sessions may still hold slots: free them, retry
                raise
            return await self.store.create(
                session_id, float(ttl_s), time.time(), tenant, model_key=key
            )

    async def get(self, session_id: str, scope: str | None = None) -> SessionRecord:
        """The session, if it exists for a caller of tenant ``scope`` (None: any caller)."""
        return self._visible(session_id, await self.store.get(session_id), scope)

    def _visible(
        self, session_id: str, record: SessionRecord | None, scope: str | None
    ) -> SessionRecord:
        # The store removes an expired session in its own time (the sweep, or Redis's own expiry),
        # never on a read that could race another replica.
        if record is None or not record.visible_to(scope, time.time()):
            raise SessionNotFound(session_id)
        return record

    # Each change below reaches engine.exclusive before it awaits anything, so it takes its place
    # in the session's line in the order it arrived (a WebSocket's reset between two chunks stays
    # between them); what it checks, it checks inside its turn.

    async def delete(self, session_id: str, scope: str | None = None) -> None:
        async def delete() -> None:
            await self.get(session_id, scope)
            if not await self.store.delete(session_id):
                raise SessionNotFound(session_id)

        await self.engine.exclusive(session_id, delete)

    async def reset(self, session_id: str, scope: str | None = None) -> SessionRecord:
        async def reset() -> SessionRecord:
            key = self.versions.spec_of(await self.get(session_id, scope)).key
            record = await self.store.reset(session_id, time.time(), model_key=key)
            if record is None:
                raise SessionNotFound(session_id)
            return record

        return await self.engine.exclusive(session_id, reset)

    async def page(self, limit: int, cursor: str | None) -> tuple[list[SessionRecord], str | None]:
        after = None
        if cursor:
            try:
                padded = cursor + "=" * (-len(cursor) % 4)
                after = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                raise InvalidInput("cursor is not one this server handed out") from None
        records, following = await self.store.page(limit, after)
        next_cursor = (
            base64.urlsafe_b64encode(following.encode()).decode().rstrip("=") if following else None
        )
        return records, next_cursor

    async def last_outputs(
        self, session_id: str, scope: str | None = None
    ) -> tuple[SessionRecord, np.ndarray | None]:
        # Read from the answer kept for replays, so watching a session costs its chunks nothing.
        # After a reset the kept answer still answers a retry of the last chunk, so it is shown.
        record = self._visible(session_id, await self.store.get(session_id, last=True), scope)
        if not record.last_chunk:
            return record, None
        return record, last_answer(record, self.versions.spec_of(record)).outputs

    # -- chunks and state ---------------------------------------------------------------------

    def submit(
        self,
        session_id: str,
        inputs: np.ndarray,
        seq: int | None = None,
        scope: str | None = None,
        transport: str = "http",
        reply: Reply | None = None,
    ) -> asyncio.Future[ChunkResult] | Reply:
        return self.engine.submit(session_id, inputs, seq, scope, transport, reply=reply)

    async def sequence(
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
    ) -> ChunkResult:
        """One request of a sequence (the Open Inference Protocol's): ``start`` creates the
        session (``model``'s ``version``) or resets it if it is live; the chunk is applied; ``end``
        deletes the session after it. All three take their places in the session's line before
        anything is awaited, so requests of one sequence apply in the order they arrived. A
        refused chunk ends nothing: the end is applied only after the chunk was."""
        begun = (
            self.engine.enqueue(
                session_id, lambda: self._begin(session_id, tenant, scope, model, version, seq)
            )
            if start
            else None
        )
        try:
            chunk = self.engine.submit(session_id, inputs, seq, scope, transport, model)
        except BaseException:
            if begun is not None:
                await asyncio.gather(begun, return_exceptions=True)
            raise
        ended = (
            self.engine.enqueue(session_id, lambda: self._end(session_id, scope, chunk))
            if end
            else None
        )
        try:
            if begun is not None:
                try:
                    await begun
                except BaseException:  # the chunk found no session: the reason is the start's
                    await asyncio.gather(chunk, return_exceptions=True)
                    raise
            try:
                return await chunk
            except SessionNotFound:
                if start or not end:
                    raise
                if (replay := self._final_answer(session_id, scope, seq)) is None:
                    raise
                return replay
        finally:
            if ended is not None:
                await asyncio.gather(ended, return_exceptions=True)

    async def _begin(
        self,
        session_id: str,
        tenant: str | None,
        scope: str | None,
        model: str | None,
        version: int | None,
        seq: int | None,
    ) -> SessionRecord:
        """Create the sequence's session, or reset it if it is live, unless this start carries a
        ``seq`` the session has applied already: then it is a retry, answered by the replay."""
        self._forget_end(session_id)  # a new sequence of this id: the last one's end is history
        record = await self.store.get(session_id)
        if record is None or not record.visible_to(scope, time.time()):
            if record is not None:  # expired: gone to its clients already
                await self.store.delete(session_id)
            key = self.versions.choose(model, version)
            return await self.store.create(
                session_id, self.default_ttl_s, time.time(), tenant, model_key=key
            )
        spec = self.versions.spec_of(record)
        if model is not None and spec.name != model:
            raise wrong_model(session_id, spec, model)
        if seq is not None and record.seq >= seq:
            return record
        return await self.store.reset(session_id, time.time(), model_key=spec.key)

    async def _end(self, session_id: str, scope: str | None, chunk: asyncio.Future) -> None:
        # The chunk is ahead in the session's line, so it is answered by now.
        if chunk.cancelled() or chunk.exception() is not None:
            return
        record = await self.store.get(session_id)
        if record is not None and record.visible_to(scope, time.time()):
            await self.store.delete(session_id)
            if session_id.startswith(SEQUENCE_PREFIX):  # a request without one cannot be retried
                self._remember_end(session_id, scope, chunk.result())

    def _remember_end(self, session_id: str, scope: str | None, answer: ChunkResult) -> None:
        self._forget_end(session_id)
        # A copy: the answer's outputs are a view of its whole batch's, which must not be kept.
        answer = dataclasses.replace(answer, outputs=answer.outputs.copy())
        self._ended[session_id] = (scope, time.monotonic(), answer)
        self._ended_bytes += ENTRY_BYTES + answer.outputs.nbytes
        # In the order they ended: the oldest go first, once past their time or the memory.
        now = time.monotonic()
        while self._ended:
            oldest, (_, at, _) = next(iter(self._ended.items()))
            if self._ended_bytes <= ENDED_BYTES and now - at <= ENDED_KEEP_S:
                break
            self._forget_end(oldest)

    def _forget_end(self, session_id: str) -> None:
        found = self._ended.pop(session_id, None)
        if found is not None:
            self._ended_bytes -= ENTRY_BYTES + found[2].outputs.nbytes

    def _final_answer(
        self, session_id: str, scope: str | None, seq: int | None
    ) -> ChunkResult | None:
        """The answer a sequence's final request got, if this final request is its retry (its
        ``seq``, within ``ENDED_KEEP_S`` of the end, from the same tenant): as any retried chunk,
        it is answered what the first was, and nothing is applied."""
        found = self._ended.get(session_id)
        if found is None or seq is None:
            return None
        owner, ended, answer = found
        if time.monotonic() - ended > ENDED_KEEP_S:
            self._forget_end(session_id)
            return None
        if owner != scope or answer.seq != seq:
            return None
        return dataclasses.replace(answer, replayed=True)

    async def state(
        self, session_id: str, scope: str | None = None
    ) -> tuple[SessionRecord, ModelSpec, list[np.ndarray]]:
        """The session, its version, and its row of each state tensor, in model order."""

        async def read() -> tuple[SessionRecord, ModelSpec, list[np.ndarray]]:
            spec = self.versions.spec_of(await self.get(session_id, scope))  # visibility first
            found = await self.store.read_state(session_id)
            if found is None:
                raise SessionNotFound(session_id)
            return found[0], spec, found[1]

        # In line with the session's chunks, so seq, steps and the state belong together.
        return await self.engine.exclusive(session_id, read)

    async def set_state(
        self,
        session_id: str,
        values: list[np.ndarray],
        scope: str | None = None,
        model: str | None = None,
    ) -> SessionRecord:
        """Replace the session's state: one row per state tensor of version ``model`` (the one the
        caller checked ``values`` against; refused if the session has moved since), in model order."""

        async def write() -> SessionRecord:
            runs = self.versions.spec_of(await self.get(session_id, scope)).key
            record = await self.store.write_state(
                session_id, values, time.time(), model_key=model or runs
            )
            if record is None:
                raise SessionNotFound(session_id)
            return record

        return await self.engine.exclusive(session_id, write)
