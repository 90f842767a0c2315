"""Which models stream: every supported layer kind gives Keras's numbers; the rest are refused by name."""

import subprocess
import sys

import keras
import numpy as np
import pytest

from app.errors import ModelError
from app.model.loader import load_model
from app.model.step import StreamingModel
from harness.servers import ROOT
from tests.support.reference import StatefulReference


def sequential(*layers, features=2):
    return keras.Sequential([keras.Input(shape=(None, features)), *layers])


UNSTREAMABLE = {
    "bidirectional": (
        lambda: sequential(keras.layers.Bidirectional(keras.layers.GRU(3), name="both_ways")),
        ["both_ways", "Bidirectional", "whole sequence"],
    ),
    "conv1d": (
        lambda: sequential(keras.layers.Conv1D(4, 3, name="conv"), keras.layers.GRU(3)),
        ["conv", "Conv1D", "neighbouring time steps"],
    ),
    "pooling": (
        lambda: sequential(
            keras.layers.GRU(3, return_sequences=True),
            keras.layers.GlobalAveragePooling1D(name="pool"),
        ),
        ["pool", "GlobalAveragePooling1D", "pooling over time"],
    ),
    "backwards": (
        lambda: sequential(keras.layers.LSTM(3, go_backwards=True, name="rev")),
        ["rev", "go_backwards"],
    ),
    "no_state": (lambda: sequential(keras.layers.Dense(3)), ["no GRU, LSTM or SimpleRNN"]),
    "time_axis_softmax": (
        lambda: sequential(
            keras.layers.GRU(3, return_sequences=True),
            keras.layers.Softmax(axis=1, name="soft_time"),
        ),
        ["soft_time", "axis 1"],
    ),
}


@pytest.mark.parametrize("case", sorted(UNSTREAMABLE))
def test_unstreamable_models_are_refused_with_the_layer_and_the_reason(case):
    model, phrases = UNSTREAMABLE[case]
    with pytest.raises(ModelError) as refused:
        StreamingModel(model(), name=case)
    for phrase in phrases:
        assert phrase in str(refused.value)


def test_attention_an_input_that_is_not_a_sequence_and_mixed_outputs_are_refused():
    x = keras.Input(shape=(None, 4))
    attended = keras.layers.MultiHeadAttention(2, 2, name="attend")(x, x)
    with pytest.raises(ModelError, match="attend.*attention mixes time steps"):
        StreamingModel(keras.Model(x, keras.layers.GRU(2)(attended)), "attention")
    a, static = keras.Input(shape=(None, 1)), keras.Input(shape=(3,), name="static")
    joined = keras.layers.Concatenate()([keras.layers.GRU(2)(a), static])
    with pytest.raises(ModelError, match="input 'static' has shape \\(None, 3\\); every input"):
        StreamingModel(keras.Model([a, static], joined), "static")
    hidden = keras.layers.GRU(2, return_sequences=True)(a)
    mixed = keras.Model(a, [hidden, keras.layers.GRU(2)(hidden)])
    with pytest.raises(ModelError, match="mix per-step outputs"):
        StreamingModel(mixed, "mixed")


def test_two_inputs_and_two_outputs_stream_exactly_on_each_runtime():
    from tests.support.models import two_inputs

    model = two_inputs(7)
    chunks = [
        np.random.default_rng(k).uniform(-2, 2, (n, 4)).astype(np.float32)
        for k, n in enumerate((3, 1, 4))
    ]
    for runtime in ("onnx", "tensorflow"):
        served = StreamingModel(model, "pair", runtime=runtime)
        assert served.spec.runtime == runtime and served.spec.input_features == 4
        assert [(t.name, t.width) for t in served.spec.inputs] == [("features", 3), ("gate", 1)]
        assert [(t.name, t.width) for t in served.spec.outputs] == [("level", 2), ("alarm", 1)]
        reference = StatefulReference(model)
        states = [np.zeros((1, units), np.float32) for units in served.spec.state_units]
        for chunk in chunks:
            outputs, states = served.run(chunk[None], np.array([len(chunk)], np.int32), states)
            np.testing.assert_allclose(outputs[0], reference.feed(chunk), atol=1e-5)


