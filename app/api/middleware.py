"""Around every request: shed load beyond the in-flight limits, and log one line per request.

Two limits keep one caller's flood from slowing everyone else. The in-flight limit is shared, and each
party (a tenant, the admins, or one client address for requests without a known key) may hold only
its own share of it, so a flooding tenant is shed while the others are still let in. And a shed
answer (503, or 429 over quota) is held for ``shed_delay`` before it is sent, without holding a slot:
a client that retries at once, ignoring Retry-After, then costs the event loop one timer per retry
instead of a full request every few microseconds, and the requests let in keep their latency.

Plain ASGI (not Starlette's BaseHTTPMiddleware), so it adds no task or copy to the hot path. The log
line has the method, the path without its query string (a browser's WebSocket may carry its key
there), the session id, the status and the latency; never a body, never a key.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from typing import Any

import orjson

from app import metrics
from app.api.errors import problem_document
from app.config import Settings

log = logging.getLogger("app.access")
SESSION_PATH = re.compile(r"^/v1/sessions/([^/]+)")
EXEMPT = ("/healthz", "/readyz", "/metrics")  # probes and scrapers get through a flood
HELD = (429, 503)  # answers that ask the client to come back later


def install(app: Any, settings: Settings) -> None:
    app.add_middleware(Admission, max_in_flight=settings.max_in_flight,
                       max_in_flight_per_tenant=settings.max_in_flight_per_tenant, shed_delay=settings.shed_delay)


class Admission:
    def __init__(self, app: Any, max_in_flight: int, max_in_flight_per_tenant: int, shed_delay: float):
        self.app = app
        self.max_in_flight = max_in_flight
        self.max_per_party = min(max_in_flight_per_tenant, max_in_flight)
        self.shed_delay = shed_delay
        self.in_flight = 0
        self.by_party: Counter[str] = Counter()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        outcome: dict[str, int] = {}

        async def watch(message: dict) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                outcome["status"] = message["status"]
            elif kind == "websocket.accept":
                outcome.setdefault("status", 101)
            elif kind == "websocket.close":
                outcome["close"] = message.get("code", 1000)
            await send(message)

        try:
            if scope["type"] == "http" and scope["path"] not in EXEMPT:
                await self._admit(scope, receive, watch)
            else:
                await self.app(scope, receive, watch)
        finally:
            route = scope.get("route")
            metrics.REQUEST_SECONDS.labels(
                getattr(route, "path", "unmatched"), scope["type"], str(outcome.get("status", "none"))
            ).observe(time.perf_counter() - started)
            self._log(scope, outcome, started)

    async def _admit(self, scope: dict, receive: Any, send: Any) -> None:
        party = _party(scope)
        mine = self.by_party[party]
        if self.in_flight >= self.max_in_flight:
            return await self._shed(send, "server",
                                    f"{self.in_flight} requests are in progress, the server's limit")
        if mine >= self.max_per_party:
            return await self._shed(send, "share",
                                    f"{mine} requests of yours are in progress, your share of the limit")
        held: list[dict] = []

        async def hold(message: dict) -> None:
            if held or (message["type"] == "http.response.start" and message["status"] in HELD):
                held.append(message)
            else:
                await send(message)

        self.in_flight += 1
        self.by_party[party] += 1
        try:
            await self.app(scope, receive, hold if self.shed_delay else send)
        finally:
            self.in_flight -= 1
            self.by_party[party] -= 1
            if not self.by_party[party]:
                del self.by_party[party]
        if held:  # sent once the slot is free again
            await asyncio.sleep(self.shed_delay)
            for message in held:
                await send(message)

    async def _shed(self, send: Any, reason: str, detail: str) -> None:
        metrics.SHED.labels(reason).inc()
        await asyncio.sleep(self.shed_delay)
        body = orjson.dumps(problem_document(
            503, f"{detail}; retry shortly", slug="unavailable", title="Service unavailable",
        ))
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/problem+json"), (b"retry-after", b"1"),
            (b"content-length", str(len(body)).encode()),
        ]})
        await send({"type": "http.response.body", "body": body})

    def _log(self, scope: dict, outcome: dict[str, int], started: float) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        # Escaped, so a path with a line break in it cannot forge a log line.
        path = scope["path"].encode("unicode_escape").decode("ascii")
        match = SESSION_PATH.match(path)
        log.info(
            "%s %s %s %.2f ms",
            scope.get("method", "WS"), path, outcome.get("status", "-"), 1000 * (time.perf_counter() - started),
            extra={
                "method": scope.get("method", "WEBSOCKET"),
                "path": path,
                "session_id": match.group(1) if match else None,
                "status": outcome.get("status"),
                "close_code": outcome.get("close"),
                "latency_ms": round(1000 * (time.perf_counter() - started), 3),
            },
        )


def _party(scope: dict) -> str:
    """Whose share a request counts against: its key's tenant, or else its client address."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, key = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                party = scope["app"].state.keys.party(key.strip())
                if party is not None:
                    return party
            break
    client = scope.get("client")
    return f"client:{client[0]}" if client else "client:unknown"

