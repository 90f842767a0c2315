"""The Open Inference Protocol (KServe v2) with Triton's sequence extension, apart from its transport:
what a request asks (model, sequence, input tensors) and how outputs are written back, the model
configuration, the repository index, and the errors as Triton's clients expect them.

A served model version's inputs and outputs are named and typed as the model declares them
(``[-1, -1, F]``: batch, time, features, FP32 unless a ``keras.Input`` says otherwise; outputs FP32,
``[-1, -1, size]`` per time step, else ``[-1, size]``); a model of one input and one output also
answers to the generic names ``inputs`` and ``outputs``. A request with a ``sequence_id`` carries
one sequence's chunk (batch 1: ``[1, T, F]``, or ``[T, F]``); one without is a stateless batch of
independent sequences (``[B, T, F]``). Values come in any numeric datatype whose values are exactly
float32 ones (the model computes in float32). Several inputs are joined side by side into the one
chunk the sessions layer takes, and the answer cut apart into the outputs. The sequence parameters
map onto sessions (:func:`app.sessions.names.sequence_session_id`). Written by hand: no
maintained Python library implements the server side of this protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from app.api.auth import Caller
from app.api.parsing import has_bool
from app.errors import BadRequest, Conflict, InvalidInput, NotFound, ServiceError, Unavailable
from app.sessions import (
    ChunkResult,
    Duration,
    ModelSpec,
    Sessions,
    Tally,
    TensorSpec,
    parse_version,
)
from app.sessions.names import new_session_id, sequence_session_id

INPUT, OUTPUT = "inputs", "outputs"  # the generic names, which every model answers to
DATATYPE = "FP32"  # what the model computes in, and answers with
# Triton's datatypes, and the little-endian NumPy types of their binary data.
DTYPES = {
    "BOOL": "?",
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
DATATYPE_OF = {np.dtype(code).name: name for name, code in DTYPES.items()}  # "int32" -> "INT32"
PLATFORM, BACKEND = "keras_stateful_rnn", "stateful_rnn"
EXTENSIONS = ["binary_tensor_data", "sequence", "model_repository", "statistics"]
# The statistics are for admins (on HTTP and gRPC alike): they count every tenant's requests.
READING_STATISTICS = "reading the statistics (they count every tenant's requests)"


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
    sessions: Sessions,
    caller: Caller,
    name: str,
    version: int | None,
    sequence: Sequence,
    given: list[tuple[Any, bytes | None]],
    asked: list[tuple[Any, Any]],
    max_steps: int,
    transport: str,
) -> tuple[ChunkResult, list[tuple[str, list[int], np.ndarray]]]:
    """Apply one request's chunk to its sequence (HTTP and gRPC alike), or a stateless batch to
    fresh states. ``given``: the request's input tensors, each with its bytes when they came
    binary; ``asked``: the requested outputs' names and parameters. Answers the result and each
    output to send: its name, shape and float32 values.

    The one place that decides which version a chunk is checked against: a new sequence's, the
    named version (default: the newest ready); a running sequence's, the version it runs, whatever
    is newest now (a sequence started before a rollout finishes on its version, even when the
    newer one takes other inputs). That version's input size is checked when the chunk's turn
    comes, with the session as the store has it (:mod:`app.sessions.rules`): nothing is read here,
    so nothing is awaited before the chunk takes its place in its session's line, and a gRPC
    stream's requests keep their order."""
    if sequence.sequence_id is None:  # fresh states, kept for nothing
        session_id, start, end = new_session_id(), True, True
    else:
        session_id = sequence_session_id(caller.tenant, sequence.sequence_id)
        start, end = sequence.start, sequence.end
    try:
        spec = await sessions.model_spec(name, version)  # an unknown model: said first
    except (Conflict, Unavailable):
        if start or len(given) != 1:
            raise
        spec = None  # none to start a sequence on (unloaded, loading): a running one goes on
    stateless = sequence.sequence_id is None
    parts, generic = [], False
    for (tensor, raw), declared in _inputs_in_order(name, spec, given):
        generic = generic or tensor.get("name") == INPUT
        width = declared.width if start and declared is not None else None
        parts.append(input_array(tensor, raw, spec, width, max_steps, stateless))
    arrays = [array for array, _ in parts]
    if len({array.shape[:2] for array in arrays}) > 1 or len({rank for _, rank in parts}) > 1:
        raise BadRequest(
            "the inputs disagree on the batch or the time steps: "
            + ", ".join(str(list(array.shape[:2])) for array in arrays)
        )
    array = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=2)
    rank = parts[0][1]
    answers = _outputs_asked(name, spec, asked, generic)

    def apply(session_id: str, rows: np.ndarray, start: bool, end: bool, seq: int | None):
        return sessions.sequence(
            session_id,
            rows,
            tenant=caller.tenant,
            scope=caller.scope,
            start=start,
            end=end,
            seq=seq,
            model=name,
            version=version,
            transport=transport,
        )

    if len(array) > 1:
        # B independent sequences from fresh states, kept for nothing: each its own session for
        # its one chunk, all in the engine's lines at once, so they share its model calls.
        results = await asyncio.gather(
            *(apply(new_session_id(), rows, True, True, None) for rows in array)
        )
        outputs = np.stack([r.outputs for r in results])
        result = ChunkResult("", 0, array.shape[1], outputs, version=results[0].version)
        return result, _split(spec, outputs, answers, [])
    with _live(sequence):
        result = await apply(session_id, array[0], start, end, sequence.seq)
    return result, _split(spec, result.outputs, answers, [1] if rank == 3 else [])


