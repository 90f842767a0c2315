"""Creating, reading, resetting, deleting and listing sessions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.api.auth import Caller
from app.api.deps import CurrentCaller, CurrentSettings, Sessions, admin, json_response
from app.api.documents import session_info
from app.api.parsing import load_json, read_body, validated
from app.api.schemas import CreateSession, SessionInfo, SessionList, json_body, problems

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


@router.post(
    "",
    status_code=201,
    response_model=SessionInfo,
    responses=problems(400, 401, 404, 409, 413, 415, 422, 429, 503),
    openapi_extra=json_body(CreateSession, required=False),
    summary="Create a session (one state row)",
)
async def create_session(
    request: Request, sessions: Sessions, settings: CurrentSettings, caller: CurrentCaller
) -> Response:
    body = await read_body(request, settings.max_body_bytes)
    options = _create_options(body)
    record = await sessions.create(
        options.session_id, options.ttl_s, caller.tenant, options.model, options.version
    )
    location = f"/v1/sessions/{record.session_id}"
    return json_response(session_info(record), 201, headers={"Location": location})


@router.get(
    "",
    response_model=SessionList,
    responses=problems(401, 403, 422, 503),
    summary="List sessions (admin)",
)
async def list_sessions(
    sessions: Sessions,
    caller: Annotated[Caller, admin("listing sessions")],
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Query(None, max_length=512),
) -> Response:
    records, next_cursor = await sessions.page(limit, cursor)
    return json_response(
        {
            "sessions": [session_info(r, with_tenant=True) for r in records],
            "capacity": sessions.capacity,
            "active": await sessions.count(),
            "next_cursor": next_cursor,
        }
    )


@router.get(
    "/{session_id}",
    response_model=SessionInfo,
    responses=problems(401, 404, 503),
    summary="Get a session",
)
async def get_session(session_id: str, sessions: Sessions, caller: CurrentCaller) -> Response:
    return json_response(session_info(await sessions.get(session_id, caller.scope)))


@router.delete(
    "/{session_id}",
    status_code=204,
    responses=problems(401, 404, 503),
    summary="Delete a session and free its slot",
)
async def delete_session(session_id: str, sessions: Sessions, caller: CurrentCaller) -> Response:
    await sessions.delete(session_id, caller.scope)
    return Response(status_code=204)


@router.post(
    "/{session_id}/reset",
    response_model=SessionInfo,
    responses=problems(401, 404, 409, 503),
    summary="Zero the session's state, as Keras reset_states() does",
)
async def reset_session(session_id: str, sessions: Sessions, caller: CurrentCaller) -> Response:
    return json_response(session_info(await sessions.reset(session_id, caller.scope)))


def _create_options(body: bytes) -> CreateSession:
    """The optional body (JSON, as ``read_body`` made sure)."""
    if not body.strip():
        return CreateSession()
    return validated(CreateSession, load_json(body), "invalid session options")
