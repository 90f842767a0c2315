"""The Open Inference Protocol (KServe v2) with Triton's sequence extension, apart from its transport:
what a request asks (model, sequence, the input tensor) and how outputs are written back.

A served model version has one input, ``inputs`` (FP32, ``[-1, -1, F]``: batch, time, features), and
one output, ``outputs`` (FP32, ``[-1, -1, size]`` per time step, else ``[-1, size]``). A request
carries one sequence's chunk: batch 1 (``[1, T, F]``; ``[T, F]`` is taken too). The sequence
parameters map onto sessions (:func:`app.sessions.service.sequence_session_id`). Written by hand:
no maintained Python library implements the server side of this protocol.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from app.api.auth import Caller
from app.api.parsing import has_bool
from app.errors import BadRequest, Conflict, InvalidInput, NotFound, ServiceError, Unavailable
from app.sessions import Duration, ModelSpec, Tally, parse_version
from app.sessions.service import ChunkResult, new_session_id, sequence_session_id

INPUT, OUTPUT, DATATYPE = "inputs", "outputs", "FP32"
PLATFORM, BACKEND = "keras_stateful_rnn", "stateful_rnn"
EXTENSIONS = ["binary_tensor_data", "sequence", "model_repository", "statistics"]


@dataclass
class Sequence:
    """The sequence extension's parameters of one request."""

    sequence_id: int | str | None  # None (or 0, or ""): no sequence, a fresh state kept for nothing
    start: bool = False
    end: bool = False
    seq: int | None = None  # our extension: exactly-once, as /v1's seq

    @classmethod
    def of(cls, parameters: Any) -> Sequence:
        if parameters is None:
            return cls(None)
        if not isinstance(parameters, dict):
            raise BadRequest('"parameters" must be an object')
        found = parameters.get("sequence_id")
        if found in (None, 0, ""):
            found = None
        elif (
            isinstance(found, bool)
            or not isinstance(found, (int, str))
            or (isinstance(found, int) and found < 0)
        ):
            raise BadRequest('"sequence_id" must be an unsigned integer or a string')
        flags = [parameters.get(name, False) for name in ("sequence_start", "sequence_end")]
        if not all(isinstance(flag, bool) for flag in flags):
            raise BadRequest('"sequence_start" and "sequence_end" must be true or false')
        seq = parameters.get("seq")
        if seq is not None and (type(seq) is not int or seq < 0):
            raise BadRequest('"seq" must be a non-negative integer')
        return cls(found, *flags, seq)


async def infer(
    sessions: Any,
    caller: Caller,
    name: str,
    version: int | None,
    sequence: Sequence,
    tensor: Any,
    raw: bytes | None,
    max_steps: int,
    transport: str,
) -> tuple[ChunkResult, int]:
    """Apply one request's chunk to its sequence (HTTP and gRPC alike): its answer, and the rank of
    its input (2 or 3) for the output's shape. The one place that decides which version a chunk
    is checked against: a new sequence's, the named version (default: the newest ready); a running
    sequence's, the version it runs, whatever is newest now (a sequence started before a rollout
    finishes on its version, even when the newer one takes other inputs). That version's input
    size is checked when the chunk's turn comes, with the session as the store has it
    (:mod:`app.sessions.rules`): nothing is read here, so nothing is awaited before the chunk
    takes its place in its session's line, and a gRPC stream's requests keep their order."""
    if sequence.sequence_id is None:  # a fresh state, kept for nothing
        session_id, start, end = new_session_id(), True, True
    else:
        session_id = sequence_session_id(caller.tenant, sequence.sequence_id)
        start, end = sequence.start, sequence.end
    try:
        spec = await sessions.model_spec(name, version)  # an unknown model: said first
    except (Conflict, Unavailable):
        if start:
            raise  # none to start one on; a running sequence goes on, unloaded or not
    array, rank = input_array(tensor, raw, name, spec if start else None, max_steps)
    with _live(sequence):
        result = await sessions.sequence(
            session_id,
            array,
            tenant=caller.tenant,
            scope=caller.scope,
            start=start,
            end=end,
            seq=sequence.seq,
            model=name,
            version=version,
            transport=transport,
        )
    return result, rank


@contextmanager
def _live(sequence: Sequence) -> Iterator[None]:
    """A sequence's session not found, said as Triton's sequences say it."""
    try:
        yield
    except NotFound:
        if sequence.sequence_id is None:
            raise
        raise BadRequest(
            f"sequence {sequence.sequence_id!r} is not live: start it with sequence_start (or it "
            "has ended or expired)"
        ) from None


