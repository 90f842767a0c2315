"""Per-session lines: the work waiting for the engine, each session's in the order it arrived.

A session's chunks, resets, state writes and its delete apply one at a time, in arrival order: a
work item leaves the line only when its session has nothing running (no chunk in a batch in flight,
no action under way). Chunks of different sessions leave together, one per session, as the next
batch. The lines are bounded overall and per session, so a flood is refused, not queued.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.errors import Unavailable

log = logging.getLogger(__name__)


class Reply:
    """A chunk's answer handed to ``deliver`` the moment the engine decides it, in place of an
    asyncio future: for a transport that answers many chunks in order and awaits none of them (a
    WebSocket stream). A future costs its chunk about 2.4 µs (made, settled, and its callback run
    on a later turn of the loop); this is a call. It has what the engine asks of a future (``done``,
    ``cancelled``, ``cancel``, ``set_result``, ``set_exception``) and ``result`` for the reader."""

    __slots__ = ("_deliver", "_done", "_result", "_error")

    def __init__(self, deliver: Callable[[Reply], None]):
        self._deliver = deliver
        self._done = False
        self._result: Any = None
        self._error: BaseException | None = None

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return isinstance(self._error, asyncio.CancelledError)

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._result

    def set_result(self, result: Any) -> None:
        self._settle(result, None)

    def set_exception(self, error: BaseException) -> None:
        self._settle(None, error)

    def cancel(self) -> bool:
        self._settle(None, asyncio.CancelledError())
        return True

    def follow(self, future: asyncio.Future) -> None:
        """Settle as ``future`` does (a chunk answered by another process's engine)."""

        def settled(done: asyncio.Future) -> None:
            if done.cancelled():
                self.cancel()
            elif done.exception() is not None:
                self.set_exception(done.exception())
            else:
                self.set_result(done.result())

        future.add_done_callback(settled)

    def _settle(self, result: Any, error: BaseException | None) -> None:
        if self._done:
            return
        self._done, self._result, self._error = True, result, error
        try:
            self._deliver(self)
        except (
            Exception
        ):  # the engine settles many replies in a row: one reader's fault stays its own
            log.exception("delivering a chunk's answer failed")


@dataclass(eq=False)
class Work:
    """One item in a session's line: a chunk, or an action that must wait its turn."""

    session_id: str
    future: asyncio.Future | Reply
    inputs: np.ndarray | None = None  # [T, F] for a chunk
    seq: int | None = None
    scope: str | None = None  # the tenant the caller acts for; None: any session
    transport: str = "http"  # what it came over, for the latency metrics
    model: str | None = (
        None  # the model the caller named (the Open Inference Protocol's URL), if any
    )
    action: Callable[[], Awaitable[Any]] | None = None
    arrived: float = field(default_factory=time.perf_counter)
    conflicts: int = 0  # commits lost to another replica so far

    @property
    def is_chunk(self) -> bool:
        return self.action is None


class Lines:
    def __init__(self, max_queue: int, max_session_queue: int):
        self.max_queue, self.max_session_queue = max_queue, max_session_queue
        self.waiting: deque[Work] = deque()
        self.load: Counter[str] = Counter()  # items waiting or under way, per session
        self.acting: set[str] = set()  # sessions whose action is under way
        self.running: set[str] = set()  # sessions with a chunk in a batch in flight

    def __len__(self) -> int:
        return len(self.waiting)

    def busy(self, session_id: str) -> bool:
        return self.load[session_id] > 0

    def add(self, work: Work) -> None:
        """Put ``work`` at the end of its session's line, or refuse it (503) when the lines are full."""
        if len(self.waiting) >= self.max_queue:
            raise Unavailable(f"{len(self.waiting)} chunks are already waiting; retry shortly")
        if self.load[work.session_id] >= self.max_session_queue:
            # A session's chunks run one at a time: more of them waiting only adds latency, and
            # one hot session must not fill the lines that every session shares.
            raise Unavailable(
                f"{self.load[work.session_id]} items of this session are already "
                "waiting; send the next chunk when one is answered"
            )
        self.waiting.append(work)
        self.load[work.session_id] += 1

    def begin(self, work: Work) -> None:
        """Count ``work`` as under way without it waiting (an action on an idle session)."""
        self.load[work.session_id] += 1

    def done(self, work: Work) -> None:
        self.load[work.session_id] -= 1
        if not self.load[work.session_id]:
            del self.load[work.session_id]

    def take(self, limit: int) -> tuple[list[Work], list[Work], list[Work]]:
        """The next batch (each free session's first waiting chunk, ``limit`` at most), the actions
        that have reached the head of their sessions' lines, and chunks nobody waits for any more
        (their clients left before they started: nothing of them was applied)."""
        batch: list[Work] = []
        actions: list[Work] = []
        abandoned: list[Work] = []
        blocked: set[str] = self.acting | self.running  # sessions that must not move yet
        kept: deque[Work] = deque()
        for work in self.waiting:
            if work.session_id in blocked or (work.is_chunk and len(batch) >= limit):
                blocked.add(work.session_id)
                kept.append(work)
            elif not work.is_chunk:
                actions.append(work)
                blocked.add(work.session_id)
            elif work.future.cancelled():
                abandoned.append(work)
            else:
                batch.append(work)
                blocked.add(work.session_id)
        self.waiting = kept
        return batch, actions, abandoned

    def put_back(self, works: list[Work]) -> None:
        """Return chunks to the heads of their sessions' lines, in order (to be computed again)."""
        self.waiting.extendleft(reversed(works))
