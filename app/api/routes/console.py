"""The operations console: its page at /ui, and the small JSON summary it draws from.

The page's files hold no data, so they are served without a key; every figure and action behind
them goes through the public API with the admin key the operator types in.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from app.api.auth import Caller
from app.api.deps import Sessions, admin, json_response
from app.api.documents import stats_document
from app.api.errors import problem
from app.api.schemas import Stats, problems
from app.errors import ServiceError

router = APIRouter()

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Read once: a fixed set of names (vendor/ holds uPlot, unmodified), so no request path ever
# reaches the file system.
FILES = {
    p.relative_to(UI_DIR).as_posix(): (p.read_bytes(), MEDIA_TYPES[p.suffix])
    for p in sorted(UI_DIR.rglob("*"))
    if p.suffix in MEDIA_TYPES
}
# No inline script or style, nothing from elsewhere, not framed: an id that slipped into markup
# could not run, and the page cannot be dressed up by another site.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@router.get(
    "/v1/stats",
    response_model=Stats,
    tags=["operations"],
    responses=problems(401, 403, 503),
    summary="Model, backend, sessions, chunks/s and chunk latency over the last minute (admin)",
)
async def stats(
    request: Request, sessions: Sessions, caller: Annotated[Caller, admin("reading the stats")]
) -> Response:
    try:
        spec = await sessions.default_model()
    except ServiceError:  # several models (none is the default), or none ready yet
        spec = None
    replica = replica_name(request.app.state.settings.port)
    return json_response(stats_document(replica, spec, await sessions.overview()))


def replica_name(port: int) -> str:
    # Behind a load balancer each poll may come from another replica: name the one that answered.
    # Host name and port only (a container's name or id), nothing from the configuration.
    return f"{socket.gethostname()}:{port}"


@router.get("/ui", include_in_schema=False)
async def console_root() -> Response:
    # The page's files are named relative to it, so it lives at /ui/ (and works behind a prefix).
    return RedirectResponse("ui/", status_code=308)


@router.get("/ui/", include_in_schema=False)
async def console_page() -> Response:
    return _file("index.html")


@router.get("/ui/{name:path}", include_in_schema=False)
async def console_file(name: str) -> Response:
    return _file(name)


def _file(name: str) -> Response:
    found = FILES.get(name)
    if found is None:
        return problem(404, f"the console has no file {name!r}", headers=SECURITY_HEADERS)
    body, media_type = found
    return Response(body, media_type=media_type, headers=SECURITY_HEADERS)
