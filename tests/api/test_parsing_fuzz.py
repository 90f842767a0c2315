"""Fuzzing the hand-written parsers: random bytes and random JSON never raise anything but the
documented errors, and whatever they accept is a finite float32 [T, F] within the limits."""

import json

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from app.api.parsing import parse_chunk, parse_frame, parse_state
from app.errors import BadRequest, Conflict, InvalidInput, TooLarge
from app.model.spec import ModelSpec, RecurrentLayer

DOCUMENTED = (BadRequest, InvalidInput, TooLarge)
SPEC = ModelSpec("m", "sha256:x", 2, True, 1, (RecurrentLayer("lstm", "LSTM", 3, 2),))

numbers = st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=5))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=30,
)
chunk_like = st.fixed_dictionaries(
    {"inputs": st.one_of(json_values, st.lists(st.lists(numbers, max_size=3), max_size=6))},
    optional={"seq": json_values},
)


def check_chunk(body: bytes, features: int = 2, max_steps: int = 8):
    try:
        chunk = parse_chunk(body, features, max_steps)
    except DOCUMENTED:
        return
    assert chunk.inputs.dtype == np.float32 and chunk.inputs.ndim == 2
    assert chunk.inputs.shape[1] == features and 1 <= chunk.inputs.shape[0] <= max_steps
    assert np.isfinite(chunk.inputs).all()
    assert chunk.seq is None or (type(chunk.seq) is int and chunk.seq >= 0)


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_random_bytes_as_a_chunk_body(body):
    check_chunk(body)


@settings(max_examples=500)
@given(st.one_of(json_values, chunk_like))
def test_random_json_as_a_chunk_body(document):
    check_chunk(json.dumps(document).encode())  # json writes NaN and Infinity too
    try:
        check_chunk(orjson.dumps(document))
    except orjson.JSONEncodeError:
        pass


@settings(max_examples=500)
@given(st.binary(max_size=120), st.integers(1, 4))
def test_random_bytes_as_a_websocket_frame(frame, features):
    try:
        inputs = parse_frame(frame, features, max_steps=6)
    except (InvalidInput, TooLarge):
        return
    assert inputs.shape == (len(frame) // (4 * features), features) and np.isfinite(inputs).all()


@settings(max_examples=300)
@given(
    st.one_of(
        json_values, st.fixed_dictionaries({"layers": json_values}, optional={"model": json_values})
    )
)
def test_random_json_as_a_state_document(document):
    try:
        values = parse_state(document, SPEC)
    except (InvalidInput, Conflict):
        return
    assert [v.shape for v in values] == [(3,), (3,)] and all(np.isfinite(v).all() for v in values)
