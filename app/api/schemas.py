"""Request and response shapes, for validation of small bodies and for the OpenAPI document.

Responses are written with orjson directly; these models describe them rather than build them, so the
hot path pays nothing for documentation.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.sessions.names import MAX_TTL_S, MODEL_NAME, SESSION_ID, anchored


class CreateSession(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    session_id: str | None = Field(
        None,
        pattern=anchored(SESSION_ID),
        description="1 to 128 of A-Z a-z 0-9 . _ : -; omitted: random",
    )
    ttl_s: float | None = Field(
        None,
        ge=0,
        le=MAX_TTL_S,
        allow_inf_nan=False,
        description="Idle seconds before expiry; 0: never; omitted: server default",
    )
    model: str | None = Field(
        None,
        pattern=anchored(MODEL_NAME),
        description="The model's name; omitted: the only model the server serves",
    )
    version: int | None = Field(
        None, ge=1, description="The model's version; omitted: its newest ready version"
    )


class VersionRef(BaseModel):
    name: str
    version: int


class SessionInfo(BaseModel):
    session_id: str
    seq: int = Field(description="Number of the last chunk applied; 0: none yet")
    steps: int = Field(description="Time steps since creation or the last reset")
    created_at: str
    last_active_at: str
    expires_at: str | None
    model: VersionRef | None = Field(description="The model version the session runs")


class ListedSession(SessionInfo):
    tenant: str | None = Field(
        None, description="The tenant whose key created it; null: an admin or open mode"
    )


class SessionList(BaseModel):
    sessions: list[ListedSession]
    capacity: int
    active: int
    next_cursor: str | None


class ChunkRequest(BaseModel):
    inputs: list[list[float]] | list[float] = Field(
        description="T rows of F numbers (a flat list of T numbers when F = 1)"
    )
    seq: int | None = Field(None, ge=0, description="last + 1 applies; last replays; else 409")


class ChunkResponse(BaseModel):
    session_id: str
    seq: int
    steps: int
    outputs: list[list[float]] | list[float] = Field(
        description="T rows when the model's output is per time step, else the output after the last step"
    )


class LayerState(BaseModel):
    name: str
    kind: Literal["GRU", "LSTM", "SimpleRNN"]
    states: list[list[float]] = Field(description="This session's row of layer.states (LSTM: h, c)")


class ModelRef(BaseModel):
    name: str | None = None
    version: int | None = None
    fingerprint: str | None = None


class StateDocument(BaseModel):
    session_id: str
    seq: int
    steps: int
    model: ModelRef
    layers: list[LayerState]


class StateUpdate(BaseModel):
    model: ModelRef | None = None
    layers: list[LayerState]


class OutputInfo(BaseModel):
    per_step: bool
    size: int


class TensorInfo(BaseModel):
    name: str = Field(description="As the model declares it: the Input's name, the output layer's")
    dtype: str = Field(description="Keras's dtype name (the step computes in float32)")
    width: int = Field(description="Features of an input, size of an output")


TENSORS = (
    "{kind}, in the model's order: a chunk's rows hold the inputs' features side by side, an "
    "answer's the outputs'"
)


class RecurrentLayerInfo(BaseModel):
    name: str
    kind: str
    units: int
    state_tensors: int


RUNTIME = (
    "What computes it: onnx (ONNX Runtime, on a graph written from the model and checked against "
    "TensorFlow at load) or tensorflow (see --runtime)"
)


class ModelInfo(BaseModel):
    name: str
    version: int
    fingerprint: str
    runtime: Literal["onnx", "tensorflow"] = Field(description=RUNTIME)
    input_features: int
    output: OutputInfo
    inputs: list[TensorInfo] = Field(description=TENSORS.format(kind="The inputs"))
    outputs: list[TensorInfo] = Field(description=TENSORS.format(kind="The outputs"))
    recurrent_layers: list[RecurrentLayerInfo]
    capacity: int
    max_chunk_steps: int
    backend: Literal["memory", "redis"]


class ModelVersion(BaseModel):
    version: int
    state: Literal["loading", "ready", "retiring", "failed", "unloaded", "retired"] = Field(
        description="loading: being read, compiled and warmed; ready: served, and new sessions may run it; "
        "retiring: retired, still serving its sessions; failed: its file does not load (see error); "
        "unloaded: not served (older than --keep-versions, no sessions); retired: retired and unloaded"
    )
    live_sessions: int | None = Field(
        description="Sessions that run it (Redis: over every replica, a few seconds old); admins only (null "
        "for a tenant: the count is every tenant's)"
    )
    retired: Literal["drain", "reset", "carry"] | None = Field(
        description="How it was retired, if it was"
    )
    error: str | None = Field(description="Why it failed to load")
    fingerprint: str | None = Field(description="null until it has been loaded")
    runtime: Literal["onnx", "tensorflow"] | None = Field(
        description=RUNTIME + "; null until it has been loaded"
    )
    input_features: int | None
    output: OutputInfo | None
    inputs: list[TensorInfo] | None = Field(description=TENSORS.format(kind="The inputs"))
    outputs: list[TensorInfo] | None = Field(description=TENSORS.format(kind="The outputs"))
    recurrent_layers: list[RecurrentLayerInfo] | None


class ModelDocument(BaseModel):
    name: str
    default_version: int | None = Field(
        description="The version new sessions get: the newest ready one"
    )
    versions: list[ModelVersion] = Field(description="Newest first")


class ModelList(BaseModel):
    models: list[ModelDocument]


class Retirement(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    mode: Literal["drain", "reset", "carry"] = Field(
        description="drain: its sessions stay on it until they end, then it is unloaded; reset: they move to "
        "the newest ready version with a zeroed state; carry: they move with their state (identical "
        "state layouts only)"
    )


class RetireResult(BaseModel):
    name: str
    version: int
    mode: Literal["drain", "reset", "carry"]
    moved: int = Field(description="Sessions moved to another version")
    moved_to: int | None
    state: str
    live_sessions: int = Field(description="Sessions still on it (drain: until they end)")


class LastOutputs(BaseModel):
    session_id: str
    seq: int = Field(description="Number of the last chunk applied; 0: none yet")
    steps: int
    outputs: list[list[float]] | list[float] | None = Field(
        description="The outputs answered to chunk `seq` (kept for its retries); null before the first chunk"
    )


class StatsInterval(BaseModel):
    at: float = Field(description="End of the interval, Unix seconds")
    seconds: float
    chunks: int = Field(description="Chunks applied (HTTP and WebSocket)")
    chunks_per_s: float
    p99_ms: float | None = Field(
        description="99th percentile of the chunks' time in the engine, arrival to answer (HTTP and "
        "WebSocket), estimated from the buckets of srnn_chunk_seconds; null when none were applied"
    )
    queue_p99_ms: float | None = Field(description="The same, of their wait for a model call")
    model_p99_ms: float | None = Field(
        description="The same, of the model calls (each a batch of chunks)"
    )


class SessionCounts(BaseModel):
    capacity: int = Field(description="This replica's state slots")
    hot: int = Field(description="Sessions holding one of this replica's state slots now")
    total: int | None = Field(
        description="Sessions that exist (Redis: counted over all replicas); null while the store does not answer"
    )


class Stats(BaseModel):
    replica: str = Field(
        description="The replica that answered (host name:port); the figures are its own"
    )
    model: ModelRef
    backend: Literal["memory", "redis"]
    sessions: SessionCounts
    queue_depth: int
    window: StatsInterval = Field(description="The last 10 seconds or so")
    series: list[StatsInterval] = Field(
        description="One interval a second, the last minute, oldest first"
    )


class Problem(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str


def problems(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI ``responses`` entries for the given error statuses."""
    return {
        status: {"model": Problem, "content": {"application/problem+json": {}}}
        for status in statuses
    }


