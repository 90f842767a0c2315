"""The reference every test compares against: the same model, rebuilt with Keras ``stateful=True``."""

from __future__ import annotations

import keras
import numpy as np

RECURRENT = (keras.layers.GRU, keras.layers.LSTM, keras.layers.SimpleRNN)


class StatefulReference:
    """One sequence through a ``stateful=True`` copy of ``model``, fed chunk by chunk (or ``batch``
    sequences side by side: :func:`states_after`)."""

    def __init__(self, model, batch: int = 1):
        self.widths = [source.shape[-1] for source in model.inputs]
        inputs = [keras.Input(batch_shape=(batch, None, f)) for f in self.widths]

        def clone(layer):
            config = layer.get_config()
            if isinstance(layer, RECURRENT):
                config["stateful"] = True
            return type(layer).from_config(config)

        self.model = keras.models.clone_model(
            model,
            input_tensors=inputs if len(inputs) > 1 else inputs[0],
            clone_function=clone,
        )
        self.model.set_weights(model.get_weights())
        self.recurrent = [layer for layer in self.model.layers if isinstance(layer, RECURRENT)]

    def feed(self, chunk: np.ndarray) -> np.ndarray:
        """Outputs for ``chunk`` [T, F]: [T, size] per step, else [size]. A model of several
        inputs takes their features side by side in ``chunk`` and gives its outputs so too."""
        chunk = np.asarray(chunk, np.float32)[None]
        parts = np.split(chunk, np.cumsum(self.widths)[:-1], axis=-1)
        found = self.model(parts if len(parts) > 1 else parts[0], training=False)
        found = found if isinstance(found, (list, tuple)) else [found]
        return np.concatenate([np.asarray(f) for f in found], axis=-1)[0]

    def states(self, row: int = 0) -> list[np.ndarray]:
        """This sequence's row of every recurrent layer's ``layer.states``, in model order."""
        return [np.asarray(state)[row] for layer in self.recurrent for state in layer.states]

    def set_states(self, rows: list[np.ndarray], row: int = 0) -> None:
        """Put ``rows`` (one per state tensor, in model order) in as this sequence's state."""
        values = iter(rows)
        for layer in self.recurrent:
            for state in layer.states:
                current = np.asarray(state)
                current[row] = next(values)
                state.assign(current)

    def reset(self) -> None:
        for layer in self.recurrent:
            layer.reset_states()


def state_rows(document: dict) -> list[np.ndarray]:
    """The state vectors of a GET state document, flattened in model order."""
    return [np.asarray(s, np.float32) for layer in document["layers"] for s in layer["states"]]


def assert_streamed_like_keras(
    model, sequence: np.ndarray, chunks: list[np.ndarray], answers: list[np.ndarray], state: dict
) -> None:
    """A session fed ``chunks`` of ``sequence`` answered ``answers`` and ended in ``state``: each
    must equal a Keras ``stateful=True`` copy of ``model`` fed the same chunks, within 1e-5."""
    reference = StatefulReference(model)
    for got, chunk in zip(answers, chunks, strict=True):
        np.testing.assert_allclose(got, reference.feed(chunk), atol=1e-5)
    assert (state["seq"], state["steps"]) == (len(chunks), len(sequence))
    for got, want in zip(state_rows(state), reference.states(), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)


def outputs_at_every_step(model, sequences: np.ndarray) -> np.ndarray:
    """What ``model`` outputs after each step of whole sequences [B, L, F]: [B, L, size]. Run on a
    copy whose recurrent layers return sequences, in one call for all of them, so it is cheap to
    check thousands of chunks: the output a chunk ending at step t answers is the one at t (a model
    that returns its last output gives, at t, the output of the sequence cut after t)."""

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, RECURRENT):
            config["return_sequences"] = True
        return type(layer).from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return np.asarray(copy(np.asarray(sequences, np.float32), training=False))


def states_after(model, sequences: np.ndarray, lengths: list[int]) -> list[list[np.ndarray]]:
    """Each sequence's states (as :meth:`StatefulReference.states`) after its first ``lengths[i]``
    steps: one Keras ``stateful=True`` copy with a row per sequence, fed them all side by side and
    read as it passes each length (a Keras call costs tens of milliseconds: one per length, not
    one per sequence and chunk)."""
    reference = StatefulReference(model, batch=len(sequences))
    found: list[list[np.ndarray]] = [[] for _ in lengths]
    fed = 0
    for end in sorted(set(lengths)):
        if end > fed:
            reference.model(np.asarray(sequences[:, fed:end], np.float32), training=False)
            fed = end
        for row, length in enumerate(lengths):
            if length == end:
                found[row] = reference.states(row)
    return found


def assert_step_streams_like_keras(streaming, model, chunks: list[np.ndarray]) -> None:
    """Each chunk through ``streaming``'s step (a ``StreamingModel``) beside a longer neighbour,
    so padded and masked, carrying the state, against the stateful reference fed the same chunks."""
    reference = StatefulReference(model)
    states = [np.zeros((1, units), np.float32) for units in streaming.spec.state_units]
    rng = np.random.default_rng(0)
    for chunk in chunks:
        expected = reference.feed(chunk)
        width = len(chunk) + int(rng.integers(0, 4))
        batch = rng.uniform(-3, 3, (2, width, chunk.shape[1])).astype(np.float32)
        batch[0, : len(chunk)] = chunk
        batch[0, len(chunk) :] = 7.0  # padding values must not matter
        neighbour = [rng.normal(size=(1, s.shape[1])).astype(np.float32) for s in states]
        both = [np.concatenate([mine, theirs]) for mine, theirs in zip(states, neighbour)]
        outputs, new_states = streaming.run(batch, np.array([len(chunk), width]), both)
        mine = outputs[0, : len(chunk)] if streaming.spec.per_step else outputs[0]
        np.testing.assert_allclose(mine, expected, atol=1e-5)
        states = [s[:1] for s in new_states]
        for got, want in zip(states, reference.states()):
            np.testing.assert_allclose(got[0], want, atol=1e-5)
