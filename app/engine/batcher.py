"""The micro-batcher: chunks from many sessions run together in one compiled model call.

There is no timer. While the model runs one batch, new chunks queue; when it returns, the next batch
takes everything that queued (up to ``max_batch``), so batches grow with load and a lone request never
waits for company. A session has at most one chunk in a batch, and its work items leave the queue in
the order they arrived, so a session's chunks, resets and deletes apply in arrival order.

Threads: the queue, the state table and the session records are touched only on the event loop; the
TensorFlow thread sees copies of the gathered rows and returns new ones, which the loop writes back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import orjson

from app import metrics
from app.errors import Conflict, ServiceError, SessionNotFound, Unavailable
from app.model.step import StreamingModel
from app.store.memory import MemoryStore
from app.store.records import SessionRecord

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
    action: Callable[[], Any] | None = None  # for anything else that must wait its turn


@dataclass(eq=False)
class _Row:
    work: _Work
    record: SessionRecord
    seq: int
    steps: int


class Engine:
    def __init__(self, model: StreamingModel, store: MemoryStore, *, max_batch: int, max_queue: int):
        self.model = model
        self.store = store
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.ready = False
        self._queue: deque[_Work] = deque()
        self._load: Counter[str] = Counter()  # work items queued or running, per session
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
        while self._queue or not self._idle.is_set():
            self._wakeup.set()
            await self._idle.wait()
            await asyncio.sleep(0)
        if self._worker:
            self._worker.cancel()
        self._executor.shutdown(wait=True)

    def busy(self, session_id: str) -> bool:
        return self._load[session_id] > 0

    @property
    def depth(self) -> int:
        return len(self._queue)

    async def push(self, session_id: str, inputs: np.ndarray, seq: int | None = None) -> ChunkResult:
        """Apply one chunk ``inputs`` [T, F] to a session's state, after its earlier work."""
        if not self.ready:
            raise Unavailable("the model is still warming up", retry_after=1)
        return await self._enqueue(_Work(session_id, self._future(), inputs=inputs, seq=seq))

    async def exclusive(self, session_id: str, action: Callable[[], T]) -> T:
        """Run ``action`` on the loop once the session's earlier work is done, before later work."""
        if not self.busy(session_id):
            return action()
        return await self._enqueue(_Work(session_id, self._future(), action=action))

    def _future(self) -> asyncio.Future:
        return asyncio.get_running_loop().create_future()

    async def _enqueue(self, work: _Work) -> Any:
        if len(self._queue) >= self.max_queue:
            raise Unavailable(f"{len(self._queue)} chunks are already waiting; retry shortly")
        self._queue.append(work)
        metrics.QUEUE_DEPTH.set(len(self._queue))
        self._load[work.session_id] += 1
        self._wakeup.set()
        return await work.future

    def _finish(self, work: _Work, result: Any = None, error: BaseException | None = None) -> None:
        self._load[work.session_id] -= 1
        if not self._load[work.session_id]:
            del self._load[work.session_id]
        if work.future.done():  # the client went away; the work itself is complete
            return
        if error is not None:
            work.future.set_exception(error)
        else:
            work.future.set_result(result)

    async def _work(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            self._idle.clear()
            try:
                while self._queue:
                    rows = self._take()
                    if rows:
                        await self._run(rows)
            finally:
                self._idle.set()

    def _take(self) -> list[_Row]:
        """The next batch: each session's first waiting chunk. Actions that reach the head of
        their session's line run here, between two model calls."""
        rows: list[_Row] = []
        waiting: set[str] = set()  # sessions with an earlier item still in the queue
        kept: deque[_Work] = deque()
        for work in self._queue:
            if work.session_id in waiting or (work.action is None and len(rows) >= self.max_batch):
                waiting.add(work.session_id)
                kept.append(work)
                continue
            if work.action is not None:
                self._run_action(work)
                continue
            if work.future.cancelled():  # nobody is waiting for it: skip it, nothing was applied
                self._finish(work)
                continue
            row = self._admit(work)
            if row is not None:
                rows.append(row)
                waiting.add(work.session_id)
        self._queue = kept
        metrics.QUEUE_DEPTH.set(len(kept))
        return rows

    def _run_action(self, work: _Work) -> None:
        try:
            self._finish(work, work.action())
        except Exception as exc:
            self._finish(work, error=exc)

    def _admit(self, work: _Work) -> _Row | None:
        """Check a chunk against its session as it is now; answer replays and refusals at once."""
        record = self.store.get(work.session_id)
        if record is None:
            self._finish(work, error=SessionNotFound(work.session_id))
            return None
        if work.seq is not None and work.seq != record.seq + 1:
            if work.seq == record.seq and record.last_response is not None:
                metrics.REPLAYS.inc()
                self._finish(work, ChunkResult(record.last_response, replayed=True))
            else:
                self._finish(
                    work,
                    error=Conflict(
                        f"chunk seq {work.seq} is out of order: the session's last applied chunk "
                        f"is {record.seq}, so the next must be {record.seq + 1}",
                        expected_seq=record.seq + 1,
                    ),
                )
            return None
        return _Row(work, record, seq=record.seq + 1, steps=record.steps + len(work.inputs))

    async def _run(self, rows: list[_Row]) -> None:
        slots = np.fromiter((row.record.slot for row in rows), np.intp, len(rows))
        states = self.store.slots.gather(slots)
        loop = asyncio.get_running_loop()
        metrics.BATCH_SIZE.observe(len(rows))
        started = time.perf_counter()
        try:
            bodies, outputs, new_states = await loop.run_in_executor(
                self._executor, self._compute, rows, states
            )
        except Exception as exc:
            log.exception("model call failed for a batch of %d", len(rows))
            for row in rows:
                self._finish(row.work, error=ServiceError("the model call failed"))
            return
        metrics.MODEL_SECONDS.observe(time.perf_counter() - started)
        # A session deleted (or expired) while its chunk ran must not have its old slot written.
        current = [self.store.is_current(row.record) for row in rows]
        if all(current):
            self.store.slots.scatter(slots, new_states)
        else:
            keep = np.array(current)
            self.store.slots.scatter(slots[keep], [s[keep] for s in new_states])
        now = time.time()
        for row, body, output, ok in zip(rows, bodies, outputs, current):
            if not ok:
                self._finish(row.work, error=SessionNotFound(row.record.session_id))
                continue
            record = row.record
            record.seq, record.steps, record.last_response = row.seq, row.steps, body
            self.store.touch(record, now)
            metrics.CHUNKS.inc()
            metrics.TIME_STEPS.inc(len(row.work.inputs))
            self._finish(row.work, ChunkResult(body, outputs=output))

    def _compute(self, rows: list[_Row], states: list[np.ndarray]):
        """On the model thread: pad, run, cut each row's outputs back out and encode its answer."""
        lengths = np.fromiter((len(row.work.inputs) for row in rows), np.int32, len(rows))
        longest = int(lengths.max())
        features = self.model.spec.input_features
        batch = np.zeros((len(rows), longest, features), np.float32)
        for i, row in enumerate(rows):
            batch[i, : lengths[i]] = row.work.inputs
        outputs, new_states = self.model.run(batch, lengths, states)
        per_step = self.model.spec.per_step
        cut = [outputs[i, : lengths[i]] if per_step else outputs[i] for i in range(len(rows))]
        bodies = [
            orjson.dumps(
                {
                    "session_id": row.record.session_id,
                    "seq": row.seq,
                    "steps": row.steps,
                    "outputs": out,
                },
                option=orjson.OPT_SERIALIZE_NUMPY,
            )
            for row, out in zip(rows, cut)
        ]
        return bodies, cut, new_states
