"""The compiled step against Keras ``stateful=True``: random models, sequences and chunkings."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from app.model.step import StreamingModel
from tests.support.models import architectures, chunked_sequences, split
from tests.support.reference import StatefulReference

ATOL = 1e-5


@settings(max_examples=20)
@given(architecture=architectures, data=st.data())
def test_chunked_equals_keras_stateful_even_when_padded(architecture, data):
    model = architecture.build()
    streaming = StreamingModel(model, name="random")
    reference = StatefulReference(model)
    sequence, cuts = data.draw(chunked_sequences(architecture.features))
    states = [np.zeros((1, units), np.float32) for units in streaming.spec.state_units]
    rng = np.random.default_rng(0)
    for chunk in split(sequence, cuts):
        expected = reference.feed(chunk)
        # Our row shares the call with a longer neighbour, so it is padded and masked.
        width = len(chunk) + int(rng.integers(0, 4))
        batch = rng.uniform(-3, 3, (2, width, architecture.features)).astype(np.float32)
        batch[0, : len(chunk)] = chunk
        batch[0, len(chunk):] = 7.0  # padding values must not matter
        neighbour = [rng.normal(size=(1, s.shape[1])).astype(np.float32) for s in states]
        both = [np.concatenate([mine, theirs]) for mine, theirs in zip(states, neighbour)]
        outputs, new_states = streaming.run(batch, np.array([len(chunk), width]), both)
        mine = outputs[0, : len(chunk)] if streaming.spec.per_step else outputs[0]
        np.testing.assert_allclose(mine, expected, atol=ATOL)
        states = [s[:1] for s in new_states]
        for got, want in zip(states, reference.states()):
            np.testing.assert_allclose(got[0], want, atol=ATOL)


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