def version_of(text: str | None) -> int | None:
    """A version as a URL or a request names it; None (or ""): the newest ready one."""
    if not text:
        return None
    number = parse_version(text)
    if number is None:
        raise BadRequest(f"model version must be a positive integer, not {text!r}")
    return number


def metadata(spec: ModelSpec, versions: list[int]) -> dict[str, Any]:
    output_shape = [-1, -1, spec.output_size] if spec.per_step else [-1, spec.output_size]
    return {
        "name": spec.name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": [{"name": INPUT, "datatype": DATATYPE, "shape": [-1, -1, spec.input_features]}],
        "outputs": [{"name": OUTPUT, "datatype": DATATYPE, "shape": output_shape}],
    }


NEVER_IDLE_US = 2**64 - 1  # --session-ttl 0: a sequence never idles out


def config(spec: ModelSpec, *, session_ttl: float, keep_versions: int) -> mc.ModelConfig:
    """A Triton-shaped model configuration (what perf_analyzer, Model Analyzer and Triton's clients
    read): one sequence per request (``max_batch_size`` 1, so ``dims`` leave out the batch), the
    time dimension variable, sequences that live ``--session-ttl`` idle (the default; a session may
    ask for its own), the newest ``--keep-versions`` versions served (and any with live sessions)."""
    found = mc.ModelConfig(
        name=spec.name,
        platform=PLATFORM,
        backend=BACKEND,
        max_batch_size=1,
        version_policy=mc.ModelVersionPolicy(
            latest=mc.ModelVersionPolicy.Latest(num_versions=keep_versions)
        ),
        input=[mc.ModelInput(name=INPUT, data_type=mc.TYPE_FP32, dims=[-1, spec.input_features])],
        output=[
            mc.ModelOutput(
                name=OUTPUT,
                data_type=mc.TYPE_FP32,
                dims=[-1, spec.output_size] if spec.per_step else [spec.output_size],
            )
        ],
        sequence_batching=mc.ModelSequenceBatching(
            max_sequence_idle_microseconds=(
                round(session_ttl * 1e6) if session_ttl else NEVER_IDLE_US
            )
        ),
    )
    found.parameters["runtime"].string_value = spec.runtime
    found.parameters["version"].string_value = str(spec.version)
    return found


# A version's state as the repository extension's index says it: (state, reason).
INDEX_STATES = {
    "ready": ("READY", ""),
    "retiring": ("UNLOADING", "retired: its running sequences finish, new ones are refused"),
    "loading": ("LOADING", ""),
    "retired": ("UNAVAILABLE", "retired"),
    "unloaded": ("UNAVAILABLE", "not served: older than the versions kept"),
}


def repository_index(documents: list[dict[str, Any]], ready_only: bool) -> list[dict[str, str]]:
    """The repository extension's index: every version of every model, with its state."""
    found = []
    for document in documents:
        for version in sorted(document["versions"], key=lambda v: v["version"]):
            state, reason = INDEX_STATES.get(
                version["state"], ("UNAVAILABLE", version["error"] or "")
            )
            if ready_only and state != "READY":
                continue
            found.append(
                {
                    "name": document["name"],
                    "version": str(version["version"]),
                    "state": state,
                    "reason": reason,
                }
            )
    return found


UNSUPPORTED = {
    "systemsharedmemory": "shared memory is not supported by this server: send tensors in the request",
    "cudasharedmemory": "CUDA shared memory is not supported by this server: send tensors in the "
    "request",
    "trace": "trace settings are not supported by this server: see its metrics and access log",
    "logging": "log settings are not supported by this server: set --log-level at start",
}


def check_tensor(kind: str, name: Any, parameters: Any) -> None:
    """A requested output (``kind`` "output") or a given input must be the model's, and in the
    request: shared memory regions are refused, never ignored."""
    expected = OUTPUT if kind == "output" else INPUT
    if name != expected:
        raise BadRequest(f"unexpected {kind} {name!r}: the model's {kind} is {expected!r}")
    if isinstance(parameters, Mapping) and any(
        str(key).startswith("shared_memory") for key in parameters
    ):
        raise BadRequest(UNSUPPORTED["systemsharedmemory"])


def plain_load(name: str, parameters: Any) -> None:
    """A load request may not carry a configuration or files: versions come from the repository."""
    if parameters is None:
        return
    if not isinstance(parameters, dict):
        raise BadRequest(f'failed to load {name!r}: "parameters" must be an object')
    if parameters:
        raise BadRequest(
            f"failed to load {name!r}: a configuration or files sent with the request are not "
            "supported; publish the version in the model repository"
        )


