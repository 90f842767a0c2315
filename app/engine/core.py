"""The engine: chunks from many sessions run together in one compiled model call.

It is a loop over three steps, as vLLM's ``EngineCore.step``:

- **schedule** (:class:`~app.engine.lines.Lines`): the next batch takes each free session's first
  waiting chunk, in arrival order, so a session's chunks, resets and deletes apply in the order
  they came; actions that reached the head of their session's line start;
- **execute** (:class:`~app.engine.runner.BatchRunner`, on the model thread): the store checks the
  batch's sessions out (their state rows into their model version's slot table), the session rules
  admit each chunk (``admit``: given by the sessions layer), and one model call per model version
  runs them all (one hop to the model thread for the batch);
- **update**: the store commits each session's new state, atomically and only if nobody changed it
  meanwhile (another replica, on a shared store: then the chunk goes back to the head of its line
  and is computed again), and each waiter gets its answer.

While the model runs one batch, chunks queue, and the next batch takes all that queued (up to
``max_batch``), so batches grow with load. With ``batch_interval``, two calls start at least that
far apart: under an open-loop load (live streams) each takes what came meanwhile, and the per-call
costs (the hop to the model thread and back, the runtime's fixed cost, the store's round trips) are
shared by more chunks, while a chunk that finds the engine idle that long goes at once, and no
call waits while every session seen lately has work waiting or running (closed-loop clients, who
send again only once answered: nobody else can join). A lone chunk never waits for company,
unless ``batch_delay`` asks it to (for bigger batches still, at the price of latency). Batches
overlap: the next one is checked out and computed while the last one is committed and answered. A session
is in one batch at a time, so its chunks still apply one after another.

One engine serves every model version: a session's line is one whatever version it runs (a
session moved to another version between two chunks stays in order), and the version of each chunk
is the one its session runs when its turn comes, read with its state. Versions are added once
compiled and warmed (:meth:`Engine.add_model`) and removed when retired.

Threads: the lines, the slot tables and the records are touched only on the event loop; the model
thread gets copies of the batch's rows and returns new ones.

The engine returns outputs, not response bodies: each transport encodes them as it speaks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from app import metrics
from app.engine.lines import Lines, Reply, Work
from app.engine.runner import BatchRunner, RowResult
from app.engine.tally import Tally
from app.errors import InvalidInput, ServiceError, SessionNotFound, Unavailable
from app.store.base import Checkout, Commit, Outcome, StateStore
from app.store.records import SessionRecord

if TYPE_CHECKING:  # the model's module imports TensorFlow, which API worker processes never load
    from app.model.step import StreamingModel

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_CONFLICTS = 32


@dataclass
class ChunkResult:
    """The answer to a chunk: the session's seq and steps once it was applied, and its outputs."""

    session_id: str
    seq: int
    steps: int
    outputs: np.ndarray  # float32: [T, size] per step, else [size]
    replayed: bool = False  # a repeated seq, answered with what the first time answered
    version: int | None = None  # the model version that computed it (the session's)


# The session rules, from the layer above: given a chunk and its session as the store has it now
# (None: no such session), None to run it, or the answer to give at once (a replay), or the error.
AdmitRule = Callable[[Work, "SessionRecord | None", float], "ChunkResult | ServiceError | None"]


@dataclass(eq=False)
class _Row:
    work: Work
    checkout: Checkout
    seq: int
    steps: int


@dataclass(eq=False)
class _Step:
    """One batch through the step: what each phase found, for the next and for the bookkeeping."""

    batch: list[Work]
    rows: list[_Row] = field(default_factory=list)  # checked out and admitted
    computed: list[tuple[_Row, RowResult]] = field(default_factory=list)  # with finite results
    applied: list[_Row] = field(default_factory=list)  # committed and answered
    calls: list[tuple[str, int, float]] = field(default_factory=list)  # version, rows, seconds
    started: float = 0.0  # the model call (perf_counter)
    ended: float = 0.0
    answered: float = 0.0
    now: float = 0.0  # the commit's time (wall clock)