def _inputs_in_order(
    model: str, spec: ModelSpec | None, given: list[tuple[Any, bytes | None]]
) -> list[tuple[tuple[Any, bytes | None], TensorSpec | None]]:
    """The request's inputs in the model's order, each with the input it is: by the model's names,
    or (a model of one input) by the generic ``inputs``. Each is given once, and all of them.
    (``spec`` None: no version to start a sequence on; a running one's chunk, one input, is taken
    under any name.)"""
    for tensor, _ in given:
        if not isinstance(tensor, dict):
            raise BadRequest("each input must be an object with name, shape, datatype")
        _no_shared_memory(tensor.get("parameters"))
    if spec is None:
        return [(given[0], None)]
    declared = spec.inputs
    names = [t.name for t in declared]
    by_name = {tensor.get("name"): (tensor, raw) for tensor, raw in given}
    if len(declared) == 1 and len(given) == 1 and given[0][0].get("name") == INPUT:
        return [(given[0], declared[0])]
    unknown = [n for n in by_name if n not in names]
    if unknown or len(by_name) != len(given) or len(given) != len(declared):
        also = f" (or {INPUT!r})" if len(declared) == 1 else ""
        raise BadRequest(
            f"model {model} takes {len(declared)} input(s), {', '.join(map(repr, names))}{also}, "
            f"each once; got {', '.join(repr(t.get('name')) for t, _ in given) or 'none'}"
        )
    return [(by_name[t.name], t) for t in declared]


def _outputs_asked(
    model: str, spec: ModelSpec | None, asked: list[tuple[Any, Any]], generic: bool
) -> list[str]:
    """The names of the outputs to send, in order: those asked (each by the model's name, or, for
    a model of one output, by the generic ``outputs``), else every one. A model of one input and
    one output answers as the request named its input: after ``inputs``, ``outputs``."""
    declared = spec.outputs if spec is not None else (TensorSpec(OUTPUT, "float32", 0),)
    names = [t.name for t in declared]
    for asked_name, parameters in asked:
        _no_shared_memory(parameters)
        if asked_name not in names and not (len(names) == 1 and asked_name == OUTPUT):
            also = f" (or {OUTPUT!r})" if len(names) == 1 else ""
            raise BadRequest(
                f"unexpected output {asked_name!r}: model {model} gives "
                f"{', '.join(map(repr, names))}{also}"
            )
    if asked:
        return [a for a, _ in asked]
    if len(names) == 1 and (generic or spec is None):
        return [OUTPUT]
    return names


def _split(
    spec: ModelSpec | None, values: np.ndarray, answers: list[str], lead: list[int]
) -> list[tuple[str, list[int], np.ndarray]]:
    """The answer's outputs, side by side in ``values``, cut apart and named; each shape with
    ``lead`` before it (batch 1, when the request's input had it)."""
    declared = spec.outputs if spec is not None else ()
    if len(declared) <= 1:
        return [(answers[0], lead + list(values.shape), values)]
    edges = np.cumsum([t.width for t in declared])[:-1]
    by_name = dict(zip((t.name for t in declared), np.split(values, edges, axis=-1)))
    return [(n, lead + list(by_name[n].shape), by_name[n]) for n in answers]


def _no_shared_memory(parameters: Any) -> None:
    if isinstance(parameters, Mapping) and any(
        str(key).startswith("shared_memory") for key in parameters
    ):
        raise BadRequest(UNSUPPORTED["systemsharedmemory"])


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


def datatype(tensor: TensorSpec) -> str:
    """An input's datatype as Triton names it (FP32 for one it has no name for)."""
    return DATATYPE_OF.get(tensor.dtype, DATATYPE)


