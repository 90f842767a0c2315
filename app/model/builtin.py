"""The built-in models: ``seed`` (the notebook's GRU, built here) and ``default`` (a small trained
forecaster, the file beside this module, which :mod:`app.model.loader` reads like any other)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL_FILE = Path(__file__).with_name("default.keras")
BUILTINS = ("default", "seed")


def build_seed_model():
    """The seed notebook's ``GRU(5)`` over one feature, returning the last output.

    The notebook's weights were random; seeded initializers make them the same on every machine so
    that the README's walk-through and the tests see the same numbers.
    """
    import keras

    return keras.Sequential(
        [
            keras.Input(shape=(None, 1), name="sequence"),  # named: Keras numbers unnamed ones
            keras.layers.GRU(
                5,
                name="rnn",
                kernel_initializer=keras.initializers.GlorotUniform(seed=1),
                recurrent_initializer=keras.initializers.Orthogonal(seed=2),
                bias_initializer=keras.initializers.RandomUniform(-0.1, 0.1, seed=3),
            ),
        ],
        name="seed",
    )
