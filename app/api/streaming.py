"""Streams over WebSocket, served by picows rather than through ASGI.

``WS /v1/sessions/{session_id}/stream``: a binary message is one chunk (float32 little-endian, T x F
row-major) answered by the outputs in the same form; a text message is a JSON chunk or command
answered in JSON. Messages are handled concurrently (they join the engine's batches like HTTP
chunks) but answered in the order they came. At most ``ws_max_in_flight`` messages of one
connection are in flight: beyond that the server stops reading, so a fast sender is slowed down
rather than queued without bound.

Why not ASGI: a message through uvicorn's WebSocket protocol, Starlette and the route costs about
84 µs of CPU, most of a live stream's budget; picows (a Cython WebSocket protocol) parses and
frames one in about 17 µs (measured side by side; docs/performance.md has this server's figures).
The HTTP server stays uvicorn's: its HTTP protocol parses the upgrade request, our connection
guard has counted the connection, and
:class:`Upgrade` (uvicorn's ``ws`` protocol class) hands the socket to picows, which answers the
handshake. So the stream keeps the port, the connection cap, the header limits, and the checks
the ASGI route had, done here in the same order: the Origin (403 before the upgrade), the key
(close 4401 after it), the session (close 4404, or 1013 while its version loads); no compression
is agreed, a frame marked compressed closes the stream (1002), and a message over the limit closes
it unread (1009). A binary chunk goes straight into its session's line with its reply a future
(no task of its own); a text message gets a task, and binary frames after it wait in one too until
that task has put its work in line, so that order holds.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import orjson
from picows import (
    WSAutoPingStrategy,
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)

from app import metrics
from app.api.auth import KeyRing, bearer_key
from app.api.documents import chunk_body, session_info, state_document
from app.api.errors import service_error_response
from app.api.middleware import access, request_id
from app.api.origins import Origins
from app.api.parsing import ChunkLimits, chunk_from_document, load_json, parse_frame
from app.config import Settings
from app.errors import (
    InvalidInput,
    ServiceError,
    SessionNotFound,
    TooLarge,
    Unauthorized,
)
from app.sessions import ChunkResult, Reply, Sessions

log = logging.getLogger(__name__)
# picows logs each connection at INFO and a client's malformed frame at ERROR; neither is the
# server's fault, and the access log has every stream.
logging.getLogger("picows").setLevel(logging.CRITICAL)

PATH = re.compile(r"^/v1/sessions/([^/]+)/stream$")
ROUTE = "/v1/sessions/{session_id}/stream"
CLOSE_UNKNOWN_SESSION = 4404
CLOSE_UNAUTHORIZED = 4401
CLOSE_TRY_AGAIN = 1013
CLOSE_RESTART = 1012
CLOSE_WAIT_S = 1.0  # how long a close waits for the peer's close frame
PROTOCOL_ERROR_WAIT_S = 0.1  # ... when the peer broke the protocol


class StreamContext:
    """What every stream of one app needs: its sessions, settings, limits, keys and origins."""

    def __init__(self, app: Any, settings: Settings):
        self.app, self.settings = app, settings
        self.origins = Origins(settings.allowed_origin_list)

    @property
    def sessions(self) -> Sessions:
        return self.app.state.sessions

    @property
    def limits(self) -> ChunkLimits:
        return self.app.state.chunk_limits

    @property
    def keys(self) -> KeyRing:
        return self.app.state.keys


def protocol_class(app: Any, settings: Settings) -> Callable[..., asyncio.BufferedProtocol]:
    """uvicorn's ``ws`` option: the protocol an upgraded connection of ``app`` continues on."""
    context = StreamContext(app, settings)

    def upgrade(config: Any, server_state: Any, app_state: Any) -> Upgrade:
        return Upgrade(context, server_state.connections)

    return upgrade


