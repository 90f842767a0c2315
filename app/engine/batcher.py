"""The micro-batcher: chunks from many sessions run together in one compiled model call.

There is no timer. While the model runs one batch, new chunks queue; when it returns, the next batch
takes everything that queued (up to ``max_batch``), so batches grow with load and a lone request never
waits for company. A session has at most one chunk in a batch, and its work items leave the queue in
the order they arrived, so a session's chunks, resets and deletes apply in arrival order.

Batches overlap: the next one is taken and computed as soon as the model thread is free, while the
last one is still being committed and answered on the event loop. A session is in at most one batch
in flight, so its chunks still apply one after the other.

Threads: the queue, the state table and the session records are touched only on the event loop; the
TensorFlow thread sees copies of the gathered rows and returns new ones, which the store commits.

A commit that finds the session changed by someone else (another replica, on a shared store) sends
the chunk back to the head of its session's line: it is checked out again and recomputed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import orjson

from app import metrics
from app.errors import Conflict, InvalidInput, ServiceError, SessionNotFound, Unavailable
from app.model.step import StreamingModel
from app.store.base import Checkout, Commit, Outcome, StateStore

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class ChunkResult:
    body: bytes  # the 200 response body; a replay answers these very bytes
    replayed: bool = False
    outputs: np.ndarray | None = None  # float32; None for a replay


@dataclass(eq=False)
class _Work:
    session_id: str
    future: asyncio.Future
    inputs: np.ndarray | None = None  # [T, F] for a chunk
    seq: int | None = None
    action: Callable[[], Awaitable[Any]] | None = None  # anything else that must wait its turn
    scope: str | None = None  # the tenant the caller acts for; None: any session
    conflicts: int = 0


@dataclass(eq=False)
class _Row:
    work: _Work
    checkout: Checkout
    seq: int
    steps: int


MAX_CONFLICTS = 32


class Engine:
    def __init__(self, model: StreamingModel, store: StateStore, *, max_batch: int, max_queue: int,
                 max_session_queue: int = 32):
        self.model = model
        self.store = store
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.max_session_queue = max_session_queue
        self.ready = False
        self._queue: deque[_Work] = deque()
        self._load: Counter[str] = Counter()  # work items queued or running, per session
        self._acting: set[str] = set()  # sessions whose action is running
        self._running: set[str] = set()  # sessions with a chunk in a batch in flight
        self._batches: set[asyncio.Task] = set()
        self._computing = False  # a batch is being read or computed: the next one waits for it
        self._tasks: set[asyncio.Task] = set()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="model")
        self._worker: asyncio.Task | None = None

    async def start(self, warm_shapes: tuple[int, int]) -> None:
        """Start serving; compiling and warming the model runs in the background (see ``ready``)."""
        self._worker = asyncio.create_task(self._work(), name="engine")
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        await loop.run_in_executor(self._executor, self.model.warm, *warm_shapes)
        log.info("model compiled and warmed in %.1f s", time.perf_counter() - started)
        self.ready = True

    async def stop(self) -> None:
        """Finish every queued item, then stop."""
        self.ready = False
        while self._queue or self._acting or not self._idle.is_set():
            self._wakeup.set()
            await asyncio.sleep(0.01)
        if self._worker:
            self._worker.cancel()
        self._executor.shutdown(wait=True)

    def busy(self, session_id: str) -> bool:
        return self._load[session_id] > 0

    @property
    def busy_sessions(self) -> set[str]:
        return set(self._load)

    @property
    def depth(self) -> int:
        return len(self._queue)

    async def push(
        self, session_id: str, inputs: np.ndarray, seq: int | None = None, scope: str | None = None
    ) -> ChunkResult:
        """Apply one chunk ``inputs`` [T, F] to a session's state, after its earlier work.
        With ``scope``, only a session of that tenant (another's is 'not found')."""
        if not self.ready:
            raise Unavailable("the model is still warming up", retry_after=1)
        return await self._enqueue(_Work(session_id, self._future(), inputs=inputs, seq=seq, scope=scope))

    async def exclusive(self, session_id: str, action: Callable[[], Awaitable[T]]) -> T:
        """Run ``action`` once the session's earlier work is done and before its later work."""
        work = _Work(session_id, self._future(), action=action)
        if self.busy(session_id):
            return await self._enqueue(work)
        self._load[session_id] += 1
        self._act(work)
        return await work.future

    def _future(self) -> asyncio.Future:
        return asyncio.get_running_loop().create_future()

    def _enqueue(self, work: _Work) -> asyncio.Future:
        if len(self._queue) >= self.max_queue:
            raise Unavailable(f"{len(self._queue)} chunks are already waiting; retry shortly")
        if self._load[work.session_id] >= self.max_session_queue:
            # A session's chunks run one at a time: more of them waiting only adds latency, and
            # one hot session must not fill the queue that every session shares.
            raise Unavailable(f"{self._load[work.session_id]} items of this session are already "
                              "waiting; send the next chunk when one is answered")
        self._queue.append(work)
        metrics.QUEUE_DEPTH.set(len(self._queue))
        self._load[work.session_id] += 1
        self._wakeup.set()
        return work.future

    def _finish(self, work: _Work, result: Any = None, error: BaseException | None = None) -> None:
        self._load[work.session_id] -= 1
        if not self._load[work.session_id]:
            del self._load[work.session_id]
        if work.future.done():  # the client went away; the work itself is complete
            return
        if isinstance(error, asyncio.CancelledError):
            work.future.cancel()
        elif error is not None:
            work.future.set_exception(error)
        else:
            work.future.set_result(result)

    def _act(self, work: _Work) -> None:
        """Start an action; its session takes no other work until the action is done."""
        self._acting.add(work.session_id)

        async def run() -> None:
            result, error = None, None
            try:
                result = await work.action()
            except BaseException as exc:  # the waiter gets it, whatever it is
                error = exc
            finally:
                self._finish(work, result, error)
                self._acting.discard(work.session_id)
                self._tasks.discard(task)
                self._wakeup.set()

        task = asyncio.create_task(run())
        self._tasks.add(task)  # the loop keeps only weak references to tasks

    async def _work(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                while self._queue and not self._computing:
                    works = self._take()
                    if not works:
                        break  # what is left waits for running actions or batches, which wake us
                    self._start(works)
            except Exception:
                log.exception("the engine's batch loop failed; it carries on")

    def _start(self, works: list[_Work]) -> None:
        self._idle.clear()
        self._computing = True
        self._running.update(w.session_id for w in works)
        batch = asyncio.create_task(self._run(works))
        self._batches.add(batch)

        def finished(task: asyncio.Task) -> None:
            self._batches.discard(task)
            self._running.difference_update(w.session_id for w in works)
            if not task.cancelled() and task.exception() is not None:
                log.error("a batch of %d failed", len(works), exc_info=task.exception())
            if not self._batches:
                self._idle.set()
            self._wakeup.set()

        batch.add_done_callback(finished)

    def _computed(self) -> None:
        """The model thread is free: the next batch may start while this one commits."""
        self._computing = False
        self._wakeup.set()

    def _take(self) -> list[_Work]:
        """The next batch: each session's first waiting chunk. Actions that reach the head of
        their session's line start here."""
        batch: list[_Work] = []
        waiting: set[str] = self._acting | self._running  # sessions that must not move yet
        # Every session of a batch in flight holds a slot, so together they never outgrow the table.
        limit = min(self.max_batch, self.store.capacity - len(self._running))
        kept: deque[_Work] = deque()
        for work in self._queue:
            if work.session_id in waiting or (work.action is None and len(batch) >= limit):
                waiting.add(work.session_id)
                kept.append(work)
            elif work.action is not None:
                self._act(work)
                waiting.add(work.session_id)
            elif work.future.cancelled():  # nobody waits for it: skip it, nothing was applied
                self._finish(work)
            else:
                batch.append(work)
                waiting.add(work.session_id)
        self._queue = kept
        metrics.QUEUE_DEPTH.set(len(kept))
        return batch

    async def _run(self, works: list[_Work]) -> None:
        try:
            computed = await self._read_and_compute(works)
        finally:
            self._computed()
        if computed is not None:
            await self._commit(computed)

    async def _read_and_compute(self, works: list[_Work]):
        try:
            checkouts = await self.store.checkout(
                [(w.session_id, w.seq) for w in works], pinned=set(self._running)
            )
        except Exception as exc:
            for work in works:
                self._finish(work, error=_as_service_error(exc, "reading the sessions"))
            return None
        now = time.time()
        rows = [row for work, found in zip(works, checkouts) if (row := self._admit(work, found, now))]
        if not rows:
            return None
        slots = np.fromiter((row.checkout.slot for row in rows), np.intp, len(rows))
        states = self.store.slots.gather(slots)
        loop = asyncio.get_running_loop()
        metrics.BATCH_SIZE.observe(len(rows))
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self._compute, rows, states)
        except Exception:
            log.exception("model call failed for a batch of %d", len(rows))
            for row in rows:
                self._finish(row.work, error=ServiceError("the model call failed"))
            return None
        metrics.MODEL_SECONDS.observe(time.perf_counter() - started)
        computed = []
        for row, result in zip(rows, results):
            if result is None:
                self._finish(row.work, error=InvalidInput(
                    "this chunk would make the session's state or outputs NaN or infinite (its state "
                    "or inputs are too large for the model); nothing was applied"))
            else:
                computed.append((row, *result))
        return computed or None

    async def _commit(self, computed: list[tuple[_Row, bytes, np.ndarray, list[np.ndarray]]]) -> None:
        now = time.time()
        commits = [Commit(row.checkout, row.seq, row.steps, now, body, states)
                   for row, body, _, states in computed]
        try:
            outcomes = await self.store.commit(commits)
        except Exception as exc:
            for row, *_ in computed:
                self._finish(row.work, error=_as_service_error(exc, "writing the sessions"))
            return
        retry = []
        applied = steps = 0
        for (row, _, output, _), commit, outcome in zip(computed, commits, outcomes):
            if isinstance(outcome, ServiceError):
                self._finish(row.work, error=outcome)
            elif outcome is Outcome.APPLIED:
                applied += 1
                steps += len(row.work.inputs)
                self._finish(row.work, ChunkResult(commit.response, outputs=output))
            elif outcome is Outcome.GONE:
                self._finish(row.work, error=SessionNotFound(row.work.session_id))
            elif row.work.conflicts >= MAX_CONFLICTS:
                self._finish(row.work, error=Unavailable("the session is too contended; retry"))
            else:
                metrics.COMMIT_RACES.inc()
                row.work.conflicts += 1
                retry.append(row.work)
        metrics.CHUNKS.inc(applied)  # once a batch: each inc takes a lock
        metrics.TIME_STEPS.inc(steps)
        if retry:  # back to the head of their sessions' lines, in order
            self._queue.extendleft(reversed(retry))

    def _admit(self, work: _Work, found: Checkout | ServiceError | None, now: float) -> _Row | None:
        """Check a chunk against its session as the store has it now; answer replays and
        refusals at once."""
        if isinstance(found, ServiceError):  # this session alone could not be read
            self._finish(work, error=found)
            return None
        if found is None or not found.record.visible_to(work.scope, now):
            self._finish(work, error=SessionNotFound(work.session_id))
            return None
        record = found.record
        if record.fingerprint is not None and record.fingerprint != self.model.spec.fingerprint:
            metrics.CONFLICTS.labels("model").inc()
            self._finish(work, error=Conflict(
                f"session {work.session_id!r} holds state of a different model "
                f"({record.fingerprint}); this server runs {self.model.spec.fingerprint}",
                fingerprint=self.model.spec.fingerprint,
            ))
            return None
        if work.seq is not None and work.seq != record.seq + 1:
            if work.seq == record.seq and record.last_response is not None:
                metrics.REPLAYS.inc()
                self._finish(work, ChunkResult(record.last_response, replayed=True))
            else:
                metrics.CONFLICTS.labels("seq").inc()
                self._finish(
                    work,
                    error=Conflict(
                        f"chunk seq {work.seq} is out of order: the session's last applied chunk "
                        f"is {record.seq}, so the next must be {record.seq + 1}",
                        expected_seq=record.seq + 1,
                    ),
                )
            return None
        return _Row(work, found, seq=record.seq + 1, steps=record.steps + len(work.inputs))

    def _compute(self, rows: list[_Row], states: list[np.ndarray]
                 ) -> list[tuple[bytes, np.ndarray, list[np.ndarray]] | None]:
        """On the model thread: pad, run, cut each row's outputs back out and encode its answer.
        Per row: (response body, outputs, new state rows), or None where the outputs or the new
        state are not all finite: such a chunk is refused, so a session's state is always finite."""
        lengths = np.fromiter((len(row.work.inputs) for row in rows), np.int32, len(rows))
        longest = int(lengths.max())
        features = self.model.spec.input_features
        batch = np.zeros((len(rows), longest, features), np.float32)
        for i, row in enumerate(rows):
            batch[i, : lengths[i]] = row.work.inputs
        outputs, new_states = self.model.run(batch, lengths, states)
        per_step = self.model.spec.per_step
        finite = _finite_rows(outputs, new_states, lengths if per_step else None)
        results: list[tuple[bytes, np.ndarray, list[np.ndarray]] | None] = []
        for i, row in enumerate(rows):
            if not finite[i]:
                results.append(None)
                continue
            out = outputs[i, : lengths[i]] if per_step else outputs[i]
            body = orjson.dumps({"session_id": row.work.session_id, "seq": row.seq, "steps": row.steps,
                                 "outputs": out}, option=orjson.OPT_SERIALIZE_NUMPY)
            results.append((body, out, [s[i] for s in new_states]))
        return results


def _finite_rows(outputs: np.ndarray, states: list[np.ndarray], lengths: np.ndarray | None) -> np.ndarray:
    """Which rows of a batch have finite outputs and states. With ``lengths`` (per-step outputs,
    [B, T, size]) only each row's own steps count, not the padding after them."""
    finite = np.isfinite(outputs)
    if lengths is not None:
        finite = finite.all(axis=2) | (np.arange(outputs.shape[1]) >= lengths[:, None])
    ok = finite.reshape(len(finite), -1).all(axis=1)
    for state in states:
        ok &= np.isfinite(state).all(axis=1)
    return ok


def _as_service_error(exc: Exception, doing: str) -> ServiceError:
    """A store failure as the client should see it; anything unforeseen is logged as a 500."""
    if isinstance(exc, ServiceError):
        return exc
    log.error("unexpected failure %s", doing, exc_info=exc)
    return ServiceError(f"the server failed while {doing}; it has been logged")
