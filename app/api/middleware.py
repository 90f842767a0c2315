"""Around every request: shed load beyond the in-flight limit, and log one line per request.

Plain ASGI (not Starlette's BaseHTTPMiddleware), so it adds no task or copy to the hot path. The log
line has the method, the path without its query string (a browser's WebSocket may carry its key
there), the session id, the status and the latency; never a body, never a key.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import orjson

from app import metrics
from app.api.errors import problem_document

log = logging.getLogger("app.access")
SESSION_PATH = re.compile(r"^/v1/sessions/([^/]+)")
EXEMPT = ("/healthz", "/readyz", "/metrics")  # probes and scrapers get through a flood


class Admission:
    def __init__(self, app: Any, max_in_flight: int):
        self.app = app
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        outcome: dict[str, int] = {}
        counted = scope["type"] == "http" and scope["path"] not in EXEMPT
        if counted and self.in_flight >= self.max_in_flight:
            await _shed(send, self.in_flight)
            outcome["status"] = 503
            return self._log(scope, outcome, started)

        async def watch(message: dict) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                outcome["status"] = message["status"]
            elif kind == "websocket.accept":
                outcome.setdefault("status", 101)
            elif kind == "websocket.close":
                outcome["close"] = message.get("code", 1000)
            await send(message)

        if counted:
            self.in_flight += 1
        try:
            await self.app(scope, receive, watch)
        finally:
            if counted:
                self.in_flight -= 1
            route = scope.get("route")
            metrics.REQUEST_SECONDS.labels(
                getattr(route, "path", "unmatched"), scope["type"], str(outcome.get("status", "none"))
            ).observe(time.perf_counter() - started)
            self._log(scope, outcome, started)

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


async def _shed(send: Any, in_flight: int) -> None:
    body = orjson.dumps(problem_document(
        503, f"{in_flight} requests are in progress, the server's limit; retry shortly",
        slug="unavailable", title="Service unavailable",
    ))
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/problem+json"), (b"retry-after", b"1"),
        (b"content-length", str(len(body)).encode()),
    ]})
    await send({"type": "http.response.body", "body": body})
