"""The reference every test compares against: the same model, rebuilt with Keras ``stateful=True``."""

from __future__ import annotations

import numpy as np
import keras

RECURRENT = (keras.layers.GRU, keras.layers.LSTM, keras.layers.SimpleRNN)


class StatefulReference:
    """One sequence (batch 1) through a ``stateful=True`` copy of ``model``, fed chunk by chunk."""

    def __init__(self, model):
        features = model.inputs[0].shape[-1]

        def clone(layer):
            config = layer.get_config()
            if isinstance(layer, RECURRENT):
                config["stateful"] = True
            return type(layer).from_config(config)

        self.model = keras.models.clone_model(
            model, input_tensors=keras.Input(batch_shape=(1, None, features)), clone_function=clone
        )
        self.model.set_weights(model.get_weights())
        self.recurrent = [layer for layer in self.model.layers if isinstance(layer, RECURRENT)]

    def feed(self, chunk: np.ndarray) -> np.ndarray:
        """Outputs for ``chunk`` [T, F]: [T, size] per step, else [size]."""
        return np.asarray(self.model(np.asarray(chunk, np.float32)[None], training=False))[0]

    def states(self) -> list[np.ndarray]:
        """This sequence's row of every recurrent layer's ``layer.states``, in model order."""
        return [np.asarray(state)[0] for layer in self.recurrent for state in layer.states]

    def reset(self) -> None:
        for layer in self.recurrent:
            layer.reset_states()


def state_rows(document: dict) -> list[np.ndarray]:
    """The state vectors of a GET state document, flattened in model order."""
    return [np.asarray(s, np.float32) for layer in document["layers"] for s in layer["states"]]


def assert_streamed_like_keras(model, sequence: np.ndarray, chunks: list[np.ndarray],
                               answers: list[np.ndarray], state: dict) -> None:
    """A session fed ``chunks`` of ``sequence`` answered ``answers`` and ended in ``state``: each
    must equal a Keras ``stateful=True`` copy of ``model`` fed the same chunks, within 1e-5."""
    reference = StatefulReference(model)
    for got, chunk in zip(answers, chunks, strict=True):
        np.testing.assert_allclose(got, reference.feed(chunk), atol=1e-5)
    assert (state["seq"], state["steps"]) == (len(chunks), len(sequence))
    for got, want in zip(state_rows(state), reference.states(), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
