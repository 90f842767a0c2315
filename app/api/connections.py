"""HTTP/1.1 connections: a size limit and a deadline for every request's headers, and a cap on open
connections, whatever parser serves them.

Why by hand: uvicorn's httptools protocol (the one ``uvicorn[standard]`` picks) buffers headers
without limit and starts no timer before they are complete (``h11_max_incomplete_event_size``
applies to h11 alone), neither of its protocols closes a connection that never sends a request,
and nothing caps how many are open, so idle sockets can take every file descriptor. No maintained
server option does these three, so :func:`protocol_class` wraps whichever protocol uvicorn would
use, hooking only what both offer:

- A request's headers must arrive whole within ``header_timeout`` of its first byte (or of the
  connection opening): else 408, and the connection closes. An idle kept-alive connection is
  closed by uvicorn after its keep-alive timeout.
- They may take at most ``max_header_bytes``: else 431 as soon as that is passed, without
  buffering the rest.
- At most ``max_connections`` connections (WebSockets included) are open; one beyond is answered
  503 at once and closed, holding nothing.
- A body still arriving once its answer has gone out (the app answered 413 from its declared
  length, or 401, without reading it) is dropped as it comes, and the connection stays usable, but
  it too must end within ``header_timeout``: else the connection closes.

Each refusal is a problem document sent with ``Connection: close``; the connection then reads and
drops what the client is still sending, briefly and boundedly, so that it sees the answer rather
than a reset (a lingering close, as nginx does).
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from app import metrics
from app.api.errors import service_error_response
from app.config import Settings
from app.errors import HeadersTooLarge, RequestTimeout, ServiceError, Unavailable

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed: h11 only
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

DEFAULT_MAX_CONNECTIONS = 4096
RESERVED_FILES = 128  # descriptors kept for everything but client connections: Redis, logs, files
LINGER_S, LINGER_BYTES = 1.0, 1024 * 1024


def max_connections(settings: Settings, transports: int = 1) -> int:
    """``--max-connections``, or the default, for each of the ``transports`` this process listens
    on (HTTP, and gRPC where it is served in the same process): together never more than the files
    this process may open, so the descriptor budget is split between them."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = settings.max_connections or DEFAULT_MAX_CONNECTIONS
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, (soft - RESERVED_FILES) // transports))


def protocol_class(settings: Settings, transports: int = 1) -> type[asyncio.Protocol]:
    """The HTTP/1.1 protocol uvicorn runs each connection with, guarded as the module says."""
    use_h11 = settings.http == "h11" or (settings.http == "auto" and HttpToolsProtocol is None)
    if settings.http == "httptools" and HttpToolsProtocol is None:
        raise RuntimeError("--http httptools, but httptools is not installed")
    guard = _H11Guard if use_h11 else _HttpToolsGuard  # noqa: F821 (defined when httptools is)
    options = {
        "max_header_bytes": settings.max_header_bytes,
        "header_timeout": settings.header_timeout,
        "max_connections": max_connections(settings, transports),
    }
    return type(guard.__name__, (guard,), options)