class Upgrade(asyncio.BufferedProtocol):
    """A connection uvicorn has upgraded: picows's protocol inside, counted among the server's
    connections (its cap and its shutdown). uvicorn hands over the request's head with
    ``data_received``; later reads go to picows's buffer directly."""

    def __init__(self, context: StreamContext, connections: set):
        from picows.picows import WSProtocol  # picows's own server builds it the same way

        self.context, self.connections = context, connections
        self.stream: Stream | None = None
        limits, settings = context.limits, context.settings
        self.inner = WSProtocol(
            None,  # host and port: a client's
            None,  # path: a client's
            False,  # server side
            self._route,
            logging.getLogger("picows.server"),
            True,  # disconnect when on_ws_frame raises
            settings.header_timeout,
            True,  # ping an idle peer, to notice dead ones
            settings.ws_ping_interval,
            settings.ws_ping_timeout,
            WSAutoPingStrategy.PING_WHEN_IDLE,
            True,  # answer pings
            limits.message_bytes,  # a larger frame closes the stream (1009) unread
            None,  # extra headers: ours come with the response
            16 * 1024,
        )

    # -- asyncio.BufferedProtocol, forwarded -----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connections.add(self)
        self.transport = transport
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            buffer = self.inner.get_buffer(-1)
            size = min(len(buffer), len(view))
            if not size:  # no room: a head larger than picows reads (the guard caps it before)
                self.transport.close()
                return
            buffer[:size] = view[:size]
            self.inner.buffer_updated(size)
            view = view[size:]

    def get_buffer(self, sizehint: int) -> Any:
        return self.inner.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.inner.buffer_updated(nbytes)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.inner.connection_lost(exc)

    def shutdown(self) -> None:
        """The server is stopping: a stream answers what it has in flight, then closes (1012)."""
        if self.stream is not None:
            self.stream.shutdown()
        else:
            self.transport.close()

    # -- the handshake -------------------------------------------------------------------------

    def _route(self, request: WSUpgradeRequest) -> Any:
        """picows's listener factory: the stream's listener, or the HTTP answer that refuses it."""
        parts = urlsplit(request.path.decode("latin-1"))
        match = PATH.match(parts.path)
        if match is None:
            return None  # 404
        rid = request_id(_header(request, "x-request-id"))
        peer = self.transport.get_extra_info("peername")
        address = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else None
        headers = {"x-request-id": rid.decode("ascii")}
        origin = request.headers.get("origin")
        if origin is not None and not self.context.origins.allows(
            origin, request.headers.get("host")
        ):
            error = self.context.origins.refusal(origin)
            response = service_error_response(error)
            access("WS", parts.path, response.status_code, time.perf_counter(), address, None, rid)
            headers.update(
                (name, value)
                for name, value in response.headers.items()
                if name != "content-length"  # picows writes its own
            )
            return WSUpgradeResponseWithListener(
                WSUpgradeResponse.create_error_response(
                    response.status_code, response.body, headers
                ),
                None,
            )
        key = bearer_key(request.headers) or _first(parse_qs(parts.query).get("token"))
        self.stream = Stream(
            self.context,
            unquote(match.group(1)),
            key,
            path=parts.path,
            address=address,
            request_id=rid,
        )
        return WSUpgradeResponseWithListener(
            WSUpgradeResponse.create_101_response(headers), self.stream
        )


def _header(request: WSUpgradeRequest, name: str) -> bytes | None:
    value = request.headers.get(name)
    return value.encode("latin-1") if value is not None else None


def _first(values: list[str] | None) -> str | None:
    return values[0] if values else None


Answer = tuple[str, Any]  # ("bytes", payload) or ("text", payload)