def metadata(spec: ModelSpec, versions: list[int]) -> dict[str, Any]:
    time = [-1] if spec.per_step else []
    return {
        "name": spec.name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": [
            {"name": t.name, "datatype": datatype(t), "shape": [-1, -1, t.width]}
            for t in spec.inputs
        ],
        "outputs": [
            {"name": t.name, "datatype": DATATYPE, "shape": [-1, *time, t.width]}
            for t in spec.outputs
        ],
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
        input=[
            mc.ModelInput(
                name=t.name, data_type=mc.DataType.Value(f"TYPE_{datatype(t)}"), dims=[-1, t.width]
            )
            for t in spec.inputs
        ],
        output=[
            mc.ModelOutput(
                name=t.name,
                data_type=mc.TYPE_FP32,
                dims=[-1, t.width] if spec.per_step else [t.width],
            )
            for t in spec.outputs
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
    tensor: Any,
    raw: bytes | None,
    spec: ModelSpec | None,
    width: int | None,
    max_steps: int,
    stateless: bool = False,
) -> tuple[np.ndarray, int]:
    """The request's input tensor as float32 ``[B, T, F]``, and its rank (2 or 3). ``raw``: its
    bytes, when they came binary (the binary tensor extension, or gRPC's raw contents). A
    sequence's chunk is ``[1, T, F]`` (or ``[T, F]``, read as batch 1); ``stateless`` (no
    sequence): ``[B, T, F]``, B independent sequences, together at most ``max_steps`` steps.
    ``F`` is checked against ``width``, that input's in ``spec``, the version a new sequence
    starts on; None for a running sequence, whose own version checks it when its turn comes. Any numeric datatype is taken whose values are
    exactly float32 values (integers up to 2**24, FP64 values that are float32 ones, FP16, BOOL)."""
    if not isinstance(tensor, dict):
        raise BadRequest("each input must be an object with name, shape, datatype")
    name, kind = tensor.get("name"), tensor.get("datatype")
    if kind not in DTYPES:
        raise BadRequest(
            f"input {name!r} has datatype {kind!r}; the model takes numbers: {', '.join(DTYPES)}"
        )
    shape = tensor.get("shape")
    shown = "F" if width is None else width
    if (
        not isinstance(shape, list)
        or not all(type(d) is int and d >= 0 for d in shape)
        or len(shape) not in (2, 3)
    ):
        raise BadRequest(f"input {name!r} must have shape [B, T, {shown}]; got {shape!r}")
    if stateless and len(shape) == 2:
        # [B, F] or [T, F]? Never guessed: a stateless caller's rows would be read as time steps.
        raise BadRequest(
            f"input {name!r} has shape {shape!r}: without a sequence_id send [B, T, {shown}], B "
            f"independent sequences of T steps ([T, {shown}] is a sequence's chunk, with its id)"
        )
    if not stateless and len(shape) == 3 and shape[0] != 1:
        raise BadRequest(
            f"input {name!r} has shape {shape!r}: a sequence's request carries its one chunk, "
            f"[1, T, {shown}]; independent sequences go together without a sequence_id"
        )
    rows = shape[0] if len(shape) == 3 else 1
    steps, features = shape[-2], shape[-1]
    if width is not None and spec is not None and features != width:
        raise BadRequest(
            f"input {name!r} has {features} features; model {spec.name} version {spec.version} "
            f"takes {width}"
        )
    if not steps or not rows:
        raise BadRequest(
            f"input {name!r} has no time steps" if rows else f"input {name!r} is empty"
        )
    if rows * steps > max_steps:
        raise InvalidInput(f"the chunk has {rows * steps} time steps; the limit is {max_steps}")
    steps *= rows  # B sequences' steps, read as one block
    dtype = np.dtype(DTYPES[kind])
    if raw is not None:
        if len(raw) != dtype.itemsize * steps * features:
            raise BadRequest(
                f"input {name!r} of shape {shape} ({kind}) takes "
                f"{dtype.itemsize * steps * features} bytes; got {len(raw)}"
            )
        values = np.frombuffer(raw, dtype)
    else:
        values = _json_values(tensor.get("data"), name, kind, shape, steps * features)
    with np.errstate(over="ignore", invalid="ignore"):
        array = values.astype(np.float32)
        if kind[0] in "IU":
            inexact = np.abs(values.astype(np.float64)) > EXACT_INTEGERS
        elif kind == "FP64":
            inexact = np.isfinite(values) & (array.astype(np.float64) != values)
        else:
            inexact = np.zeros(1, bool)
    if inexact.any():
        raise BadRequest(
            f"input {name!r} holds {kind} values that are not float32 values (the model computes "
            f"in float32): integers up to 2**24, or FP64 values that are float32 ones"
        )
    if not np.isfinite(array).all():
        raise BadRequest(f"input {name!r} holds NaN or infinity")
    return array.reshape(rows, steps // rows, features), len(shape)


EXACT_INTEGERS = 2**24  # every integer up to it, in magnitude, is exactly a float32


def _json_values(data: Any, name: Any, kind: str, shape: list[int], count: int) -> np.ndarray:
    """The ``data`` of a JSON input: ``count`` values of the datatype ``kind``, flat or nested."""
    if data is None:  # NumPy would read it as one NaN
        raise BadRequest(
            f'input {name!r} has no data: send "data", or binary data with binary_data_size'
        )
    try:
        values = np.asarray(data, None if kind == "BOOL" else np.float64)
    except (TypeError, ValueError, OverflowError):
        values = None
    if values is None or (values.dtype != np.bool_ if kind == "BOOL" else has_bool(data)):
        raise BadRequest(f"input {name!r} holds something other than {kind} values")
    if values.size != count:
        raise BadRequest(f"input {name!r} of shape {shape} needs {count} values")
    if kind[0] in "IU" and not (values == np.floor(values)).all():
        raise BadRequest(f"input {name!r} holds something other than {kind} values")
    return values.reshape(-1)


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
