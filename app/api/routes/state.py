"""A session's recurrent state, as Keras's ``layer.states`` shows it: read it, or set it; and the
outputs of its last chunk."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.deps import CurrentCaller, CurrentSettings, Sessions, json_response
from app.api.documents import last_outputs_document, session_info, state_document
from app.api.parsing import load_json, parse_state, read_body
from app.api.schemas import (
    LastOutputs,
    SessionInfo,
    StateDocument,
    StateUpdate,
    json_body,
    problems,
)

router = APIRouter(prefix="/v1/sessions", tags=["state"])


@router.get(
    "/{session_id}/state",
    response_model=StateDocument,
    responses=problems(401, 404, 409, 503),
    summary="Read the session's state",
)
async def get_state(session_id: str, sessions: Sessions, caller: CurrentCaller) -> Response:
    return json_response(state_document(*await sessions.state(session_id, caller.scope)))


@router.put(
    "/{session_id}/state",
    response_model=SessionInfo,
    responses=problems(400, 401, 404, 409, 413, 415, 422, 503),
    openapi_extra=json_body(StateUpdate),
    summary="Set the session's state (import, migrate, fork)",
)
async def put_state(
    session_id: str,
    request: Request,
    sessions: Sessions,
    settings: CurrentSettings,
    caller: CurrentCaller,
) -> Response:
    # The session's own model version first: another model's session is 409 whatever the document says.
    spec = await sessions.session_model(session_id, caller.scope)
    document = load_json(await read_body(request, settings.max_body_bytes))
    values = parse_state(document, spec)
    return json_response(
        session_info(await sessions.set_state(session_id, values, caller.scope, spec.key))
    )


@router.get(
    "/{session_id}/outputs",
    response_model=LastOutputs,
    responses=problems(401, 404, 503),
    summary="The outputs of the session's last chunk (the response kept for its retries)",
)
async def last_outputs(session_id: str, sessions: Sessions, caller: CurrentCaller) -> Response:
    return json_response(
        last_outputs_document(*await sessions.last_outputs(session_id, caller.scope))
    )