class Stream(WSListener):
    """One stream's messages, in order: chunks into the session's line, answers back in order."""

    def __init__(
        self,
        context: StreamContext,
        session_id: str,
        key: str | None,
        *,
        path: str,
        address: str | None,
        request_id: bytes,
    ):
        self.context, self.session_id, self.key = context, session_id, key
        self.path, self.address, self.request_id = path, address, request_id
        self.started = time.perf_counter()
        self.sessions = context.sessions
        self.limits = context.limits
        self.max_in_flight = context.settings.ws_max_in_flight
        self.scope: str | None = None
        self.party: str | None = None
        self.features: int | None = None  # known once the session is found
        self.transport: WSTransport | None = None
        # In message order: a task (a text message, or a binary one waiting behind it) or the
        # engine's reply to a binary chunk.
        self.replies: deque[asyncio.Future | Reply] = deque()
        # Messages read but not taken yet: before the session is found, and beyond the messages in
        # flight allowed (picows hands over every frame of a read at once; reading pauses too).
        self.waiting: deque[tuple[WSMsgType, bytes]] = deque()
        self.fragments: list[bytes] = []
        self.fragment_type: WSMsgType | None = None
        self._unstarted = 0  # text tasks created whose work has not yet taken its place in line
        self._paused = False  # reading paused: too much in flight, or answers not being read
        self._unread = False  # the peer does not read its answers (the socket's buffer is full)
        self._closing = False  # no more messages are taken
        self._draining = False  # the server stops: close once the answers in flight are out
        self._close_code: int | None = None
        self._lookup: asyncio.Task | None = None

    # -- picows's callbacks ---------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        try:
            caller = self.context.keys.identify(self.key)
        except Unauthorized as exc:
            self._close(CLOSE_UNAUTHORIZED, exc.detail)
            return
        self.scope = caller.scope
        self.party = self.context.keys.party(self.key)
        self._lookup = asyncio.ensure_future(self._find_session())

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.CLOSE:
            if not self._closing:
                self._closing = True
                transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if kind in (WSMsgType.PING, WSMsgType.PONG) or self._closing:
            return
        if frame.rsv1:  # compression was never agreed: nothing is inflated
            self._close(
                WSCloseCode.PROTOCOL_ERROR.value,
                "compression was not agreed",
                wait=PROTOCOL_ERROR_WAIT_S,
            )
            return
        if kind == WSMsgType.CONTINUATION:
            if self.fragment_type is None:
                self._close(
                    WSCloseCode.PROTOCOL_ERROR.value,
                    "a continuation of nothing",
                    wait=PROTOCOL_ERROR_WAIT_S,
                )
                return
            self.fragments.append(frame.get_payload_as_bytes())
            if sum(map(len, self.fragments)) > self.limits.message_bytes:
                self._close(
                    WSCloseCode.MESSAGE_TOO_BIG.value,
                    "the message is too big",
                    wait=PROTOCOL_ERROR_WAIT_S,
                )
                return
            if frame.fin:
                kind, payload = self.fragment_type, b"".join(self.fragments)
                self.fragments, self.fragment_type = [], None
                self._message(kind, payload)
            return
        if not frame.fin:
            self.fragment_type, self.fragments = kind, [frame.get_payload_as_bytes()]
            return
        self._message(kind, frame.get_payload_as_bytes())

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._closing = True
        if self._lookup is not None:
            self._lookup.cancel()
        metrics.REQUEST_SECONDS.labels(ROUTE, "websocket", "101").observe(
            time.perf_counter() - self.started
        )
        access(
            "WS",
            self.path,
            101,
            self.started,
            self.address,
            self.party,
            self.request_id,
            close_code=self._close_code,
            kind="WEBSOCKET",
        )

    # -- messages --------------------------------------------------------------------------

    async def _find_session(self) -> None:
        try:
            spec = await self.sessions.session_model(self.session_id, self.scope)
        except SessionNotFound as exc:
            return self._close(CLOSE_UNKNOWN_SESSION, exc.detail)
        except ServiceError as exc:
            return self._close(CLOSE_TRY_AGAIN, exc.detail)
        # Binary chunks are cut into rows of this version's features; a session moves only to
        # versions that take the same (see app.sessions.versions), and the engine checks each
        # chunk again.
        self.features = spec.input_features
        if self._paused:
            self._resume()
        else:
            self._take()

    def _message(self, kind: WSMsgType, payload: bytes) -> None:
        if self.features is None or self._paused:
            self.waiting.append((kind, payload))
            if len(self.waiting) >= self.max_in_flight and not self._paused:
                self._paused = True  # the session is still being looked up: read no more
                self.transport.underlying_transport.pause_reading()
        else:
            self._start(kind, payload)

    def _take(self) -> None:
        """Start the messages waiting, in order, as far as the limit in flight allows."""
        while self.waiting and not self._paused and not self._closing:
            self._start(*self.waiting.popleft())

    def _start(self, kind: WSMsgType, payload: bytes) -> None:
        if kind == WSMsgType.BINARY and not self._unstarted:
            reply = Reply(self._answered)
            self.replies.append(reply)
            self._binary(payload, reply)
        else:
            task = asyncio.ensure_future(
                self._binary_later(payload) if kind == WSMsgType.BINARY else self._text(payload)
            )
            self._unstarted += 1
            self.replies.append(task)
            task.add_done_callback(self._answered)
        if len(self.replies) >= self.max_in_flight and not self._paused:
            self._paused = True  # backpressure: read no more until answers go out
            self.transport.underlying_transport.pause_reading()

    def _binary(self, payload: bytes, reply: Reply) -> None:
        """A binary chunk into its session's line at once: no task, no future, ``reply`` settled
        by the engine (or now, with the error). (Only while no text message before it is still
        on its way into the line.)"""
        try:
            inputs = parse_frame(payload, self.features, self.limits.steps)
            self.sessions.submit(
                self.session_id, inputs, scope=self.scope, transport="websocket", reply=reply
            )
        except ServiceError as exc:
            reply.set_result(_error(exc))

    async def _binary_later(self, payload: bytes) -> Answer | ChunkResult:
        self._unstarted -= 1
        try:
            inputs = parse_frame(payload, self.features, self.limits.steps)
            return await self.sessions.submit(
                self.session_id, inputs, scope=self.scope, transport="websocket"
            )
        except ServiceError as exc:
            return _error(exc)

    async def _text(self, payload: bytes) -> Answer:
        # Every branch below reaches the session's line before its first suspension: once this task
        # has started, binary frames after it may go straight in.
        self._unstarted -= 1
        try:
            limit = self.limits.json_bytes
            if len(payload) > limit:
                raise TooLarge(
                    f"the message is over {limit} bytes, the most a chunk of this model may take"
                )
            try:
                payload.decode()
            except UnicodeDecodeError:
                raise InvalidInput("a text message must be UTF-8") from None
            document = load_json(payload)
            if isinstance(document, dict) and "op" in document:
                return "text", await self._command(document["op"])
            chunk = chunk_from_document(document, None, self.limits.steps, payload)
            result = await self.sessions.submit(
                self.session_id, chunk.inputs, chunk.seq, self.scope, transport="websocket"
            )
        except ServiceError as exc:
            return _error(exc)
        return "text", chunk_body(result).decode()

    async def _command(self, op: Any) -> str:
        if op == "reset":
            record = await self.sessions.reset(self.session_id, self.scope)
            return orjson.dumps({"op": "reset", "session": session_info(record)}).decode()
        if op == "state":
            state = state_document(*await self.sessions.state(self.session_id, self.scope))
            return orjson.dumps(state, option=orjson.OPT_SERIALIZE_NUMPY).decode()
        raise InvalidInput(f"unknown op {op!r}; the ops are 'reset' and 'state'")

    # -- answers ---------------------------------------------------------------------------

    def _answered(self, _: asyncio.Future | Reply) -> None:
        """Send every answer now due, in message order; after a disconnect, let the work finish
        unanswered (a chunk that was applied stays applied: the session is consistent either
        way)."""
        replies = self.replies
        while replies and replies[0].done():
            self._send(replies.popleft())
        self._resume()
        if self._draining and not replies:
            self._draining = False
            self._close(CLOSE_RESTART, "the server is restarting")

    def _resume(self) -> None:
        """Take messages and read again, once there is room in flight and the peer reads."""
        if (
            self._paused
            and len(self.replies) < self.max_in_flight
            and not self._unread
            and not self._closing
        ):
            self._paused = False
            self._take()
            if not self._paused:
                self.transport.underlying_transport.resume_reading()

    def pause_writing(self) -> None:
        """The answers pile up unread: read no more until they drain, or a client that sends
        and never reads would grow the server's buffer without end."""
        self._unread = True
        if not self._paused and not self._closing:
            self._paused = True
            self.transport.underlying_transport.pause_reading()

    def resume_writing(self) -> None:
        self._unread = False
        self._resume()

    def _send(self, done: asyncio.Future | Reply) -> None:
        try:
            found = done.result()
        except ServiceError as exc:  # a binary chunk the engine refused
            found = _error(exc)
        except (Exception, asyncio.CancelledError):
            log.exception("a WebSocket message of session %r failed", self.session_id)
            found = _error(ServiceError("the server failed to handle this message"))
        transport = self.transport
        if transport is None or transport.is_disconnected or transport.is_close_frame_sent:
            return
        if isinstance(found, ChunkResult):  # a binary chunk's answer
            transport.send(WSMsgType.BINARY, found.outputs.astype("<f4", copy=False).tobytes())
        elif found[0] == "bytes":
            transport.send(WSMsgType.BINARY, found[1])
        else:
            transport.send(WSMsgType.TEXT, found[1].encode())

    def _close(self, code: int, reason: str, wait: float = CLOSE_WAIT_S) -> None:
        """Send the close frame, then wait (``wait`` seconds at most) for the peer's: the socket
        keeps reading, and drops what comes, meanwhile. Closing a socket with unread data in it
        sends a reset, which can destroy the answers and the close frame before the peer reads
        them (a client still sending when the server stops). A peer that broke the protocol is
        given a tenth of a second."""
        self._closing = True
        self._close_code = code
        transport = self.transport
        if transport is None or transport.is_disconnected:
            return
        # A close reason fits in 123 bytes of UTF-8 (a session id may be longer).
        transport.send_close(code, reason.encode()[:123].decode(errors="ignore").encode())
        if self._paused:
            self._paused = False
            transport.underlying_transport.resume_reading()
        asyncio.get_running_loop().call_later(wait, transport.disconnect)

    def shutdown(self) -> None:
        """Read no more; answer what is in flight, then close (1012, the server restarts)."""
        if self._closing or self.transport is None:
            return
        self._closing = True
        if not self._paused:
            self._paused = True
            self.transport.underlying_transport.pause_reading()
        if self.replies:
            self._draining = True
        else:
            self._close(CLOSE_RESTART, "the server is restarting")


def _error(exc: ServiceError) -> Answer:
    return "text", orjson.dumps(
        {"op": "error", "status": exc.status, "detail": exc.detail, **exc.extra}
    ).decode()