class Engine:
    def __init__(
        self,
        store: StateStore,
        *,
        max_batch: int,
        max_queue: int,
        max_session_queue: int = 32,
        batch_delay: float = 0.0,
        batch_interval: float = 0.0,
    ):
        self.runners: dict[str, BatchRunner] = {}  # by model version, ``name/version``
        self.tallies: defaultdict[str, Tally] = defaultdict(Tally)  # by model version, since start
        self.store = store
        # The session rules: the sessions layer sets them (SessionService) before the engine starts.
        self.admit: AdmitRule | None = None
        self.max_batch = max_batch
        self.batch_delay = batch_delay
        self.batch_interval = batch_interval
        self._last_start = 0.0  # when the last batch started (perf_counter)
        # Sessions that sent a chunk lately (this window and the last, a second each): while each
        # of them has work waiting or running, no more can come, and a batch waits for nobody.
        self._seen: set[str] = set()
        self._recent = 0  # sessions seen in the last whole window
        self._window_end = 0.0
        self.lines = Lines(max_queue, max_session_queue)
        self.ready = False  # set by the layer above once the versions it serves at start are warm
        self._batches: set[asyncio.Task] = set()
        # Chunks checked out and not yet committed, by version.
        self._in_flight: Counter[str] = Counter()
        self._actions: set[asyncio.Task] = set()
        self._computing = False  # a batch is being read or computed: the next one waits for it
        self._wakeup = asyncio.Event()
        self._full = asyncio.Event()  # a whole batch waits, or nobody else can come: go
        self._idle = asyncio.Event()
        self._idle.set()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="model")
        self._loop_task: asyncio.Task | None = None
        # The event loop, once started: asyncio.get_running_loop() makes a getpid() system call
        # each time (a fork check), a tenth of the event loop's time at 10,000 chunks a second.
        self._event_loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self.admit is None:
            raise RuntimeError("the engine starts only once the sessions layer has set its rules")
        self._event_loop = asyncio.get_running_loop()
        self._loop_task = self._event_loop.create_task(self._loop(), name="engine")

    async def warm(self, model: StreamingModel, shapes: tuple[int, int]) -> None:
        """Warm ``model`` on the model thread (before serving: nothing else runs there yet)."""
        await asyncio.get_running_loop().run_in_executor(self._executor, model.warm, *shapes)

    def add_model(self, model: StreamingModel) -> None:
        """Serve a model version (compiled and warmed already): its table in the store, its runner."""
        spec = model.spec
        self.store.add_model(spec.key, spec.fingerprint, spec.state_units)
        self.runners[spec.key] = BatchRunner(model)

    def remove_model(self, key: str) -> None:
        """Stop serving a version (none of its sessions may be in flight: see ``running_on``)."""
        self.runners.pop(key, None)
        self.store.drop_model(key)

    def running_on(self, key: str) -> bool:
        """Whether a batch in flight holds a chunk of version ``key``."""
        return self._in_flight[key] > 0

    async def stop(self) -> None:
        """Finish every waiting item, then stop."""
        self.ready = False
        while len(self.lines) or self.lines.acting or not self._idle.is_set():
            self._wakeup.set()
            await asyncio.sleep(0.01)
        if self._loop_task:
            self._loop_task.cancel()
        self._executor.shutdown(wait=True)

    # -- what the sessions layer asks ---------------------------------------------------------

    def busy(self, session_id: str) -> bool:
        return self.lines.busy(session_id)

    @property
    def busy_sessions(self) -> set[str]:
        return set(self.lines.load)

    @property
    def depth(self) -> int:
        return len(self.lines)

    def submit(
        self,
        session_id: str,
        inputs: np.ndarray,
        seq: int | None = None,
        scope: str | None = None,
        transport: str = "http",
        model: str | None = None,
        reply: Reply | None = None,
    ) -> asyncio.Future[ChunkResult] | Reply:
        """Apply one chunk ``inputs`` [T, F] to a session's state, after its earlier work: the
        chunk takes its place in its session's line now, and the future is its answer (await it,
        or not: a caller may place many chunks before awaiting any), or ``reply``, given, which is
        settled instead. With ``scope``, only a session of that tenant (another's is 'not
        found'). ``model``: the model the caller named, which the session must run."""
        if not self.ready:
            raise Unavailable("the model is still warming up", retry_after=1)
        work = Work(
            session_id,
            reply or self._future(),
            inputs=inputs,
            seq=seq,
            scope=scope,
            transport=transport,
            model=model,
        )
        self._add(work)
        return work.future

    async def exclusive(self, session_id: str, action: Callable[[], Awaitable[T]]) -> T:
        """Run ``action`` once the session's earlier work is done and before its later work."""
        return await self.enqueue(session_id, action)

    def enqueue(self, session_id: str, action: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        """``exclusive``, without a coroutine: the action takes its place in the session's line
        now (for a caller that places several items in order before awaiting any)."""
        work = Work(session_id, self._future(), action=action)
        if self.lines.busy(session_id):
            self._add(work)
        else:
            self.lines.begin(work)
            self._act(work)
        return work.future

    def _future(self) -> asyncio.Future:
        return (self._event_loop or asyncio.get_running_loop()).create_future()

    def _add(self, work: Work) -> None:
        self.lines.add(work)
        if len(self.lines) >= self.max_batch:
            self._full.set()
        elif self.batch_interval:
            self._seen.add(work.session_id)
            if not self.batch_delay and self._everyone_waits():  # a delay is asked: come what may
                self._full.set()
        self._wakeup.set()

    def _everyone_waits(self) -> bool:
        """Every session seen lately has work waiting or running: a closed-loop client waits for
        its answer before it sends again, so holding the batch for company would only stall it."""
        return len(self.lines.load) >= max(self._recent, len(self._seen))

    def _finish(self, work: Work, result: Any = None, error: BaseException | None = None) -> None:
        self.lines.done(work)
        if work.future.done():  # the client went away; the work itself is complete
            return
        if isinstance(error, asyncio.CancelledError):
            work.future.cancel()
        elif error is not None:
            work.future.set_exception(error)
        else:
            work.future.set_result(result)

    # -- the loop: schedule, execute, update --------------------------------------------------

    async def _loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                # One batch executes at a time (the model thread); the last one's update overlaps.
                while len(self.lines) and not self._computing:
                    batch = await self._schedule()
                    if not batch:
                        break  # what is left waits for actions or batches under way, which wake us
                    self._launch(_Step(batch))
            except Exception:
                log.exception("the engine's loop failed; it carries on")

    async def _step(self, step: _Step) -> None:
        """One batch, once scheduled: execute, then update while the next batch executes; then
        its bookkeeping, once."""
        try:
            try:
                await self._execute(step)
            finally:
                self._computing = False  # the model thread is free: the next batch may start
                self._wakeup.set()
            if step.computed:
                await self._update(step)
        finally:
            self._in_flight.subtract(row.checkout.model_key for row in step.rows)
            self._account(step)

    # -- schedule -------------------------------------------------------------------------------

    async def _schedule(self) -> list[Work]:
        """The next batch: each free session's first waiting chunk, in arrival order (up to
        ``max_batch``, and the slots free), once company has had its chance to come; actions that
        reached the head of their session's line start."""
        await self._wait_for_company()
        # Every session of a batch in flight holds a slot, so together they never outgrow the table.
        limit = min(self.max_batch, self.store.capacity - len(self.lines.running))
        batch, actions, abandoned = self.lines.take(limit)
        for work in abandoned:
            self._finish(work)
        for work in actions:
            self._act(work)
        return batch

    async def _wait_for_company(self) -> None:
        """Hold a batch that is not full until ``batch_interval`` after the last batch started,
        and with ``batch_delay`` until its oldest chunk has waited that long: fewer, bigger model
        calls, for that much more latency at most. The interval is not waited when every session
        seen lately already has work waiting or running: nobody else can join."""
        now = time.perf_counter()
        if now >= self._window_end:
            self._recent, self._seen = len(self._seen), set()
            self._window_end = now + 1.0
        if len(self.lines) >= self.max_batch:
            return
        wait = self._last_start + self.batch_interval - now
        if wait > 0 and self._everyone_waits():
            wait = 0.0
        if self.batch_delay:
            wait = max(wait, self.lines.waiting[0].arrived + self.batch_delay - now)
        if wait > 0:
            self._full.clear()
            try:
                await asyncio.wait_for(self._full.wait(), wait)
            except asyncio.TimeoutError:
                pass

    def _launch(self, step: _Step) -> None:
        """Run a scheduled batch as a task of its own (the loop goes on to the next)."""
        self._last_start = time.perf_counter()
        self._idle.clear()
        self._computing = True
        sessions = [work.session_id for work in step.batch]
        self.lines.running.update(sessions)
        task = self._event_loop.create_task(self._step(step))
        self._batches.add(task)

        def finished(task: asyncio.Task) -> None:
            self._batches.discard(task)
            self.lines.running.difference_update(sessions)
            if not task.cancelled() and task.exception() is not None:
                log.error("a batch of %d failed", len(sessions), exc_info=task.exception())
            if not self._batches:
                self._idle.set()
            self._wakeup.set()

        task.add_done_callback(finished)

    def _act(self, work: Work) -> None:
        """Start an action; its session takes no other work until the action is done."""
        self.lines.acting.add(work.session_id)

        async def run() -> None:
            result, error = None, None
            try:
                result = await work.action()
            except BaseException as exc:  # the waiter gets it, whatever it is
                error = exc
            finally:
                self._finish(work, result, error)
                self.lines.acting.discard(work.session_id)
                self._actions.discard(task)
                self._wakeup.set()

        task = asyncio.create_task(run())
        self._actions.add(task)  # the loop keeps only weak references to tasks

    # -- execute --------------------------------------------------------------------------------

    async def _execute(self, step: _Step) -> None:
        """Check the batch's sessions out, admit each chunk by the session rules (replays and
        refusals are answered here), and run the rest: one model call per version, all in one hop
        to the model thread. Sets ``step.computed``: each row kept, with its result."""
        step.rows = await self._checkout(step.batch)
        self._in_flight.update(row.checkout.model_key for row in step.rows)
        if not step.rows:
            return
        groups: dict[str, list[_Row]] = defaultdict(list)  # one model call per version
        for row in step.rows:
            groups[row.checkout.model_key].append(row)
        calls = []
        for key, group in groups.items():
            slots = np.fromiter((row.checkout.slot for row in group), np.intp, len(group))
            calls.append(
                (
                    self.runners[key],
                    [row.work.inputs for row in group],
                    self.store.tables[key].gather(slots),
                )
            )
        step.rows = rows = [row for group in groups.values() for row in group]
        step.started = time.perf_counter()
        try:
            results, seconds = await self._event_loop.run_in_executor(
                self._executor, _run_all, calls
            )
        except Exception:
            log.exception("model call failed for a batch of %d", len(rows))
            for row in rows:
                self._fail(row, ServiceError("the model call failed"))
            return
        step.ended = time.perf_counter()
        step.calls = [
            (key, len(group), spent) for (key, group), spent in zip(groups.items(), seconds)
        ]
        for row, result in zip(rows, results):
            if result is None:
                self._fail(
                    row,
                    InvalidInput(
                        "this chunk would make the session's state or outputs NaN or infinite (its state "
                        "or inputs are too large for the model); nothing was applied"
                    ),
                )
            else:
                step.computed.append((row, result))

    async def _checkout(self, batch: list[Work]) -> list[_Row]:
        try:
            found = await self.store.checkout(
                [(w.session_id, w.seq) for w in batch], pinned=set(self.lines.running)
            )
        except Exception as exc:
            for work in batch:
                self._finish(work, error=_as_service_error(exc, "reading the sessions"))
            return []
        now = time.time()
        rows = []
        for work, checkout in zip(batch, found):
            if isinstance(checkout, ServiceError):  # this session alone could not be read
                self._finish(work, error=checkout)
                continue
            verdict = self.admit(work, None if checkout is None else checkout.record, now)
            if verdict is None and (
                checkout.slot is None or checkout.model_key not in self.runners
            ):
                # The rules admit only sessions of a version served here, which the store places.
                verdict = ServiceError(
                    f"session {work.session_id!r} could not be placed for its model version"
                )
            if isinstance(verdict, ServiceError):
                self._finish(work, error=verdict)
            elif verdict is not None:
                self._finish(work, verdict)
            else:
                record = checkout.record
                rows.append(_Row(work, checkout, record.seq + 1, record.steps + len(work.inputs)))
        return rows

    # -- update ---------------------------------------------------------------------------------

    async def _update(self, step: _Step) -> None:
        """Commit each session's new state (only if nobody changed it meanwhile: else its chunk
        goes back to the head of its line, to be computed again) and answer each waiter."""
        step.now = now = time.time()
        commits = [
            Commit(row.checkout, row.seq, row.steps, now, result.outputs.tobytes(), result.states)
            for row, result in step.computed
        ]
        try:
            outcomes = await self.store.commit(commits)
        except Exception as exc:
            for row, _ in step.computed:
                self._fail(row, _as_service_error(exc, "writing the sessions"))
            return
        retry = []
        step.answered = time.perf_counter()
        for (row, result), outcome in zip(step.computed, outcomes):
            work = row.work
            if isinstance(outcome, ServiceError):
                self._fail(row, outcome)
            elif outcome is Outcome.APPLIED:
                step.applied.append(row)
                version = self.runners[row.checkout.model_key].version
                self._finish(
                    work,
                    ChunkResult(
                        work.session_id, row.seq, row.steps, result.outputs, version=version
                    ),
                )
            elif outcome is Outcome.GONE:
                self._fail(row, SessionNotFound(work.session_id))
            elif work.conflicts >= MAX_CONFLICTS:
                self._finish(work, error=Unavailable("the session is too contended; retry"))
            else:
                metrics.COMMIT_RACES.inc()
                work.conflicts += 1
                retry.append(work)
        if retry:  # back to the heads of their sessions' lines, in order
            self.lines.put_back(retry)

    def _fail(self, row: _Row, error: ServiceError) -> None:
        """Refuse a chunk whose version is known (counted in that version's tally)."""
        self.tallies[row.checkout.model_key].fail.add(time.perf_counter() - row.work.arrived)
        self._finish(row.work, error=error)

    # -- bookkeeping ----------------------------------------------------------------------------

    def _account(self, step: _Step) -> None:
        """A batch's metrics and tallies, once per batch (per transport and per version), not
        once per chunk: each Prometheus observation takes a lock."""
        if step.rows:
            metrics.BATCH_SIZE.observe(len(step.rows))
        if step.calls:
            metrics.MODEL_SECONDS.observe(step.ended - step.started)
            for key, rows, spent in step.calls:
                self.tallies[key].called(rows, spent)
        applied = step.applied
        if not applied:
            return
        arrived = np.fromiter((row.work.arrived for row in applied), float, len(applied))
        queued, total = step.started - arrived, step.answered - arrived
        metrics.CHUNKS.inc(len(applied))
        metrics.TIME_STEPS.inc(sum(len(row.work.inputs) for row in applied))
        for transport, rows in _groups(row.work.transport for row in applied).items():
            queue_timer, total_timer = metrics.chunk_timers(transport)
            metrics.observe_many(queue_timer, queued[rows])
            metrics.observe_many(total_timer, total[rows])
        for key, rows in _groups(row.checkout.model_key for row in applied).items():
            waits, times = queued[rows], total[rows]
            metrics.observe_many(metrics.version_timer(key), times)
            metrics.version_chunks(key).inc(len(times))
            tally = self.tallies[key]
            tally.queue.add(float(waits.sum()), len(waits))
            tally.success.add(float(times.sum()), len(times))
            tally.inferences += len(times)
            tally.last_inference_ms = int(step.now * 1000)


def _groups(keys) -> dict[Any, np.ndarray | slice]:
    """The positions of each key among ``keys``; all of them (a slice) when there is one key,
    as there usually is (one transport, one version)."""
    positions: dict[Any, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        positions[key].append(index)
    if len(positions) == 1:
        return {key: slice(None) for key in positions}
    return {key: np.array(found) for key, found in positions.items()}


def _run_all(
    calls: list[tuple[BatchRunner, list[np.ndarray], list[np.ndarray]]],
) -> tuple[list[RowResult | None], list[float]]:
    """Each version's rows through its model, on the model thread: the results in the same order,
    and each call's seconds."""
    results: list[RowResult | None] = []
    seconds = []
    for runner, inputs, states in calls:
        started = time.perf_counter()
        results.extend(runner.run(inputs, states))
        seconds.append(time.perf_counter() - started)
    return results, seconds


def _as_service_error(exc: Exception, doing: str) -> ServiceError:
    """A store failure as the client should see it; anything unforeseen is logged as a 500."""
    if isinstance(exc, ServiceError):
        return exc
    log.error("unexpected failure %s", doing, exc_info=exc)
    return ServiceError(f"the server failed while {doing}; it has been logged")
