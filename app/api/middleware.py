"""Around every request: shed load beyond the in-flight limits, and log one line per request.

Two rules keep one tenant's HTTP flood from slowing the others (the counts are app.api.shares',
which the gRPC server of the same process draws on too):

- Shares. The in-flight limit is shared, and each tenant may hold only its share of it, so a flooding
  tenant is shed while the others are still let in. Requests with no key or an unknown one (401,
  or the open pages: the docs and the console's files) hold one share together. The admins hold a share of their own beyond the limit: an
  on-call reset gets through however full the server is. With no keys configured (open dev mode)
  there are no tenants and no shares.
- Held answers. A 401, 429 or 503 is sent ``shed_delay`` after it is decided, and the request gives
  up its slot meanwhile. A flood retries the moment it is answered, ignoring Retry-After; held, each
  of its connections can come back only every ``shed_delay`` instead of every few hundred
  microseconds, so the event loop stays free for the requests let in. At most four times
  ``max_in_flight`` answers are held at once (each keeps its request's buffers, as a request in
  progress does); beyond that they go at once and close their connection.

Plain ASGI (not Starlette's BaseHTTPMiddleware), so it adds no task or copy to the hot path. The log
line has the method, the path without its query string (a browser's WebSocket may carry its key
there), the session id, the status, the latency, the client's address, the tenant (or ``admin``,
``unknown``) and the request id; never a body, never a key. The request id is the caller's
``X-Request-ID`` when it is one (1-128 visible ASCII characters), else one made here, and it goes
back in the response's ``X-Request-ID`` (a WebSocket's: in its handshake answer).
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics
from app.api.auth import bearer_key
from app.api.errors import service_error_response
from app.api.shares import Shares
from app.errors import Unavailable

log = logging.getLogger("app.access")
SESSION_PATH = re.compile(r"^/v1/sessions/([^/]+)")
EXEMPT = ("/healthz", "/readyz", "/metrics")  # probes and scrapers get through a flood
HELD = (401, 429, 503)  # refusals a flood would otherwise retry at once
REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")


def install(app: ASGIApp, shares: Shares) -> None:
    app.add_middleware(Admission, shares=shares)


class Admission:
    def __init__(self, app: ASGIApp, shares: Shares):
        self.app, self.shares = app, shares

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        request_id = _request_id(scope)
        outcome: dict[str, Any] = {}

        async def watch(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start" or kind == "websocket.accept":
                outcome.setdefault("status", message.get("status", 101))
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            elif kind == "websocket.close":
                outcome["close"] = message.get("code", 1000)
            await send(message)

        try:
            if scope["type"] == "http" and scope["path"] not in EXEMPT:
                await self._admit(scope, receive, watch, outcome)
            else:
                await self.app(scope, receive, watch)
        finally:
            route = scope.get("route")
            metrics.REQUEST_SECONDS.labels(
                getattr(route, "path", "unmatched"),
                scope["type"],
                str(outcome.get("status", "none")),
            ).observe(time.perf_counter() - started)
            self._log(scope, outcome, started, request_id)

    async def _admit(
        self, scope: Scope, receive: Receive, send: Send, outcome: dict[str, Any]
    ) -> None:
        shares = self.shares
        party = outcome["party"] = self._party(scope)
        refusal = shares.refusal(party)
        if refusal is not None:
            reason, detail = refusal
            metrics.SHED.labels(reason).inc()
            return await self._answer_later(send, _unavailable(detail, scope["path"]))
        held: list[Message] = []

        async def hold(message: Message) -> None:
            if held or (message["type"] == "http.response.start" and message["status"] in HELD):
                held.append(message)
            else:
                await send(message)

        shares.enter(party)
        try:
            await self.app(scope, receive, hold if shares.shed_delay else send)
        except Exception:
            for message in held:  # a refusal already begun goes out before the error is handled
                await send(message)
            raise
        finally:
            shares.leave(party)
        if held:
            await self._answer_later(send, held)

    def _party(self, scope: Scope) -> str | None:
        return self.shares.party(bearer_key(Headers(scope=scope)))

    async def _answer_later(self, send: Send, messages: list[Message]) -> None:
        if not await self.shares.hold():  # too many held already: now, and the client reconnects
            start = messages[0]
            messages = [
                {**start, "headers": [*start.get("headers", []), (b"connection", b"close")]},
                *messages[1:],
            ]
        for message in messages:
            await send(message)

    def _log(
        self, scope: Scope, outcome: dict[str, Any], started: float, request_id: bytes
    ) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        party = outcome["party"] if "party" in outcome else self._party(scope)
        client = scope.get("client")
        access(
            scope.get("method", "WS"),
            scope["path"],
            outcome.get("status"),
            started,
            f"{client[0]}:{client[1]}" if client else None,
            party,
            request_id,
            close_code=outcome.get("close"),
            kind=scope.get("method", "WEBSOCKET"),
        )


def access(
    method: str,
    path: str,
    status: int | None,
    started: float,
    address: str | None,
    party: str | None,
    request_id: bytes,
    close_code: int | None = None,
    kind: str | None = None,
) -> None:
    """The access log's line for one request (HTTP, WebSocket or gRPC), as text or JSON fields."""
    if not log.isEnabledFor(logging.INFO):
        return
    latency_ms = 1000 * (time.perf_counter() - started)
    # Escaped, so a path with a line break in it cannot forge a log line.
    path = path.encode("unicode_escape").decode("ascii")
    match = SESSION_PATH.match(path)
    tenant = party.removeprefix("tenant:") if party else None
    rid = request_id.decode("ascii")
    log.info(
        "%s %s %s %.2f ms client=%s tenant=%s id=%s",
        method,
        path,
        "-" if status is None else status,
        latency_ms,
        address,
        tenant or "-",
        rid,
        extra={
            "method": kind or method,
            "path": path,
            "session_id": match.group(1) if match else None,
            "status": status,
            "close_code": close_code,
            "latency_ms": round(latency_ms, 3),
            "client": address,
            "tenant": tenant,
            "request_id": rid,
        },
    )


def request_id(given: bytes | None) -> bytes:
    """The caller's X-Request-ID when it is one (1-128 visible ASCII characters), else a new one."""
    if given is not None and REQUEST_ID.fullmatch(given):
        return given
    return secrets.token_hex(8).encode()


def _request_id(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            return request_id(value)
    return request_id(None)


def _unavailable(detail: str, path: str) -> list[Message]:
    """The 503 that the API answers for :class:`Unavailable`, as ASGI messages to send later."""
    response = service_error_response(Unavailable(f"{detail}; retry shortly"), path)
    return [
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        },
        {"type": "http.response.body", "body": response.body},
    ]
