"""What the rest of the service needs to know about the served model: plain data, no TensorFlow, so
that API worker processes (which never load the model) can have it too."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class RecurrentLayer:
    name: str
    kind: str
    units: int
    state_tensors: int


@dataclass(frozen=True)
class TensorSpec:
    """One of the model's inputs or outputs as clients see it."""

    name: str
    dtype: str  # Keras's name: "float32", "int32", ...
    width: int  # features (an input) or size (an output)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    fingerprint: str
    input_features: int
    per_step: bool
    output_size: int
    recurrent: tuple[RecurrentLayer, ...]
    version: int = 1
    runtime: str = "tensorflow"  # what computes it: "onnx" (ONNX Runtime) or "tensorflow"
    # The tensors as the model declares them: each input's name (``keras.Input(name=...)``), dtype
    # and features, and each output's name (the layer it comes from) and size. A chunk holds the
    # inputs' features side by side in this order, and an answer the outputs'. The step computes
    # in float32.
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()

    def __post_init__(self) -> None:
        # A spec written without them (a benchmark's, an older process's) has one of each, named
        # generically.
        if not self.inputs:
            object.__setattr__(
                self, "inputs", (TensorSpec("inputs", "float32", self.input_features),)
            )
        if not self.outputs:
            object.__setattr__(
                self, "outputs", (TensorSpec("outputs", "float32", self.output_size),)
            )

    @property
    def key(self) -> str:
        """The version's name in the store and the engine: ``name/version``."""
        return model_key(self.name, self.version)

    @property
    def layout(self) -> tuple:
        """What a stream's state and its chunks look like: equal layouts take each other's state
        rows and chunks unchanged (a session may then move between them with its state)."""
        return (
            self.input_features,
            self.per_step,
            self.output_size,
            tuple((r.kind, r.units, r.state_tensors) for r in self.recurrent),
        )

    @property
    def streams_like(self) -> tuple:
        """What a client of a stream sees: the chunks it sends and the outputs it gets."""
        return self.input_features, self.per_step, self.output_size

    @property
    def state_units(self) -> list[int]:
        """Width of every state tensor, flattened in model order (LSTM: h then c)."""
        return [layer.units for layer in self.recurrent for _ in range(layer.state_tensors)]


VERSION = re.compile(r"[1-9][0-9]{0,17}")  # a positive integer, as written in a folder or a URL


def parse_version(text: str) -> int | None:
    """A version as written (``"3"``), or None if it is not one (``"0"``, ``"03"``, ``"²"``)."""
    return int(text) if VERSION.fullmatch(text) else None


def model_key(name: str, version: int) -> str:
    return f"{name}/{version}"


def split_key(key: str) -> tuple[str, int]:
    """``name/version`` back into its parts."""
    name, _, version = key.rpartition("/")
    return name, int(version)
