"""Chunk bodies, parsed by hand: orjson into NumPy, then shape and finiteness checks.

Validating float lists with pydantic costs about five times as much, on the hottest path there is.
Every check here either passes the chunk on as float32 ``[T, F]`` or raises an error that names the
problem; nothing is applied before parsing succeeds.
"""

from __future__ import annotations

import asyncio
import json
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from app.errors import (
    BadRequest,
    Conflict,
    InvalidInput,
    RequestTimeout,
    TooLarge,
    UnsupportedMediaType,
)
from app.sessions import ModelSpec

Model = TypeVar("Model", bound=BaseModel)


@dataclass
class Chunk:
    inputs: np.ndarray  # float32 [T, F]
    seq: int | None


# What a JSON chunk may take, at most: room for any formatting of its numbers (a float64 written
# out in full is 24 characters; indentation adds a few more), and a fixed allowance for the rest.
JSON_BYTES_PER_NUMBER = 48
JSON_BYTES_PER_ROW = 32
JSON_BYTES_OTHER = 64 * 1024


@dataclass(frozen=True)
class ChunkLimits:
    """How large one chunk may be, in steps and in bytes, for a model of ``features`` inputs.

    Checked before a chunk is parsed (a body by its Content-Length, a WebSocket message by its
    length), so that no request or message costs more work to refuse than the largest chunk a
    client may send costs to apply: parsing is the costly part, and it scales with the bytes."""

    steps: int  # --max-chunk-steps
    frame_bytes: int  # a binary chunk: T x F float32
    json_bytes: int  # a JSON chunk; never over --max-body-bytes
    max_body_bytes: int

    @classmethod
    def of(cls, features: int, max_steps: int, max_body_bytes: int) -> ChunkLimits:
        json_bytes = JSON_BYTES_OTHER + max_steps * (
            JSON_BYTES_PER_ROW + features * JSON_BYTES_PER_NUMBER
        )
        return cls(
            max_steps, 4 * features * max_steps, min(json_bytes, max_body_bytes), max_body_bytes
        )

    @property
    def request_bytes(self) -> int:
        """An Open Inference Protocol request (/v2 HTTP, a gRPC message): its chunk as JSON numbers,
        or as binary tensor data behind a JSON header; never over --max-body-bytes."""
        return max(self.json_bytes, min(JSON_BYTES_OTHER + self.frame_bytes, self.max_body_bytes))

    @property
    def message_bytes(self) -> int:
        """A WebSocket message longer than this closes the connection (1009) unread; up to it, one
        too long for a chunk is answered with an error and the stream goes on."""
        return 2 * max(self.json_bytes, self.frame_bytes)


BODY_TIMEOUT_S = 10.0


async def read_body(request: Request, limit: int, json_only: bool = True) -> bytes:
    """The request body, refused with 415 unless it is JSON (``json_only``; else JSON, binary or
    untyped, as the Open Inference Protocol's clients send it), with 413 as soon as it is known to
    exceed ``limit`` bytes, and with 408 if it takes over 10 s to arrive (a stalled body would hold
    an in-flight slot). A body sent with ``Content-Encoding: gzip`` or ``deflate`` (tritonclient's
    request compression) is inflated as it arrives, and held to ``limit`` once inflated: a small
    body that would inflate past it is refused while inflating, never inflated whole."""
    declared = request.headers.get("content-length")
    if declared != "0" and (declared is not None or "transfer-encoding" in request.headers):
        _require_type(request.headers.get("content-type"), json_only)
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the body is {declared} bytes; the limit is {limit}")
    inflater = _inflater(request.headers.get("content-encoding"))

    async def read() -> bytes:
        parts, size, sent = [], 0, 0
        async for part in request.stream():
            sent += len(part)
            if sent > limit:
                raise TooLarge(f"the body exceeds the limit of {limit} bytes")
            if inflater is not None:
                part = _inflate(inflater, part, limit - size)
            size += len(part)
            if size > limit:
                raise TooLarge(f"the body exceeds the limit of {limit} bytes")
            parts.append(part)
        if inflater is not None and not inflater.eof:
            raise BadRequest("the compressed body ends before its compressed data does")
        return b"".join(parts)

    try:
        if sys.version_info >= (3, 11):  # a timer handle, where wait_for makes a task per request
            async with asyncio.timeout(BODY_TIMEOUT_S):
                return await read()
        return await asyncio.wait_for(read(), BODY_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {BODY_TIMEOUT_S:.0f} s") from None


# Content-Encoding -> zlib's window bits for it: gzip's wrapper, or zlib's (HTTP's "deflate").
ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def _inflater(encoding: str | None) -> Any:
    """A decompressor for the body's ``Content-Encoding``, or None for a body sent as it is."""
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        return None
    if name not in ENCODINGS:
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not understood: send the body as it is, or with "
            "gzip or deflate"
        )
    return zlib.decompressobj(ENCODINGS[name])


