"""What route handlers get from the application: the session service and JSON responses."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from starlette.responses import Response

from app.api.auth import Caller, caller_of
from app.config import Settings
from app.sessions.service import SessionService


# Async on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, a thread hop per
# request on the hot path.
async def _sessions(request: Request) -> SessionService:
    return request.app.state.sessions


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _caller(request: Request) -> Caller:
    return caller_of(request)


Sessions = Annotated[SessionService, Depends(_sessions)]
CurrentCaller = Annotated[Caller, Depends(_caller)]
CurrentSettings = Annotated[Settings, Depends(_settings)]


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status, headers=headers, media_type="application/json")
