"""The compiled step against Keras ``stateful=True``: random models, sequences and chunkings."""

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.model.step import AHEAD_LENGTHS, StreamingModel
from tests.support.models import Architecture, architectures, chunked_sequences, split
from tests.support.reference import assert_step_streams_like_keras

ATOL = 1e-5
GRU = Architecture(
    features=2, layers=(("GRU", 4, True),), last_returns_sequences=True, dense_head=0, seed=0
)


@settings(max_examples=20)
@given(architecture=architectures, data=st.data())
def test_chunked_equals_keras_stateful_even_when_padded(architecture, data):
    model = architecture.build()
    streaming = StreamingModel(model, name="random")
    sequence, cuts = data.draw(chunked_sequences(architecture.features))
    # Our row shares each call with a longer neighbour, so it is padded and masked.
    assert_step_streams_like_keras(streaming, model, split(sequence, cuts))


def test_fingerprint_survives_saving_and_tells_weights_apart(tmp_path):
    from app.model.loader import load_keras_file
    from tests.support.models import Architecture

    a = Architecture(1, (("GRU", 3, True),), False, 0, seed=1).build()
    a.save(tmp_path / "a.keras")
    b = load_keras_file(tmp_path / "a.keras")
    assert StreamingModel(a, "a").spec.fingerprint == StreamingModel(b, "b").spec.fingerprint
    weights = b.get_weights()
    weights[0][0, 0] += 1e-3
    b.set_weights(weights)
    assert StreamingModel(a, "a").spec.fingerprint != StreamingModel(b, "b").spec.fingerprint


@pytest.mark.slow
@settings(max_examples=4)
@given(architecture=architectures, seed=st.integers(0, 2**16))
def test_the_xla_programs_give_what_the_plain_graph_gives(architecture, seed):
    # Batch sizes and chunk lengths that fill their buckets and that are padded up to them (rows
    # of length 0, steps masked), a chunk length past the exact ones, rows of different lengths.
    streaming = StreamingModel(architecture.build(), name="random", xla=True, runtime="tensorflow")
    rng = np.random.default_rng(seed)
    shapes = [(1, 1), (3, 5), (4, 10), (5, 17)]
    batches = []
    for n, steps in shapes:
        inputs = rng.uniform(-3, 3, (n, steps, architecture.features)).astype(np.float32)
        lengths = rng.integers(1, steps + 1, n).astype(np.int32)
        lengths[0] = steps
        states = [
            rng.uniform(-1, 1, (n, units)).astype(np.float32)
            for units in streaming.spec.state_units
        ]
        batches.append((inputs, lengths, states))
        assert streaming._xla.run(inputs, lengths, states) is None  # asks for its program
    wait_for_programs(streaming, batches)
    for inputs, lengths, states in batches:
        xla_outputs, xla_states = streaming.run(inputs, lengths, states)
        outputs, new_states = streaming._step(inputs, lengths, states)
        outputs = outputs.numpy()
        if streaming.spec.per_step:
            for row, length in enumerate(lengths):
                np.testing.assert_allclose(
                    xla_outputs[row, :length], outputs[row, :length], atol=ATOL
                )
        else:
            np.testing.assert_allclose(xla_outputs, outputs, atol=ATOL)
        for got, want in zip(xla_states, new_states):
            np.testing.assert_allclose(got, want.numpy(), atol=ATOL)


@pytest.mark.slow
def test_a_chunk_length_first_seen_has_its_programs_compiled_for_every_batch_size():
    # A load that grows later must find its bigger batches' programs ready, not compile them then.
    streaming = StreamingModel(GRU.build(), name="gru", xla=True, runtime="tensorflow")
    streaming.warm(8, 1)  # batches of up to 8: buckets 1, 2, 4 and 8; no XLA program yet
    streaming.run(*zeros(streaming, 1, 5))  # one row of 5 steps asks for (1, 2, 4 and 8) x 5
    deadline = time.monotonic() + 120
    while streaming._xla.compiled < 4:
        assert time.monotonic() < deadline, f"{streaming._xla.compiled} of 4 XLA programs compiled"
        time.sleep(0.05)
    for n in (2, 3, 8):
        assert streaming._xla.run(*zeros(streaming, n, 5)) is not None


@pytest.mark.slow
def test_only_the_first_chunk_lengths_have_programs_compiled_ahead():
    # A client of many lengths must not fill memory with programs for batch sizes it never sends.
    streaming = StreamingModel(GRU.build(), name="gru", xla=True, runtime="tensorflow")
    streaming.warm(8, 1)
    lengths = range(1, AHEAD_LENGTHS + 2)
    for steps in lengths:
        streaming.run(*zeros(streaming, 1, steps))
    expected = 4 * AHEAD_LENGTHS + 1  # four sizes for each of the first lengths, one for the last
    deadline = time.monotonic() + 120
    while streaming._xla.compiled < expected:
        assert time.monotonic() < deadline, (
            f"{streaming._xla.compiled} of {expected} XLA programs compiled"
        )
        time.sleep(0.05)
    time.sleep(1)  # nothing more is compiling
    assert streaming._xla.compiled == expected


def zeros(streaming: StreamingModel, n: int, steps: int):
    """A batch of ``n`` zero chunks of ``steps`` steps: inputs, lengths, states."""
    features = streaming.spec.input_features
    return (
        np.zeros((n, steps, features), np.float32),
        np.full(n, steps, np.int32),
        [np.zeros((n, units), np.float32) for units in streaming.spec.state_units],
    )


def wait_for_programs(streaming: StreamingModel, batches, timeout: float = 120) -> None:
    """Until each batch runs on its XLA program."""
    deadline = time.monotonic() + timeout
    for batch in batches:
        while streaming._xla.run(*batch) is None:
            assert time.monotonic() < deadline, "the XLA programs did not compile"
            time.sleep(0.05)
