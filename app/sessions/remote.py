"""The session service across processes: API workers call the engine process's service.

With ``--workers N`` one process owns the state and runs the model (the engine process: one owner
per session, as the memory backend needs) and N worker processes serve HTTP and WebSockets. A
worker's routes get a :class:`RemoteSessions`, which implements the same contract as
:class:`SessionService` (:class:`app.sessions.contract.Sessions`; its methods are made from the
contract's, not written out) and forwards each call to the :class:`SessionServer` in the engine
process, which calls the real service and sends the answer (or the ServiceError) back.

pyzmq carries the messages (a DEALER per worker, a ROUTER in the engine process, over an ``ipc://``
socket in a directory only this user may enter). What is written here is the few lines no library
does for this shape: calls are pickled (protocol 5; both ends are this server's own processes) and
batched, all the calls a worker makes in one turn of its event loop going out as one message, and
all the answers the engine process has ready in one turn going back as one, so that at thousands
of chunks a second the per-message cost of the IPC is paid per batch, not per chunk. They are
unpickled by an unpickler that can name only the few classes a call or an answer holds
(``ALLOWED``), so a message cannot run code; one that does not decode is logged and dropped.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import io
import itertools
import logging
import pickle
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import zmq
import zmq.asyncio

from app import errors
from app.engine import ChunkResult, Reply
from app.errors import ServiceError, Unavailable
from app.sessions.contract import CALLS, Sessions
from app.sessions.service import SessionService

log = logging.getLogger(__name__)

ENGINE_GONE = "the engine process has stopped; this server is going down to be restarted"


def _gone() -> Unavailable:
    return Unavailable(ENGINE_GONE, retry_after=1)


def _dumps(value: Any) -> bytes:
    return pickle.dumps(value, protocol=5)


# What a message may hold: these classes and NumPy's array rebuilders, nothing else. Pickle
# stays (it carries arrays without a copy, at thousands of calls a second), but an unpickler that
# can name only these cannot be made to call anything else: a message forged by another process
# of this user fails to decode, is logged and dropped.
ALLOWED = {
    "app.engine.core": {"ChunkResult"},
    "app.engine.tally": {"Duration", "Tally"},
    "app.model.spec": {"ModelSpec", "RecurrentLayer", "TensorSpec"},
    "app.store.records": {"LastChunk", "SessionRecord"},
    "numpy": {"dtype", "ndarray"},
    "numpy._core.numeric": {"_frombuffer"},
    "numpy.core.numeric": {"_frombuffer"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
}


class _Loader(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if name in ALLOWED.get(module, ()):
            return super().find_class(module, name)
        if module == "app.errors":  # an error, rebuilt as it was (app.errors._rebuild)
            found = getattr(errors, name, None)
            if found is errors._rebuild or (
                isinstance(found, type) and issubclass(found, ServiceError)
            ):
                return found
        raise pickle.UnpicklingError(f"{module}.{name} may not cross between the processes")


def _loads(data: bytes) -> Any:
    return _Loader(io.BytesIO(data)).load()


def _socket(kind: int) -> zmq.asyncio.Socket:
    """A socket that never drops a message (no high-water mark: every one is read) and does not
    linger at close."""
    socket = zmq.asyncio.Context.instance().socket(kind)
    for option in (zmq.SNDHWM, zmq.RCVHWM, zmq.LINGER):
        socket.setsockopt(option, 0)
    return socket


class _Endpoint:
    _socket: zmq.asyncio.Socket | None = None
    _reader: asyncio.Task | None = None

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._socket is not None:
            self._socket.close()


class SessionServer(_Endpoint):
    """In the engine process: answers the workers' calls with ``service``."""

    def __init__(self, service: SessionService, address: str):
        self.service, self.address = service, address
        self._tasks: set[asyncio.Task] = set()
        self._outbox: dict[bytes, list] = defaultdict(list)
        self._flushing = False
        self._unstarted = 0  # tasks created whose call has not yet taken its place in line

    def start(self) -> None:
        # Kept: asyncio.get_running_loop() makes a getpid() system call each time.
        self._loop = asyncio.get_running_loop()
        self._socket = _socket(zmq.ROUTER)
        self._socket.bind(self.address)
        self._reader = self._loop.create_task(self._read(), name="session-server")

    def describe(self) -> tuple[int, str, int]:
        return self.service.capacity, self.service.backend, self.service.max_features

    async def _read(self) -> None:
        while True:
            try:
                identity, payload = await self._socket.recv_multipart()
                calls = _loads(payload)
                for call_id, name, args, keywords in calls:
                    self._call(identity, call_id, name, args, keywords)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # not a worker's: dropped, and the server goes on reading
                log.error("dropped a message on the engine's socket that is no call: %r", exc)

    def _call(self, identity: bytes, call_id: int, name: str, args: tuple, keywords: dict) -> None:
        if name == "describe":
            return self._answer(identity, call_id, True, self.describe())
        if name not in CALLS:
            return self._answer(identity, call_id, False, ServiceError(f"no such call {name!r}"))
        if name == "submit" and not self._unstarted:
            # The hot one: straight into its session's line, no task.
            try:
                future = self.service.submit(*args, **keywords)
            except ServiceError as exc:
                return self._answer(identity, call_id, False, exc)
        else:
            # A task starts on the next turn; until it has, later pushes take one too, so that
            # calls take their places in their sessions' lines in the order they were made.
            self._unstarted += 1
            future = asyncio.ensure_future(self._started(name, args, keywords))
            self._tasks.add(future)
        future.add_done_callback(lambda done: self._finished(identity, call_id, name, done))

    async def _started(self, name: str, args: tuple, keywords: dict) -> Any:
        self._unstarted -= 1
        # The service's changes and chunks take their place in line before their first suspension.
        return await getattr(self.service, name)(*args, **keywords)

    def _finished(self, identity: bytes, call_id: int, name: str, task: asyncio.Future) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return self._answer(identity, call_id, False, ServiceError("the call was cancelled"))
        error = task.exception()
        if error is None:
            return self._answer(identity, call_id, True, task.result())
        if not isinstance(error, ServiceError):
            log.error("the session service failed in %s", name, exc_info=error)
            error = ServiceError("the server failed to handle this request; it has been logged")
        self._answer(identity, call_id, False, error)

    def _answer(self, identity: bytes, call_id: int, ok: bool, value: Any) -> None:
        self._outbox[identity].append((call_id, ok, value))
        if not self._flushing:
            self._flushing = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        outbox, self._outbox = self._outbox, defaultdict(list)
        for identity, answers in outbox.items():
            try:
                self._socket.send_multipart([identity, _dumps(answers)], flags=zmq.NOBLOCK)
            except zmq.ZMQError:  # the worker is gone; its callers went with it
                log.warning("could not answer a worker that went away")