class InferenceError(BaseModel):
    error: str = Field(description="What was wrong (the Open Inference Protocol's error document)")


class Status(BaseModel):
    status: str = Field(description='"alive" (/healthz) or "ready" (/readyz)')


# The Open Inference Protocol's documents, as /v2 writes them (app/api/inference.py): described
# here for the OpenAPI document (the routes write them by hand, so these are not checked per call).
class V2Live(BaseModel):
    live: bool


class V2Ready(BaseModel):
    ready: bool


class V2ModelReady(BaseModel):
    name: str
    ready: bool


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1: any length (the batch, the time steps)")


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str] = Field(description="The versions served")
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


class V2OutputTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[float] | None = Field(None, description="Absent when sent as binary data")
    parameters: dict[str, Any] | None = Field(
        None, description='{"binary_data_size": n} when the tensor follows the JSON as bytes'
    )


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str = Field(description="The version that computed it (a sequence's own)")
    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        None, description="A sequence's session as /v1 knows it: session_id, seq"
    )
    outputs: list[V2OutputTensor]


class V2ModelConfig(BaseModel):
    """Triton's model configuration (a ModelConfig message as JSON); its main fields."""

    model_config = ConfigDict(extra="allow")

    name: str
    platform: str
    backend: str
    max_batch_size: int
    input: list[dict[str, Any]]
    output: list[dict[str, Any]]
    sequence_batching: dict[str, Any] | None = None


class V2RepositoryEntry(BaseModel):
    name: str
    version: str
    state: str = Field(description="READY, LOADING or UNAVAILABLE")
    reason: str


class V2Statistics(BaseModel):
    model_stats: list[dict[str, Any]] = Field(
        description="Per version: inference_count, execution_count, inference_stats, batch_stats"
    )


def inference_errors(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI ``responses`` entries for the given error statuses of a /v2 operation."""
    return {status: {"model": InferenceError, "description": "an error"} for status in statuses}


# ``openapi_extra`` of an operation that takes no key (the probes, the scrape); every other one
# takes a bearer key (app.api.openapi).
NO_KEY: dict = {"security": []}


def json_body(model: type[BaseModel], required: bool = True) -> dict:
    """``openapi_extra`` documenting a body that the route reads and checks by hand."""
    # Nested models as components (app.api.openapi moves them there): refs OpenAPI can resolve.
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {
        "requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}
    }
