"""The ONNX runtime: the exported step against Keras ``stateful=True``, and what happens when the
exporter cannot write a model or writes one that disagrees (TensorFlow serves it, exactly)."""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import ModelError
from app.model import export
from app.model.step import StreamingModel
from tests.support.models import architectures, chunked_sequences, split
from tests.support.reference import assert_step_streams_like_keras


@settings(max_examples=15, deadline=None)
@given(architecture=architectures, data=st.data())
def test_random_stacks_run_on_onnx_runtime_exactly(architecture, data):
    model = architecture.build()
    streaming = StreamingModel(model, name="random", runtime="onnx")
    assert streaming.spec.runtime == "onnx"
    sequence, cuts = data.draw(chunked_sequences(architecture.features))
    assert_step_streams_like_keras(streaming, model, split(sequence, cuts))


def zoo():
    """Every layer kind the exporter writes, around stacked LSTM, GRU (both reset_after) and
    SimpleRNN, with a residual branch and a join."""
    keras.utils.set_random_seed(5)
    inputs = keras.Input(shape=(None, 3))
    x = keras.layers.Rescaling(0.5, offset=0.1)(inputs)
    x = keras.layers.LSTM(4, return_sequences=True)(x)
    x = keras.layers.LayerNormalization()(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.GRU(5, return_sequences=True, reset_after=False)(x)
    y = keras.layers.TimeDistributed(keras.layers.Dense(5, activation="tanh"))(x)
    x = keras.layers.Add()([x, y])
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Activation("swish")(x)
    z = keras.layers.Dense(2, activation="elu")(x)
    x = keras.layers.Concatenate()([x, z])
    x = keras.layers.LeakyReLU(negative_slope=0.1)(x)
    x = keras.layers.GRU(3, return_sequences=True, activation="relu")(x)
    x = keras.layers.SimpleRNN(2, use_bias=False)(x)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([w + rng.uniform(0.5, 1.5, w.shape) for w in layer.get_weights()])
    return model


def test_every_layer_the_exporter_writes_runs_on_onnx_exactly():
    model = zoo()
    streaming = StreamingModel(model, "zoo", runtime="onnx")
    sequence = np.random.default_rng(2).normal(size=(17, 3)).astype(np.float32)
    assert_step_streams_like_keras(streaming, model, np.split(sequence, [4, 10, 11]))


def masked():
    keras.utils.set_random_seed(4)
    inputs = keras.Input(shape=(None, 2))
    x = keras.layers.Masking(mask_value=0.0)(inputs)
    return keras.Model(inputs, keras.layers.GRU(3, return_sequences=True)(x))


def test_a_model_the_exporter_cannot_write_is_served_by_tensorflow_exactly():
    """A Masking layer (a mask from the data) is not written: auto serves it on TensorFlow,
    exactly, masked steps included; --runtime onnx refuses it and names the layer."""
    model = masked()
    streaming = StreamingModel(model, "masked", runtime="auto")
    assert streaming.spec.runtime == "tensorflow"
    sequence = np.random.default_rng(3).normal(size=(9, 2)).astype(np.float32)
    sequence[[1, 5]] = 0.0
    assert_step_streams_like_keras(streaming, model, np.split(sequence, [3, 5]))
    with pytest.raises(ModelError, match="cannot run on ONNX Runtime.*Masking"):
        StreamingModel(model, "masked", runtime="onnx")


def test_an_export_that_disagrees_with_tensorflow_does_not_serve(monkeypatch):
    """A wrong graph is a fault no model produces on purpose: a miswritten activation stands in
    for an exporter bug. The check at load catches it; auto falls back, onnx refuses."""
    monkeypatch.setitem(export._RECURRENT_ACTIVATIONS, "tanh", "Relu")
    keras.utils.set_random_seed(6)
    inputs = keras.Input(shape=(None, 2))
    model = keras.Model(inputs, keras.layers.GRU(3, return_sequences=True)(inputs))
    streaming = StreamingModel(model, "wrong", runtime="auto")
    assert streaming.spec.runtime == "tensorflow"
    assert_step_streams_like_keras(streaming, model, [np.ones((3, 2), np.float32)])
    with pytest.raises(ModelError, match="differs from TensorFlow"):
        StreamingModel(model, "wrong", runtime="onnx")


def test_the_tensorflow_runtime_is_kept_when_asked():
    model = zoo()
    assert StreamingModel(model, "zoo", runtime="tensorflow").spec.runtime == "tensorflow"
