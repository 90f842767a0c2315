"""The benchmark's scenarios and the models they serve.

Each scenario's model is a GRU over F features with a per-step Dense head, built from a fixed seed and
saved as a ``.keras`` file: the service loads the file as any user's model, and the naive baseline
builds its ``stateful=True`` twin from the same weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

OUTPUTS = 4  # per time step: a small head, like a few class scores per audio frame


@dataclass(frozen=True)
class Scenario:
    name: str
    units: int  # GRU units
    features: int  # F
    steps: int  # T, time steps per chunk
    sessions: int  # concurrent sessions (streams)
    transport: str  # "http" or "websocket"
    what: str
    outputs: int = OUTPUTS  # the per-step head's size

    def as_dict(self) -> dict:
        return asdict(self)


SMALL = Scenario("small", 64, 16, 10, 64, "http", "GRU 64, F=16, T=10, 64 sessions over HTTP")
LARGE = Scenario("large", 256, 40, 10, 1024, "http", "GRU 256, F=40, T=10, 1024 sessions over HTTP")
FRAMES = Scenario("frames", 64, 16, 1, 64, "websocket", "GRU 64, F=16, T=1, 64 WebSocket streams")
# Live streams: each of ``sessions`` streams sends a chunk every 100 ms (bench.live).
LIVE = Scenario(
    "live",
    64,
    16,
    10,
    1000,
    "websocket",
    "GRU 64, F=16, Dense 16 per step; a T=10 chunk every 100 ms per stream",
    outputs=16,
)
SCENARIOS = {s.name: s for s in (SMALL, LARGE, FRAMES, LIVE)}


def build(
    units: int,
    features: int,
    *,
    outputs: int = OUTPUTS,
    stateful_batch: int | None = None,
    seed: int = 7,
):
    """The scenario model; with ``stateful_batch``, its Keras ``stateful=True`` form (as the seed
    notebook writes it) for that many rows."""
    import keras

    keras.utils.set_random_seed(seed)
    if stateful_batch is None:
        inputs = keras.Input(shape=(None, features), name="frames")
    else:
        inputs = keras.Input(batch_shape=(stateful_batch, None, features), name="frames")
    hidden = keras.layers.GRU(
        units, return_sequences=True, stateful=stateful_batch is not None, name="gru"
    )(inputs)
    head = keras.layers.Dense(outputs, name="head")(hidden)
    return keras.Model(inputs, head, name=f"gru{units}_f{features}")


def write_model(scenario: Scenario, folder: Path) -> Path:
    """Save the scenario's model under ``folder``; scenarios of the same shape share one file."""
    path = folder / f"gru{scenario.units}_f{scenario.features}_o{scenario.outputs}.keras"
    if not path.exists():
        build(scenario.units, scenario.features, outputs=scenario.outputs).save(path)
    return path