def _inflate(inflater: Any, part: bytes, room: int) -> bytes:
    """``part`` inflated, ``room`` + 1 bytes at most: one more says the body is over its limit."""
    try:
        found = inflater.decompress(part, room + 1)
    except zlib.error:
        raise BadRequest("the body is not valid data of its Content-Encoding") from None
    if inflater.eof and inflater.unused_data:
        raise BadRequest("the body has bytes after the end of its compressed data")
    return found


def _require_type(content_type: str | None, json_only: bool) -> None:
    """Bodies are JSON, and must say so. A web page on another site can send a form, text or an
    untyped body to this server without asking the browser first (no CORS preflight); it cannot
    send ``application/json``. So no such request is ever taken for a chunk or a session. The
    Open Inference Protocol's clients send binary tensors untyped or as ``application/octet-stream``
    (``json_only`` False): those are taken there, and forms and text are not either."""
    media = (content_type or "").partition(";")[0].strip().lower()
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        return
    if not json_only:
        if media in ("", "application/octet-stream"):
            return
        raise UnsupportedMediaType(
            f"the body must be JSON (Content-Type: application/json) or binary tensor data "
            f"(application/octet-stream, or untyped); this one is {media}"
        )
    raise UnsupportedMediaType(
        f"the body must be JSON sent with Content-Type: application/json (this one is "
        f"{media or 'untyped'}); with curl, use --json"
    )


def invalid_fields(what: str, errors: list[dict[str, Any]], where: tuple = ()) -> InvalidInput:
    """Pydantic's errors as the one 422 every validation gives: ``what: field: why; ...``, each
    field also in ``errors`` (``loc`` prefixed with ``where``, e.g. ``("body",)``)."""
    found = [{"loc": [*where, *e.get("loc", ())], "msg": e.get("msg", "")} for e in errors]
    said = "; ".join(".".join(map(str, e["loc"][len(where) :])) + ": " + e["msg"] for e in found)
    return InvalidInput(f"{what}: {said or 'expected a JSON object'}", errors=found)


def validated(schema: type[Model], document: Any, what: str) -> Model:
    """A JSON document read as a pydantic ``schema``, or :func:`invalid_fields`."""
    try:
        return schema.model_validate(document)
    except ValidationError as exc:
        raise invalid_fields(what, exc.errors(), ("body",)) from None


