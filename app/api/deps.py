"""What route handlers get from the application: the sessions layer (as its contract), the caller,
the settings, the admin-only dependency, and JSON responses."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from starlette.responses import Response

from app.api.auth import Caller, caller_of
from app.config import Settings
from app.sessions import Sessions as SessionsContract


# Async on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, a thread hop per
# request on the hot path.
async def _sessions(request: Request) -> SessionsContract:
    return request.app.state.sessions


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _caller(request: Request) -> Caller:
    return caller_of(request)


# The sessions layer (this process's service, or the engine process's through a worker's
# RemoteSessions): routes see only the contract.
Sessions = Annotated[SessionsContract, Depends(_sessions)]
CurrentCaller = Annotated[Caller, Depends(_caller)]


def admin(doing: str) -> Any:
    """The dependency of a route for admins only: the caller, once :meth:`Caller.require_admin`
    has let it through (403 otherwise, before anything else of the request is read). Use as
    ``caller: Annotated[Caller, admin("listing sessions")]``."""

    async def admin_caller(request: Request) -> Caller:
        caller = caller_of(request)
        caller.require_admin(doing)
        return caller

    return Depends(admin_caller)


CurrentSettings = Annotated[Settings, Depends(_settings)]


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status, headers=headers, media_type="application/json")
