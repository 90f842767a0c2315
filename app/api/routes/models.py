"""The model repository: models and their versions, loading new ones, retiring old ones (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from app.api.auth import Caller
from app.api.deps import CurrentCaller, CurrentSettings, Sessions, admin, json_response
from app.api.documents import model_document, retirement_document
from app.api.parsing import load_json, read_body, validated
from app.api.schemas import ModelDocument, ModelList, Retirement, RetireResult, json_body, problems
from app.sessions.names import MODEL_NAME, anchored

router = APIRouter(prefix="/v1/models", tags=["models"])

ModelName = Path(pattern=anchored(MODEL_NAME), description="The model's folder in the repository")


@router.get(
    "",
    response_model=ModelList,
    responses=problems(401, 503),
    summary="Models and versions: state, layout, live sessions",
)
async def list_models(sessions: Sessions, caller: CurrentCaller) -> Response:
    return json_response(
        {"models": [model_document(m, caller.admin) for m in await sessions.models()]}
    )


@router.get(
    "/{name}", response_model=ModelDocument, responses=problems(401, 404, 503), summary="One model"
)
async def get_model(sessions: Sessions, caller: CurrentCaller, name: str = ModelName) -> Response:
    (document,) = await sessions.models(name)
    return json_response(model_document(document, caller.admin))


@router.post(
    "/{name}/load",
    response_model=ModelDocument,
    responses=problems(401, 403, 404, 503),
    summary="Read the repository now and load the model's new versions (admin); answered once loaded",
)
async def load_model(
    sessions: Sessions,
    caller: Annotated[Caller, admin("loading a model")],
    name: str = ModelName,
) -> Response:
    return json_response(model_document(await sessions.load_model(name), admin=True))


@router.post(
    "/{name}/versions/{version}/retire",
    response_model=RetireResult,
    responses=problems(400, 401, 403, 404, 409, 415, 422, 503),
    openapi_extra=json_body(Retirement),
    summary="Retire a version (admin): its sessions drain, or move to the newest version (reset, carry)",
)
async def retire_version(
    request: Request,
    sessions: Sessions,
    settings: CurrentSettings,
    caller: Annotated[Caller, admin("retiring a version")],
    version: int = Path(ge=1),
    name: str = ModelName,
) -> Response:
    retirement = validated(
        Retirement,
        load_json(await read_body(request, settings.max_body_bytes)),
        'the body must be {"mode": "drain" | "reset" | "carry"}',
    )
    return json_response(retirement_document(await sessions.retire(name, version, retirement.mode)))
