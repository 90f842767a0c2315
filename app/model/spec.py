"""What the rest of the service needs to know about the served model: plain data, no TensorFlow, so
that API worker processes (which never load the model) can have it too."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RecurrentLayer:
    name: str
    kind: str
    units: int
    state_tensors: int


@dataclass(frozen=True)
class ModelSpec:
    name: str
    fingerprint: str
    input_features: int
    per_step: bool
    output_size: int
    recurrent: tuple[RecurrentLayer, ...]

    @property
    def state_units(self) -> list[int]:
        """Width of every state tensor, flattened in model order (LSTM: h then c)."""
        return [layer.units for layer in self.recurrent for _ in range(layer.state_tensors)]
