"""The Open Inference Protocol (KServe v2) with Triton's sequence extension, apart from its transport:
what a request asks (model, sequence, the input tensor) and how outputs are written back.

A served model version has one input, ``inputs`` (FP32, ``[-1, -1, F]``: batch, time, features), and
one output, ``outputs`` (FP32, ``[-1, -1, size]`` per time step, else ``[-1, size]``). A request
carries one sequence's chunk: batch 1 (``[1, T, F]``; ``[T, F]`` is taken too). The sequence
parameters map onto sessions (:func:`app.sessions.service.sequence_session_id`). Written by hand:
no maintained Python library implements the server side of this protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from app.api.auth import Caller
from app.api.parsing import has_bool
from app.errors import BadRequest, InvalidInput, NotFound
from app.sessions import Duration, ModelSpec, Tally, parse_version
from app.sessions.service import ChunkResult, new_session_id, sequence_session_id

INPUT, OUTPUT, DATATYPE = "inputs", "outputs", "FP32"
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


async def run(
    sessions: Any,
    caller: Caller,
    name: str,
    version: int | None,
    inputs: np.ndarray,
    sequence: Sequence,
    transport: str,
) -> ChunkResult:
    """Apply one request's chunk to its sequence (HTTP and gRPC alike)."""
    if sequence.sequence_id is None:  # a fresh state, kept for nothing
        session_id, start, end = new_session_id(), True, True
    else:
        session_id = sequence_session_id(caller.tenant, sequence.sequence_id)
        start, end = sequence.start, sequence.end
    try:
        return await sessions.sequence(
            session_id,
            inputs,
            tenant=caller.tenant,
            scope=caller.scope,
            start=start,
            end=end,
            seq=sequence.seq,
            model=name,
            version=version,
            transport=transport,
        )
    except NotFound:
        if sequence.sequence_id is None:
            raise
        raise BadRequest(
            f"sequence {sequence.sequence_id!r} is not live: start it with sequence_start (or it has ended or expired)"
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
        "platform": "keras_stateful_rnn",
        "inputs": [{"name": INPUT, "datatype": DATATYPE, "shape": [-1, -1, spec.input_features]}],
        "outputs": [{"name": OUTPUT, "datatype": DATATYPE, "shape": output_shape}],
    }


def input_array(
    tensor: Any, raw: bytes | None, spec: ModelSpec, max_steps: int
) -> tuple[np.ndarray, int]:
    """The request's input tensor as float32 ``[T, F]``, and its rank (2 or 3). ``raw``: its bytes,
    when they came binary (the binary tensor extension, or gRPC's raw contents)."""
    if not isinstance(tensor, dict):
        raise BadRequest("each input must be an object with name, shape, datatype")
    if tensor.get("name") != INPUT:
        raise BadRequest(
            f"unexpected input {tensor.get('name')!r}: model {spec.name} takes one input, {INPUT!r}"
        )
    if tensor.get("datatype") != DATATYPE:
        raise BadRequest(f"input {INPUT!r} must be {DATATYPE}, not {tensor.get('datatype')!r}")
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not all(type(d) is int and d >= 0 for d in shape)
        or len(shape) not in (2, 3)
        or (len(shape) == 3 and shape[0] != 1)
    ):
        raise BadRequest(
            f"input {INPUT!r} must have shape [1, T, {spec.input_features}] (or [T, "
            f"{spec.input_features}]): one sequence's chunk; got {shape!r}"
        )
    steps, features = shape[-2], shape[-1]
    if features != spec.input_features:
        raise BadRequest(
            f"input {INPUT!r} has {features} features; model {spec.name} version {spec.version} "
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
