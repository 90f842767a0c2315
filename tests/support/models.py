"""Random small recurrent models and sequences, as hypothesis strategies."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from hypothesis import strategies as st


@dataclass(frozen=True)
class Architecture:
    features: int
    layers: tuple[tuple[str, int, bool], ...]  # (kind, units, reset_after) from input to output
    last_returns_sequences: bool
    dense_head: int  # 0: no Dense head
    seed: int

    def build(self):
        keras.utils.set_random_seed(self.seed)
        inputs = keras.Input(shape=(None, self.features))
        x = inputs
        for i, (kind, units, reset_after) in enumerate(self.layers):
            last = i == len(self.layers) - 1
            options = {
                "return_sequences": self.last_returns_sequences if last else True,
                "name": f"{kind.lower()}_{i}",
            }
            if kind == "GRU":
                options["reset_after"] = reset_after
            # Biases are zero by default; random ones make sure they are carried correctly too.
            options["bias_initializer"] = keras.initializers.RandomUniform(
                -0.5, 0.5, seed=self.seed + i
            )
            x = getattr(keras.layers, kind)(units, **options)(x)
        if self.dense_head:
            x = keras.layers.Dense(self.dense_head, name="head")(x)
        return keras.Model(inputs, x)


architectures = st.builds(
    Architecture,
    features=st.integers(1, 3),
    layers=st.lists(
        st.tuples(st.sampled_from(["GRU", "LSTM", "SimpleRNN"]), st.integers(1, 6), st.booleans()),
        min_size=1,
        max_size=3,
    ).map(tuple),
    last_returns_sequences=st.booleans(),
    dense_head=st.sampled_from([0, 1, 3]),
    seed=st.integers(0, 2**16),
)


@st.composite
def chunked_sequences(draw, features: int, max_length: int = 24, max_chunk: int = 8):
    """A sequence [L, F] with values in [-3, 3] and the chunk lengths that cut it up."""
    length = draw(st.integers(1, max_length))
    seed = draw(st.integers(0, 2**32 - 1))
    sequence = np.random.default_rng(seed).uniform(-3, 3, (length, features)).astype(np.float32)
    cuts, left = [], length
    while left:
        size = draw(st.integers(1, min(left, max_chunk)))
        cuts.append(size)
        left -= size
    return sequence, cuts


def split(sequence: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    return np.split(sequence, np.cumsum(cuts)[:-1])


def triton_named(seed: int):
    """A model that names its tensors as Triton's example models do, with an INT32 input:
    ``INPUT`` [batch, time, 1] -> GRU 4 -> Dense ``OUTPUT`` 1 per step."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(None, 1), dtype="int32", name="INPUT")
    x = keras.layers.Rescaling(1.0, name="to_float")(inputs)  # int32 -> float32
    x = keras.layers.GRU(4, return_sequences=True, name="gru")(x)
    return keras.Model(inputs, keras.layers.Dense(1, name="OUTPUT")(x))


def two_inputs(seed: int):
    """A feature tensor and a mask-like signal in, two named outputs per step: ``features`` [T, 3]
    and ``gate`` [T, 1] -> Concatenate -> GRU 4 -> Dense ``level`` 2 and Dense ``alarm`` 1."""
    keras.utils.set_random_seed(seed)
    features = keras.Input(shape=(None, 3), name="features")
    gate = keras.Input(shape=(None, 1), name="gate")
    x = keras.layers.Concatenate(name="joined")([features, gate])
    x = keras.layers.GRU(4, return_sequences=True, name="gru")(x)
    outputs = [keras.layers.Dense(2, name="level")(x), keras.layers.Dense(1, name="alarm")(x)]
    return keras.Model([features, gate], outputs)


def simple_sequence():
    """What Triton's example sequence programs expect of their ``simple_sequence`` model, as a
    Keras recurrent model: ``INPUT`` (INT32, one value a step) -> ``OUTPUT``, the input plus 1 on a
    sequence's first step and the input itself after. A linear SimpleRNN of two units keeps "a step
    came before": the first unit is always 1, the second is the first's previous value (0 at the
    start of a sequence, 1 after), and ``OUTPUT`` = input + 1 - that. Exact in float32."""
    inputs = keras.Input(shape=(None, 1), dtype="int32", name="INPUT")
    x = keras.layers.Rescaling(1.0, name="to_float")(inputs)
    rnn = keras.layers.SimpleRNN(2, activation="linear", return_sequences=True, name="started")
    seen = rnn(x)
    rnn.set_weights(
        [
            np.zeros((1, 2), np.float32),
            np.array([[0, 1], [0, 0]], np.float32),  # unit 2 <- unit 1's previous value
            np.array([1, 0], np.float32),  # unit 1 = 1 at every step
        ]
    )
    joined = keras.layers.Concatenate(name="joined")([x, seen])
    head = keras.layers.Dense(1, name="OUTPUT")
    out = head(joined)
    head.set_weights([np.array([[1], [0], [-1]], np.float32), np.array([1], np.float32)])
    return keras.Model(inputs, out, name="simple_sequence")
