"""The Open Inference Protocol over HTTP/REST (KServe v2), beside /v1: health, metadata, and infer with
Triton's sequence extension, its tensors as JSON ``data`` or in the binary tensor extension
(``Inference-Header-Content-Length``). Errors on /v2 are the protocol's ``{"error": "..."}``
(app.api.errors)."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from google.protobuf import json_format
from starlette.responses import Response

from app.api import inference
from app.api.auth import Caller, caller_of
from app.api.deps import CurrentCaller, CurrentSettings, Sessions, admin, json_response
from app.api.parsing import ChunkLimits, load_json, read_body
from app.api.schemas import (
    NO_KEY,
    V2InferResponse,
    V2Live,
    V2ModelConfig,
    V2ModelMetadata,
    V2ModelReady,
    V2Ready,
    V2RepositoryEntry,
    V2ServerMetadata,
    V2Statistics,
    inference_errors,
)
from app.errors import BadRequest, ServiceError, Unavailable
from app.sessions import ChunkResult

router = APIRouter(prefix="/v2", tags=["open inference protocol"])
HEADER_LENGTH = "Inference-Header-Content-Length"


# Each operation's errors (422 is 400 on /v2). Any request with a key may meet 401 (a wrong key)
# and 429 or 503 (its tenant's share, the in-flight limit, a replica not ready).
KEYED = (401, 429, 503)
INFER_ERRORS = inference_errors(400, 403, 404, 409, 413, *KEYED)
MODEL_ERRORS = inference_errors(400, 404, *KEYED)  # a model's metadata, config, readiness
STATS_ERRORS = inference_errors(400, 403, 404, *KEYED)
CONTROL_ERRORS = inference_errors(400, 403, 404, 413, *KEYED)  # load, unload


# Infer first: a request is matched against the routes in order, about 1.5 µs a candidate in this
# FastAPI (timed over the whole app: 47 µs to reach infer behind every other route, 11 µs now).
# (Decorators register bottom up: the unversioned route, the usual one, is matched first.)
@router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Infer on a version: one chunk of a sequence",
    response_model=V2InferResponse,
    responses=INFER_ERRORS,
)
@router.post(
    "/models/{name}/infer",
    summary="Infer: one chunk of a sequence",
    response_model=V2InferResponse,
    responses=INFER_ERRORS,
)
async def infer(request: Request) -> Response:
    # The path's parts and the application's state read directly, with no parameters or Depends for
    # FastAPI to solve: they were a tenth of this route's CPU (py-spy, 64 closed-loop sequences).
    name, version = (
        request.path_params["name"],
        inference.version_of(request.path_params.get("version")),
    )
    sessions = request.app.state.sessions
    limits: ChunkLimits = request.app.state.chunk_limits
    caller = caller_of(request)
    body = await read_body(request, limits.request_bytes, json_only=False)
    header, tail = _split(body, request.headers.get(HEADER_LENGTH))
    inputs, raws = header.get("inputs"), _binary_inputs(header.get("inputs"), tail)
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest('"inputs" must be a list of the model\'s input tensors')
    sequence = inference.Sequence.of(header.get("parameters"))
    asked = _outputs(header)
    binary = _binary_output(header, asked)
    result, outputs = await inference.infer(
        sessions,
        caller,
        name,
        version,
        sequence,
        list(zip(inputs, raws)),
        asked,
        limits.steps,
        "v2",
    )
    return _answer(
        name, outputs, header.get("id"), result, binary, sequence.sequence_id is not None
    )


@router.get(
    "",
    summary="Server metadata",
    response_model=V2ServerMetadata,
    responses=inference_errors(*KEYED),
)
async def server_metadata(caller: CurrentCaller) -> Response:
    return json_response(
        {"name": "stateful-rnn", "version": "1", "extensions": inference.EXTENSIONS}
    )


@router.get(
    "/health/live",
    summary="200 while the process is alive",
    response_model=V2Live,
    openapi_extra=NO_KEY,
)
async def live() -> Response:
    return json_response({"live": True})


@router.get(
    "/health/ready",
    summary="200 once the models are warm and the state store answers",
    response_model=V2Ready,
    responses=inference_errors(503),
    openapi_extra=NO_KEY,
)
async def ready(sessions: Sessions) -> Response:
    reason = await sessions.unready()
    if reason is not None:
        raise Unavailable(reason)
    return json_response({"ready": True})


@router.get(
    "/models/stats",
    summary="Statistics of every model version served (admin)",
    response_model=V2Statistics,
    responses=STATS_ERRORS,
)
@router.get(
    "/models/{name}/stats",
    summary="Statistics of the model's versions served (admin)",
    response_model=V2Statistics,
    responses=STATS_ERRORS,
)
@router.get(
    "/models/{name}/versions/{version}/stats",
    summary="Statistics of one version (admin)",
    response_model=V2Statistics,
    responses=STATS_ERRORS,
)
async def model_statistics(
    sessions: Sessions,
    caller: Annotated[Caller, admin(inference.READING_STATISTICS)],
    name: str | None = None,
    version: str | None = None,
) -> Response:
    return json_response(
        inference.statistics(await sessions.model_stats(name, inference.version_of(version)))
    )


@router.get(
    "/models/{name}/config",
    summary="Model configuration, as Triton shows it (its newest ready version)",
    response_model=V2ModelConfig,
    responses=MODEL_ERRORS,
)
@router.get(
    "/models/{name}/versions/{version}/config",
    summary="Model version configuration, as Triton shows it",
    response_model=V2ModelConfig,
    responses=MODEL_ERRORS,
)
async def model_config(
    name: str,
    sessions: Sessions,
    settings: CurrentSettings,
    caller: CurrentCaller,
    version: str | None = None,
) -> Response:
    spec = await sessions.model_spec(name, inference.version_of(version))
    found = inference.config(
        spec, session_ttl=settings.session_ttl, keep_versions=settings.keep_versions
    )
    return json_response(json_format.MessageToDict(found, preserving_proto_field_name=True))


@router.get(
    "/models/{name}",
    summary="Model metadata (its newest ready version)",
    response_model=V2ModelMetadata,
    responses=MODEL_ERRORS,
)
@router.get(
    "/models/{name}/versions/{version}",
    summary="Model version metadata",
    response_model=V2ModelMetadata,
    responses=MODEL_ERRORS,
)
async def model_metadata(
    name: str, sessions: Sessions, caller: CurrentCaller, version: str | None = None
) -> Response:
    spec = await sessions.model_spec(name, inference.version_of(version))
    (document,) = await sessions.models(name)
    served = [v["version"] for v in document["versions"] if v["state"] in ("ready", "retiring")]
    return json_response(inference.metadata(spec, served))


@router.get(
    "/models/{name}/ready",
    summary="200 when a version of the model is ready",
    response_model=V2ModelReady,
    responses=MODEL_ERRORS,
)
@router.get(
    "/models/{name}/versions/{version}/ready",
    summary="200 when the version is ready",
    response_model=V2ModelReady,
    responses=MODEL_ERRORS,
)
async def model_ready(
    name: str, sessions: Sessions, caller: CurrentCaller, version: str | None = None
) -> Response:
    spec = await sessions.model_spec(name, inference.version_of(version))
    return json_response({"name": spec.name, "ready": True})


@router.post(
    "/repository/index",
    summary="Every version of every model, with its state",
    response_model=list[V2RepositoryEntry],
    responses=inference_errors(400, 413, *KEYED),
)
async def repository_index(request: Request, sessions: Sessions, caller: CurrentCaller) -> Response:
    options = await _options(request)
    ready = options.get("ready", False)
    if not isinstance(ready, bool):
        raise BadRequest('"ready" must be true or false')
    return json_response(inference.repository_index(await sessions.models(), ready))


@router.post(
    "/repository/models/{name}/load",
    summary="Read the repository now and load the model's new versions (admin)",
    response_model=dict[str, Any],
    responses=CONTROL_ERRORS,
)
async def repository_load(
    request: Request,
    name: str,
    sessions: Sessions,
    caller: Annotated[Caller, admin("loading a model")],
) -> Response:
    inference.plain_load(name, (await _options(request)).get("parameters"))
    with inference.load_failure(name):
        await sessions.load_model(name)
    return json_response({})


@router.post(
    "/repository/models/{name}/unload",
    summary="Retire every version of the model, draining (admin)",
    response_model=dict[str, Any],
    responses=CONTROL_ERRORS,
)
async def repository_unload(
    request: Request,
    name: str,
    sessions: Sessions,
    caller: Annotated[Caller, admin("unloading a model")],
) -> Response:
    await _options(request)
    await sessions.unload_model(name)
    return json_response({})


def _refuse(detail: str):
    async def unsupported(caller: CurrentCaller) -> Response:
        raise BadRequest(detail)

    return unsupported


# Shared memory, trace and log settings: refused in words, not a bare 404 (Triton's clients call them).
for _feature, _detail in inference.UNSUPPORTED.items():
    router.add_api_route(
        f"/{_feature}{{rest:path}}",
        _refuse(_detail),
        methods=["GET", "POST"],
        include_in_schema=False,
    )


async def _options(request: Request) -> dict[str, Any]:
    """An optional JSON object body (the repository extension's requests)."""
    body = await read_body(request, request.app.state.settings.max_body_bytes, json_only=False)
    if not body.strip():
        return {}
    found = load_json(body)
    if not isinstance(found, dict):
        raise BadRequest("the request body must be a JSON object")
    return found


def _split(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    """The JSON request header, and the binary tensor data after it (if any)."""
    if header_length is None:
        length = len(body)
    elif header_length.isascii() and header_length.isdigit() and int(header_length) <= len(body):
        length = int(header_length)
    else:
        raise BadRequest(
            f"{HEADER_LENGTH} is {header_length!r}, but the body has {len(body)} bytes"
        )
    try:
        header = load_json(body[:length])
    except ServiceError:
        raise BadRequest("the inference request header is not valid JSON") from None
    if not isinstance(header, dict):
        raise BadRequest("the inference request must be a JSON object")
    return header, body[length:]


def _binary_inputs(inputs: Any, tail: bytes) -> list[bytes | None]:
    """Each input's bytes from the binary data after the header, in order (None: JSON data)."""
    if not isinstance(inputs, list):
        return []
    found, at = [], 0
    for tensor in inputs:
        size = (
            (tensor.get("parameters") or {}).get("binary_data_size")
            if isinstance(tensor, dict)
            else None
        )
        if size is None:
            found.append(None)
            continue
        if type(size) is not int or size < 0 or at + size > len(tail):
            raise BadRequest(
                f"binary_data_size {size!r} runs past the {len(tail)} bytes of binary data"
            )
        found.append(tail[at : at + size])
        at += size
    if at != len(tail):
        raise BadRequest(f"{len(tail) - at} bytes of binary data belong to no input")
    return found


def _outputs(header: dict[str, Any]) -> list[tuple[Any, Any]]:
    """The requested outputs' names and parameters."""
    found = header.get("outputs") or []
    if not isinstance(found, list) or not all(isinstance(o, dict) for o in found):
        raise BadRequest('"outputs" must be a list of objects, each with a name')
    return [(o.get("name"), o.get("parameters")) for o in found]


def _binary_output(header: dict[str, Any], outputs: list[tuple[Any, Any]]) -> bool:
    """Whether the output goes back binary: asked per output, or for all (tritonclient's default)."""
    for _, parameters in outputs:
        return bool((parameters or {}).get("binary_data", False))
    return bool((header.get("parameters") or {}).get("binary_data_output", False))


def _answer(
    name: str,
    outputs: list[tuple[str, list[int], np.ndarray]],
    request_id: Any,
    result: ChunkResult,
    binary: bool,
    kept: bool,
) -> Response:
    tensors, raws = [], []
    for output, shape, values in outputs:
        tensor: dict[str, Any] = {"name": output, "datatype": inference.DATATYPE, "shape": shape}
        if binary:
            raws.append(values.astype("<f4", copy=False).tobytes())
            tensor["parameters"] = {"binary_data_size": len(raws[-1])}
        else:
            tensor["data"] = values.reshape(-1)
        tensors.append(tensor)
    document: dict[str, Any] = {
        "model_name": name,
        "model_version": str(result.version),  # the sequence's: not always the newest
        "outputs": tensors,
    }
    if kept:  # the sequence's session, as /v1 knows it (its state: GET /v1/sessions/{id}/state)
        document["parameters"] = {"session_id": result.session_id, "seq": result.seq}
    if request_id is not None:
        document["id"] = request_id
    head = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not binary:
        return Response(head, media_type="application/json")
    return Response(
        head + b"".join(raws),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(head))},
    )
