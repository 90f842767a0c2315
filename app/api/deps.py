"""What route handlers get from the application: the session service and JSON responses."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import Depends, Request
from starlette.responses import Response

from app.api.auth import Caller, caller_of
from app.config import Settings
from app.sessions.service import ChunkResult, SessionService


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


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status, headers=headers, media_type="application/json")


def chunk_body(result: ChunkResult) -> bytes:
    """A chunk's answer as JSON: the same bytes for the same answer, so a replay is byte for byte
    what the first answer was (outputs are float32, written in float32's shortest form)."""
    return orjson.dumps(
        {
            "session_id": result.session_id,
            "seq": result.seq,
            "steps": result.steps,
            "outputs": result.outputs,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
