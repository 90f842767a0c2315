"""The hot path: one chunk of a session's sequence in, the model's outputs for it out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.auth import caller_of
from app.api.documents import chunk_body
from app.api.parsing import ChunkLimits, parse_chunk, read_body
from app.api.schemas import ChunkRequest, ChunkResponse, json_body, problems
from app.sessions import Sessions

router = APIRouter(prefix="/v1/sessions", tags=["chunks"])


@router.post(
    "/{session_id}/chunks",
    response_model=ChunkResponse,
    responses={
        200: {
            "headers": {
                "X-Replayed": {
                    "description": "true when this answers a repeated seq",
                    "schema": {"type": "string"},
                }
            }
        },
        **problems(400, 401, 404, 409, 413, 415, 422, 503),
    },
    openapi_extra=json_body(ChunkRequest),
    summary="Push a chunk: T time steps continue the session's sequence",
)
async def push_chunk(session_id: str, request: Request) -> Response:
    # The application's state is read directly, not through Depends: this is the hottest route.
    sessions: Sessions = request.app.state.sessions
    limits: ChunkLimits = request.app.state.chunk_limits
    caller = caller_of(request)
    body = await read_body(request, limits.json_bytes)
    # Any count of features here: the engine checks it against the model version the session runs.
    chunk = parse_chunk(body, None, limits.steps)
    result = await sessions.submit(session_id, chunk.inputs, chunk.seq, caller.scope)
    headers = {"X-Replayed": "true"} if result.replayed else None
    return Response(chunk_body(result), headers=headers, media_type="application/json")
