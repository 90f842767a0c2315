"""Which web pages may drive this server: its own, and the origins an operator allows.

A browser lets any page send requests to any address, the machine's own loopback included, and
carries the answers back only under CORS. So a page on ``evil.example`` could create sessions,
push chunks and reset streams on a server on 127.0.0.1 (a form or a ``no-cors`` fetch, and
WebSockets, which CORS does not cover at all). Browsers name the page in an ``Origin`` header on
every such request; programs (curl, httpx, the client) send none. So: a request with no ``Origin``
passes; one whose origin is this server's own host (the console) or in ``--allowed-origins``
passes; any other is refused, 403 for HTTP and a refused handshake for a WebSocket, before any
route runs. Pages on allowed origins also get CORS headers (Starlette's ``CORSMiddleware``), so
they can read the answers.

Plain ASGI, one scan of the request's headers: it sits on the hot path.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import service_error_response
from app.config import Settings
from app.errors import Forbidden

EXPOSED = ["Location", "Retry-After", "X-Replayed", "WWW-Authenticate"]


def install(app: ASGIApp, settings: Settings) -> None:
    allowed = settings.allowed_origin_list
    if allowed:
        # Added first, so it runs inside the check: a preflight from an origin not allowed is refused.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=allowed,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=EXPOSED,
            max_age=600,
        )
    app.add_middleware(SameOrigin, allowed=allowed)


class Origins:
    """Which web origins may call: the allowed ones, and the server's own pages."""

    def __init__(self, allowed: list[str]):
        self.any = "*" in allowed
        self.allowed = {origin.rstrip("/").lower() for origin in allowed}

    def allows(self, origin: str, host: str | None) -> bool:
        if self.any:
            return True
        origin = origin.strip().lower()
        if origin in self.allowed:
            return True
        # The server's own pages: the origin names the host (and port) the browser asked for.
        # The scheme is not compared: behind a proxy that ends TLS the server cannot see it.
        netloc = urlsplit(origin).netloc if "://" in origin else None
        return bool(netloc) and host is not None and netloc == host.strip().lower()

    def refusal(self, origin: str) -> Forbidden:
        shown = origin.encode("unicode_escape").decode("ascii")[:200]
        return Forbidden(
            f"requests from pages of {shown} are not allowed here; the server's operator can allow "
            "that origin with --allowed-origins"
        )


class SameOrigin:
    def __init__(self, app: ASGIApp, allowed: list[str]):
        self.app = app
        self.origins = Origins(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # WebSockets never come here: app.api.streaming checks their origin with the same rule.
        if scope["type"] == "http" and not self.origins.any:
            origin = host = None
            for name, value in scope["headers"]:
                if name == b"origin":
                    origin = value.decode("latin-1")
                elif name == b"host":
                    host = value.decode("latin-1")
            if origin is not None and not self.origins.allows(origin, host):
                return await self._refuse(scope, send, origin)
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, send: Send, origin: str) -> None:
        response = service_error_response(self.origins.refusal(origin))
        await response(scope, _no_receive, send)


async def _no_receive():  # the refusal reads no body
    return {"type": "http.disconnect"}
