"""The state table: one float32 row per session in each state tensor, like a stateful Keras batch.

A Keras layer built with ``stateful=True`` and batch size N holds its state as ``[N, units]`` variables;
row i continues sequence i. The table is the same thing, N = capacity, with rows handed out to sessions
and gathered into the batch of whichever sessions have a chunk waiting.
"""

from __future__ import annotations

import numpy as np


class SlotTable:
    def __init__(self, capacity: int, state_units: list[int]):
        self.capacity = capacity
        self.tensors = [np.zeros((capacity, units), np.float32) for units in state_units]
        # Popping from the end hands out low slots first, which keeps the table dense.
        self._free = list(range(capacity - 1, -1, -1))

    @property
    def used(self) -> int:
        return self.capacity - len(self._free)

    def allocate(self) -> int | None:
        """A zeroed slot, or None when every slot is taken."""
        return self._free.pop() if self._free else None

    def release(self, slot: int) -> None:
        self.zero(slot)
        self._free.append(slot)

    def zero(self, slot: int) -> None:
        for tensor in self.tensors:
            tensor[slot] = 0.0

    def gather(self, slots: np.ndarray) -> list[np.ndarray]:
        return [tensor[slots] for tensor in self.tensors]

    def scatter(self, slots: np.ndarray, values: list[np.ndarray]) -> None:
        for tensor, value in zip(self.tensors, values):
            tensor[slots] = value

    def row(self, slot: int) -> list[np.ndarray]:
        return [tensor[slot].copy() for tensor in self.tensors]

    def set_row(self, slot: int, values: list[np.ndarray]) -> None:
        for tensor, value in zip(self.tensors, values):
            tensor[slot] = value