class EngineGone(Exception):
    """The engine process ended before a worker had started."""


def describe(
    address: str, timeout_s: float = 60.0, alive: int | None = None
) -> tuple[int, str, int]:
    """Ask the engine process what it serves, before a worker builds its app (blocking). ``alive``:
    the pipe that ends with the engine process (see :class:`RemoteSessions`): if it ends first,
    :class:`EngineGone` at once, rather than the timeout."""
    context = zmq.Context.instance()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    poller = zmq.Poller()
    poller.register(socket, zmq.POLLIN)
    if alive is not None:
        poller.register(alive, zmq.POLLIN)
    try:
        socket.connect(address)
        socket.send(_dumps([(0, "describe", (), {})]))
        ready = dict(poller.poll(int(timeout_s * 1000)))
        if alive is not None and alive in ready:
            raise EngineGone(ENGINE_GONE)
        if socket not in ready:
            raise RuntimeError(
                f"the engine process at {address} did not answer within {timeout_s:g} s"
            )
        ((_, ok, value),) = _loads(socket.recv())
        if not ok:
            raise value
        return value
    finally:
        socket.close()


class RemoteSessions(_Endpoint, Sessions):
    """In a worker: the engine process's session service, as routes use it (the contract's methods
    not written here are added below, each forwarding its call).

    ``alive``: a pipe's read end whose only write end the engine process holds; it reads as ended
    the moment that process is gone, however it went (SIGKILL included). Then every call waiting
    and every later one is answered 503 at once, readiness fails, and ``on_gone`` is called (the
    worker stops, and exits non-zero: see app.worker)."""

    def __init__(
        self,
        address: str,
        description: tuple[int, str, int],
        alive: int | None = None,
        on_gone: Callable[[], None] | None = None,
    ):
        self.address = address
        # The most input features among the versions served at start (for the chunk limits).
        self.capacity, self.backend, self.max_features = description
        self.alive, self.on_gone = alive, on_gone
        self.gone = False
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._outbox: list[tuple[int, str, tuple, dict]] = []
        self._flushing = False

    async def start(self) -> None:
        # Kept: asyncio.get_running_loop() makes a getpid() system call each time.
        self._loop = asyncio.get_running_loop()
        self._socket = _socket(zmq.DEALER)
        self._socket.connect(self.address)
        self._reader = self._loop.create_task(self._read(), name="remote-sessions")
        if self.alive is not None:
            self._loop.add_reader(self.alive, self._engine_gone)

    def _engine_gone(self) -> None:
        """The engine process's end of the pipe closed (the pipe is never written: readable means
        ended)."""
        asyncio.get_running_loop().remove_reader(self.alive)
        self.gone = True
        log.critical("the engine process is gone: answering 503 to everything and stopping")
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(_gone())
        if self.on_gone is not None:
            self.on_gone()

    def _send(self, name: str, args: tuple, keywords: dict) -> asyncio.Future:
        """The call goes out with this turn's others; the future is its answer."""
        future = self._loop.create_future()
        if self.gone:
            future.set_exception(_gone())
            return future
        call_id = next(self._ids)
        self._pending[call_id] = future  # until its answer comes, even if its caller has gone
        self._outbox.append((call_id, name, args, keywords))
        if not self._flushing:
            self._flushing = True
            self._loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flushing = False
        calls, self._outbox = self._outbox, []
        self._socket.send(_dumps(calls), flags=zmq.NOBLOCK)

    async def _read(self) -> None:
        while True:
            try:
                answers = _loads(await self._socket.recv())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("dropped a message from the engine process that is no answer: %r", exc)
                continue
            for call_id, ok, value in answers:
                future = self._pending.pop(call_id, None)
                if future is None or future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    # -- the contract's calls: each sent as made (see _forwarder), the hot one by hand ---------

    def submit(
        self,
        session_id: str,
        inputs: np.ndarray,
        seq: int | None = None,
        scope: str | None = None,
        transport: str = "http",
        reply: Reply | None = None,
    ) -> asyncio.Future[ChunkResult] | Reply:
        # In line at the engine in the order sent: calls leave in the order they are made.
        future = self._send("submit", (session_id, inputs, seq, scope, transport), {})
        if reply is None:
            return future
        reply.follow(future)
        return reply

    async def unready(self) -> str | None:
        if self.gone:
            return ENGINE_GONE
        return await self._send("unready", (), {})


def _forwarder(name: str) -> Callable[..., Any]:
    """A contract method that sends its call to the engine process: a coroutine function where the
    contract's is one, else a plain function returning the answer's future (``sequence``: sent
    when called, so the engine process places it in line in the order it was made)."""
    declared = getattr(Sessions, name)
    if inspect.iscoroutinefunction(declared):

        async def forward(self: RemoteSessions, *args: Any, **keywords: Any) -> Any:
            return await self._send(name, args, keywords)

    else:

        def forward(self: RemoteSessions, *args: Any, **keywords: Any) -> Any:
            return self._send(name, args, keywords)

    return functools.wraps(declared)(forward)


for _name in CALLS - vars(RemoteSessions).keys():
    setattr(RemoteSessions, _name, _forwarder(_name))
