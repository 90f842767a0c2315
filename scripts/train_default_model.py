"""Train the built-in ``default`` model and write it to ``app/model/default.keras``.

A GRU next-step forecaster for one noisy, trending, tick-like series: it reads the series one value per
time step and predicts, at every step, the next value. Training data is synthetic (random walks with
drift, regime changes and noise), generated from a fixed seed, and training takes a few seconds on a
CPU; with the same seed, TensorFlow and Keras versions it reproduces the committed file's weights to
float32 rounding (the CPU and its thread count move the last bits, about 1e-7).

    python scripts/train_default_model.py [--out PATH]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

SEED = 20261128
OUT = Path(__file__).resolve().parent.parent / "app" / "model" / "default.keras"


def tick_series(rng: np.random.Generator, count: int, length: int) -> np.ndarray:
    """Random walks around 0 whose drift flips now and then, with bursts of larger noise."""
    drift = rng.normal(0, 0.05, (count, 1)) * np.where(
        rng.random((count, length)) < 0.01, -1, 1
    ).cumprod(1)
    volatility = rng.uniform(0.02, 0.1, (count, 1)) * (1 + (rng.random((count, length)) < 0.05))
    steps = drift + volatility * rng.standard_normal((count, length))
    level = rng.normal(0, 1, (count, 1))
    return (level + np.cumsum(steps, axis=1)).astype(np.float32)


def train(out: Path) -> Path:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(SEED)
    series = tick_series(rng, count=512, length=65)
    inputs, targets = series[:, :-1, None], series[:, 1:, None]

    # The network predicts the next change; adding the current value back makes "no change" the
    # easy default, so it only has to learn the trend.
    value = keras.Input(shape=(None, 1), name="value")
    hidden = keras.layers.GRU(32, return_sequences=True, name="gru")(value)
    hidden = keras.layers.Dense(16, activation="tanh", name="hidden")(hidden)
    change = keras.layers.Dense(1, name="change")(hidden)
    forecast = keras.layers.Add(name="next_value")([value, change])
    model = keras.Model(value, forecast, name="default")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    model.fit(inputs, targets, batch_size=64, epochs=20, shuffle=False, verbose=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    print(f"wrote {train(parser.parse_args().out)}")