def test_every_supported_layer_kind_streams_exactly():
    """Masking (with masked steps inside chunks), normalisations, dropout, TimeDistributed,
    activations and a residual branch, around stacked LSTM, GRU (both reset_after) and SimpleRNN."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input(shape=(None, 3))
    x = keras.layers.Masking(mask_value=0.0)(inputs)
    x = keras.layers.LSTM(4, return_sequences=True)(x)
    x = keras.layers.LayerNormalization()(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.GRU(5, return_sequences=True, reset_after=False)(x)
    y = keras.layers.TimeDistributed(keras.layers.Dense(5))(x)
    x = keras.layers.Add()([x, y])
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.GRU(3, return_sequences=True, reset_after=True)(x)
    x = keras.layers.SimpleRNN(2)(x)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    bn = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)][0]
    bn.set_weights(
        [w + np.random.default_rng(1).uniform(0.5, 1.5, w.shape) for w in bn.get_weights()]
    )

    streaming = StreamingModel(model, "zoo")
    reference = StatefulReference(model)
    sequence = np.random.default_rng(2).normal(size=(17, 3)).astype(np.float32)
    sequence[[2, 3, 9, 16]] = 0.0  # masked steps, one at a chunk's end
    states = [np.zeros((1, u), np.float32) for u in streaming.spec.state_units]
    for chunk in np.split(sequence, [4, 10, 11]):
        outputs, states = streaming.run(chunk[None], np.array([len(chunk)]), states)
        np.testing.assert_allclose(outputs[0], reference.feed(chunk), atol=1e-5)
        for got, want in zip(states, reference.states()):
            np.testing.assert_allclose(got[0], want, atol=1e-5)


def test_lambda_file_is_refused_in_safe_mode(tmp_path):
    model = sequential(keras.layers.Lambda(lambda t: t * 2), keras.layers.GRU(2))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ModelError, match="Lambda"):
        load_model(str(path))


def test_corrupt_or_missing_files_are_refused(tmp_path):
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelError, match="not a Keras 3 .keras archive|cannot load"):
        load_model(str(corrupt))
    with pytest.raises(ModelError, match="does not exist"):
        load_model(str(tmp_path / "missing.keras"))


@pytest.mark.process
def test_serve_refuses_an_unstreamable_file_at_start(tmp_path):
    path = tmp_path / "bidi.keras"
    UNSTREAMABLE["bidirectional"][0]().save(path)
    done = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--model", str(path), "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "both_ways" in done.stderr and "Bidirectional" in done.stderr


def functional(build, features=3, time=None):
    inputs = keras.Input(shape=(time, features))
    return keras.Model(inputs, build(inputs))


MORE_UNSTREAMABLE = {
    "explicit mask": (
        lambda: functional(
            lambda x: keras.layers.GRU(3, name="g")(
                x, mask=keras.ops.any(keras.ops.not_equal(x, 0.0), -1)
            )
        ),
        ["g", "mask="],
    ),
    "initial state from another layer": (
        lambda: functional(
            lambda x: keras.layers.GRU(3, name="g2")(x, initial_state=[keras.layers.GRU(3)(x)])
        ),
        ["g2", "initial_state="],
    ),
    "time axis re-made": (
        lambda: functional(
            lambda x: keras.layers.GRU(2)(
                keras.layers.Reshape((1, 3), name="again")(keras.layers.GRU(3)(x))
            )
        ),
        ["again", "time axis"],
    ),
    "bare op": (lambda: functional(lambda x: keras.layers.GRU(3)(x * 2.0)), ["bare keras.ops"]),
    "bare op at the output": (
        lambda: functional(lambda x: keras.layers.GRU(3)(x) * 2.0),
        ["bare keras.ops"],
    ),
    "weights tied to a fixed length": (
        lambda: functional(lambda x: keras.layers.GRU(2)(keras.layers.PReLU()(x)), time=10),
        ["chunk of 1 time step"],
    ),
    "einsum over time": (
        lambda: functional(
            lambda x: keras.layers.GRU(2)(keras.layers.EinsumDense("abc,bd->adc", (10, 3))(x)),
            time=10,
        ),
        ["chunk of 1 time step"],
    ),
}


@pytest.mark.parametrize("case", sorted(MORE_UNSTREAMABLE))
def test_subtler_unstreamable_models_are_refused(case):
    build, phrases = MORE_UNSTREAMABLE[case]
    with pytest.raises(ModelError) as refused:
        StreamingModel(build(), name="x")
    for phrase in phrases:
        assert phrase in str(refused.value)


def test_a_layer_without_mask_support_ends_the_mask_as_in_keras():
    keras.utils.set_random_seed(5)
    model = sequential(
        keras.layers.Masking(0.0),
        keras.layers.EinsumDense("abc,cd->abd", (None, 4)),
        keras.layers.GRU(3, return_sequences=True),
        features=3,
    )
    streaming, reference = StreamingModel(model, "einsum"), StatefulReference(model)
    sequence = np.random.default_rng(0).normal(size=(9, 3)).astype(np.float32)
    sequence[[1, 5]] = 0.0
    states = [np.zeros((1, 3), np.float32)]
    for chunk in np.split(sequence, [4]):
        outputs, states = streaming.run(chunk[None], np.array([len(chunk)]), states)
        np.testing.assert_allclose(outputs[0], reference.feed(chunk), atol=1e-5)


def test_the_same_model_built_twice_has_the_same_fingerprint():
    from app.model.builtin import build_seed_model

    assert (
        StreamingModel(build_seed_model(), "a").spec.fingerprint
        == StreamingModel(build_seed_model(), "b").spec.fingerprint
    )