def load_json(body: bytes) -> Any:
    """orjson, except that NaN and Infinity literals (which Python's json writes) are understood,
    so that such a body is answered 422 for its values rather than 400 for its syntax."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            # Decoded here as UTF-8 only: json.loads would guess UTF-16 or UTF-32 from bytes.
            return json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise BadRequest(
                f"the body is not valid UTF-8 JSON (or nests too deep): {exc}"
            ) from None


def parse_chunk(body: bytes, features: int | None, max_steps: int) -> Chunk:
    return chunk_from_document(load_json(body), features, max_steps, body)


def chunk_from_document(
    document: Any, features: int | None, max_steps: int, body: bytes = b""
) -> Chunk:
    if not isinstance(document, dict) or "inputs" not in document:
        raise InvalidInput('the body must be a JSON object with "inputs": T rows of F numbers')
    seq = document.get("seq")
    if seq is not None and (type(seq) is not int or seq < 0):
        raise InvalidInput('"seq" must be a non-negative integer')
    return Chunk(parse_inputs(document["inputs"], features, max_steps, body), seq)


def parse_frame(frame: bytes, features: int, max_steps: int) -> np.ndarray:
    """A binary WebSocket chunk: float32 little-endian, T x F row-major."""
    row = 4 * features
    if not frame or len(frame) % row:
        raise InvalidInput(
            f"a binary chunk must be a positive multiple of {row} bytes (T rows of {features} "
            f"float32); got {len(frame)}"
        )
    steps = len(frame) // row
    if steps > max_steps:
        raise TooLarge(f"the chunk has {steps} time steps; the limit is {max_steps}")
    array = np.frombuffer(frame, "<f4").reshape(steps, features).astype(np.float32)
    if not np.isfinite(array).all():
        raise InvalidInput("the chunk holds NaN or infinity")
    return array


def parse_inputs(
    inputs: Any, features: int | None, max_steps: int, body: bytes = b""
) -> np.ndarray:
    """``inputs`` as float32 ``[T, F]``; ``body`` lets the common case skip a per-number scan.
    ``features`` None: any F (a flat list is F = 1), for a chunk whose session's model is not
    known yet (the engine's rules check F against it)."""
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput('"inputs" must be a non-empty list of T rows (T = 0 is not a chunk)')
    if len(inputs) > max_steps:  # before any work that grows with T
        raise TooLarge(f"the chunk has {len(inputs)} time steps; the limit is {max_steps}")
    # NumPy turns true/false into 1/0 without a word, so look for them when the text has any.
    if (not body or b"true" in body or b"false" in body) and has_bool(inputs):
        raise InvalidInput('"inputs" must hold numbers only; found true or false')
    try:
        array = np.array(inputs)
    except ValueError:
        raise InvalidInput(
            f'"inputs" is ragged: every row must have {features or "the same count of"} numbers'
        ) from None
    if array.dtype.kind not in "iuf":
        if _holds_null(inputs):
            # JSON has no NaN or infinity: JavaScript's JSON.stringify and orjson write them null.
            raise InvalidInput(
                '"inputs" holds null where a number should be: NaN and infinity (which JSON '
                "encoders write as null) are not inputs; send finite numbers"
            )
        raise InvalidInput(
            '"inputs" must hold numbers only; found a string, object or an integer too long'
        )
    if array.ndim == 1 and features in (1, None):
        array = array[:, None]
    if features is None and (array.ndim != 2 or not array.shape[1]):
        raise InvalidInput(
            f'"inputs" has shape {list(array.shape)}; it must be T rows of F numbers'
        )
    if features is not None and (array.ndim != 2 or array.shape[1] != features):
        raise InvalidInput(
            f'"inputs" has shape {list(array.shape)}; the model takes rows of {features} '
            f"feature{'s' if features != 1 else ''}"
            + (" (a flat list is accepted only when F = 1)" if array.ndim == 1 else "")
        )
    steps = array.shape[0]
    if steps > max_steps:
        raise TooLarge(f"the chunk has {steps} time steps; the limit is {max_steps}")
    with np.errstate(over="ignore"):
        array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise InvalidInput('"inputs" holds NaN or infinity (or a number too large for float32)')
    return array


def has_bool(value: Any) -> bool:
    return _holds(value, lambda item: isinstance(item, bool))


def _holds_null(value: Any) -> bool:
    return _holds(value, lambda item: item is None)


def _holds(value: Any, found: Callable[[Any], bool]) -> bool:
    pending = [value]  # a loop, not recursion: the nesting depth is the client's to choose
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(item)
        elif found(item):
            return True
    return False


def parse_state(document: Any, spec: ModelSpec) -> list[np.ndarray]:
    """A PUT state document as one float32 row per state tensor, in model order."""
    if not isinstance(document, dict):
        raise InvalidInput("the state document must be a JSON object with a 'layers' list")
    model = document.get("model")
    if isinstance(model, dict) and model.get("fingerprint") not in (None, spec.fingerprint):
        raise Conflict(
            f"the state was made by a different model (fingerprint {model.get('fingerprint')!r}); "
            f"the session runs {spec.name} version {spec.version}, {spec.fingerprint!r}",
            fingerprint=spec.fingerprint,
        )
    layers = document.get("layers")
    expected = [layer.name for layer in spec.recurrent]
    if (
        not isinstance(layers, list)
        or [layer.get("name") if isinstance(layer, dict) else None for layer in layers] != expected
    ):
        raise InvalidInput(f"'layers' must list the recurrent layers {expected} in this order")
    values = []
    for layer, given in zip(spec.recurrent, layers):
        states = given.get("states")
        shape = (layer.state_tensors, layer.units)
        try:
            array = np.array(states)
        except (ValueError, RecursionError):
            array = None
        if (
            array is None
            or array.shape != shape
            or array.dtype.kind not in "iuf"
            or has_bool(states)
        ):
            raise InvalidInput(
                f"layer {layer.name!r} needs 'states' as {shape[0]} list(s) of {shape[1]} numbers"
            )
        with np.errstate(over="ignore"):
            array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise InvalidInput(f"layer {layer.name!r} has a state that is NaN or infinite")
        values.extend(array)
    return values