@contextmanager
def load_failure(name: str) -> Iterator[None]:
    """A load's error, worded as Triton's clients recognise it (``failed to load``)."""
    try:
        yield
    except ServiceError as exc:
        exc.detail = f"failed to load {name!r}: {exc.detail}"
        exc.args = (exc.detail,)
        raise


def input_array(
    tensor: Any, raw: bytes | None, name: str, spec: ModelSpec | None, max_steps: int
) -> tuple[np.ndarray, int]:
    """The request's input tensor for model ``name`` as float32 ``[T, F]``, and its rank (2 or 3).
    ``raw``: its bytes, when they came binary (the binary tensor extension, or gRPC's raw
    contents). ``F`` is checked against ``spec``, the version a new sequence starts on; None for a
    running sequence, whose own version checks it when the chunk's turn comes."""
    if not isinstance(tensor, dict):
        raise BadRequest("each input must be an object with name, shape, datatype")
    check_tensor("input", tensor.get("name"), tensor.get("parameters"))
    if tensor.get("datatype") != DATATYPE:
        raise BadRequest(f"input {INPUT!r} must be {DATATYPE}, not {tensor.get('datatype')!r}")
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not all(type(d) is int and d >= 0 for d in shape)
        or len(shape) not in (2, 3)
        or (len(shape) == 3 and shape[0] != 1)
    ):
        width = "F" if spec is None else spec.input_features
        raise BadRequest(
            f"input {INPUT!r} must have shape [1, T, {width}] (or [T, {width}]): one sequence's "
            f"chunk; got {shape!r}"
        )
    steps, features = shape[-2], shape[-1]
    if spec is not None and features != spec.input_features:
        raise BadRequest(
            f"input {INPUT!r} has {features} features; model {name} version {spec.version} "
            f"takes {spec.input_features}"
        )
    if not steps:
        raise BadRequest(f"input {INPUT!r} has no time steps")
    if steps > max_steps:
        raise InvalidInput(f"the chunk has {steps} time steps; the limit is {max_steps}")
    if raw is not None:
        if len(raw) != 4 * steps * features:
            raise BadRequest(
                f"input {INPUT!r} of shape {shape} takes {4 * steps * features} bytes; got {len(raw)}"
            )
        array = np.frombuffer(raw, "<f4").reshape(steps, features).astype(np.float32)
    else:
        data = tensor.get("data")
        if data is None:  # NumPy would read it as one NaN
            raise BadRequest(
                f'input {INPUT!r} has no data: send "data", or binary data with binary_data_size'
            )
        try:
            array = np.asarray(data, np.float64)
        except (TypeError, ValueError):
            raise BadRequest(f"input {INPUT!r} holds something other than numbers") from None
        if array.size != steps * features or has_bool(data):
            raise BadRequest(f"input {INPUT!r} of shape {shape} needs {steps * features} numbers")
        with np.errstate(over="ignore"):
            array = array.reshape(steps, features).astype(np.float32)
    if not np.isfinite(array).all():
        raise BadRequest(f"input {INPUT!r} holds NaN or infinity")
    return array, len(shape)


def output_shape(outputs: np.ndarray, rank: int) -> list[int]:
    """The output's shape as the request's input had its rank: batch 1 first when it had one."""
    return ([1] if rank == 3 else []) + list(outputs.shape)


def statistics(found: list[tuple[ModelSpec, Tally]]) -> dict[str, Any]:
    """The statistics extension's document (Triton's ``model_stats``): per version served, what this
    server did with it since it started. The model call is ``compute_infer`` (its padding and
    splitting included); nothing is timed apart as input or output, and nothing is cached."""

    def duration(d: Duration) -> dict[str, int]:
        return {"count": d.count, "ns": d.ns}

    none = {"count": 0, "ns": 0}
    return {
        "model_stats": [
            {
                "name": spec.name,
                "version": str(spec.version),
                "last_inference": tally.last_inference_ms,
                "inference_count": tally.inferences,
                "execution_count": tally.executions,
                "inference_stats": {
                    "success": duration(tally.success),
                    "fail": duration(tally.fail),
                    "queue": duration(tally.queue),
                    "compute_input": {"count": tally.compute.count, "ns": 0},
                    "compute_infer": duration(tally.compute),
                    "compute_output": {"count": tally.compute.count, "ns": 0},
                    "cache_hit": none,
                    "cache_miss": none,
                },
                "batch_stats": [
                    {
                        "batch_size": rows,
                        "compute_input": {"count": calls.count, "ns": 0},
                        "compute_infer": duration(calls),
                        "compute_output": {"count": calls.count, "ns": 0},
                    }
                    for rows, calls in sorted(tally.batches.items())
                ],
            }
            for spec, tally in found
        ]
    }
