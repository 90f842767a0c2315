"""The served model, health and readiness, metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import PlainTextResponse, Response

from app.api.deps import CurrentCaller, CurrentSettings, Sessions, json_response
from app.api.documents import layout
from app.api.errors import problem
from app.api.schemas import NO_KEY, ModelInfo, Status, problems
from app.metrics import exposition

router = APIRouter()


@router.get(
    "/v1/model",
    response_model=ModelInfo,
    tags=["models"],
    responses=problems(401, 422, 503),
    summary="Describe the model version new sessions get by default (one model served)",
)
async def model_info(
    sessions: Sessions, settings: CurrentSettings, caller: CurrentCaller
) -> Response:
    spec = await sessions.default_model()
    return json_response(
        {
            "name": spec.name,
            "version": spec.version,
            **layout(spec),
            "capacity": sessions.capacity,
            "max_chunk_steps": settings.max_chunk_steps,
            "backend": sessions.backend,
        }
    )


@router.api_route(
    "/healthz",
    methods=["GET", "HEAD"],  # probes and monitors that ask with HEAD get the status alone
    response_model=Status,
    tags=["operations"],
    summary="200 while the process is alive",
    openapi_extra=NO_KEY,
)
async def healthz() -> Response:
    return json_response({"status": "alive"})


@router.api_route(
    "/readyz",
    methods=["GET", "HEAD"],  # probes and monitors that ask with HEAD get the status alone
    response_model=Status,
    tags=["operations"],
    responses=problems(503),
    summary="200 once the model is warm and the state store answers",
    openapi_extra=NO_KEY,
)
async def readyz(sessions: Sessions) -> Response:
    reason = await sessions.unready()
    if reason is not None:
        return problem(503, reason, headers={"Retry-After": "1"}, slug="unavailable")
    return json_response({"status": "ready"})


@router.api_route(
    "/metrics",
    methods=["GET", "HEAD"],  # probes and monitors that ask with HEAD get the status alone
    tags=["operations"],
    summary="Prometheus text exposition",
    openapi_extra=NO_KEY,
    response_class=PlainTextResponse,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}}
    },
)
async def metrics(request: Request) -> Response:
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