class _Guard:
    """Mixed into uvicorn's protocol; the subclasses below say when headers are awaited and done."""

    max_header_bytes: int
    header_timeout: float
    max_connections: int
    # What uvicorn's protocols have, for the type checker.
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    connections: set
    cycle: Any

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        connections = self.connections
        metrics.refreshing("connections", lambda: metrics.CONNECTIONS.set(len(connections)))
        if len(self.connections) >= self.max_connections:
            metrics.CONNECTIONS_REFUSED.labels("limit").inc()
            # Closed at once, not lingering: its descriptor is what the limit keeps free.
            _answer(
                transport,
                Unavailable(
                    f"the server holds {self.max_connections} connections, its limit; retry shortly"
                ),
            )
            # This one never started: nothing to clean up.
            transport.set_protocol(asyncio.Protocol())
            transport.close()
            return
        self._headers_done = 0  # requests whose headers are complete, on this connection
        self._header_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def data_received(self, data: bytes) -> None:
        awaiting, done = self._awaiting_headers(), self._headers_done
        super().data_received(data)  # type: ignore[misc]
        if (
            self.transport.is_closing() or self.transport.get_protocol() is not self
        ):  # closed, or a WebSocket now
            self._disarm()
        elif self._headers_done != done:
            pass  # these bytes ended a request's headers (see _headers_complete)
        elif awaiting:
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                metrics.CONNECTIONS_REFUSED.labels("headers_too_large").inc()
                self._refuse(
                    HeadersTooLarge(f"the request's headers exceed {self.max_header_bytes} bytes")
                )
            elif self._timer is None:
                self._arm()
        elif self.cycle is not None and self.cycle.response_complete:
            # A body still coming after its answer (a 413 from its declared length, a 401): the
            # parser drops it as it comes, and the connection stays usable once it has ended, but
            # it may take --header-timeout at most, as headers may: no endless trickle.
            if self._awaiting_headers():
                self._disarm()  # it ended
            elif self._timer is None:
                self._arm()

    def _headers_complete(self) -> None:
        """Called by the parser's hook as a request's headers end (a WebSocket's too)."""
        self._headers_done += 1
        self._header_bytes = 0
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        self._timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _headers_late(self) -> None:
        self._timer = None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm()  # the next request's headers wait behind an answer in progress: not late yet
            return
        metrics.CONNECTIONS_REFUSED.labels("header_timeout").inc()
        if not self._awaiting_headers():  # a refused body still coming: it was answered already
            self._linger()
        elif self._header_bytes:
            self._refuse(
                RequestTimeout(
                    f"the request's headers did not arrive within {self.header_timeout:g} s"
                )
            )
        else:  # a connection that never sent anything: nobody to answer
            self.transport.close()

    def _refuse(self, error: ServiceError) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            self._disarm()
            self.transport.close()  # an answer is in progress: no second one in the middle of it
        else:
            _answer(self.transport, error)
            self._linger()

    def _linger(self) -> None:
        """Close after what is written, reading and dropping what still comes for a moment (a
        second, a megabyte, at most): a socket closed with unread data sends a reset, which can
        destroy the answer before the client reads it. It still counts as a connection meanwhile."""
        self._disarm()
        self._unset_keepalive_if_required()
        self.connections.discard(self)
        self.transport.set_protocol(_Linger(self.transport, self.connections))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        else:
            self.transport.close()

    def _awaiting_headers(self) -> bool:
        raise NotImplementedError


class _H11Guard(_Guard, H11Protocol):
    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:
            self._headers_complete()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._headers_complete()
        super().handle_websocket_upgrade(event)

    def _awaiting_headers(self) -> bool:
        return self.conn.their_state is not h11.SEND_BODY


if HttpToolsProtocol is not None:

    class _HttpToolsGuard(_Guard, HttpToolsProtocol):
        _in_body = False

        def on_headers_complete(self) -> None:
            self._headers_complete()
            self._in_body = True
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._in_body = False
            super().on_message_complete()

        def _awaiting_headers(self) -> bool:
            return not self._in_body


def _answer(transport: asyncio.Transport, error: ServiceError) -> None:
    """Write ``error`` as a whole HTTP/1.1 response that closes the connection."""
    response = service_error_response(error)
    head = [
        f"HTTP/1.1 {response.status_code} {error.title}".encode(),
        *(name + b": " + value for name, value in response.raw_headers),
        b"connection: close",
    ]
    transport.write(b"\r\n".join(head) + b"\r\n\r\n" + response.body)


class _Linger(asyncio.Protocol):
    def __init__(self, transport: asyncio.Transport, connections: set):
        self.transport, self.connections, self.dropped = transport, connections, 0
        self.timer = asyncio.get_running_loop().call_later(LINGER_S, transport.close)
        connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.dropped += len(data)
        if self.dropped > LINGER_BYTES:
            self.transport.close()

    def eof_received(self) -> bool:
        self.transport.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.cancel()
        self.connections.discard(self)

    def shutdown(self) -> None:  # the server is stopping
        self.transport.close()
