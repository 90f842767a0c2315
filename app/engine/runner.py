"""One batch through the model: pad, run, cut. Plain NumPy around the compiled step: no asyncio, no
store, nothing shared, so it runs on the model thread and can be tested alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from app.model.step import StreamingModel


@dataclass
class RowResult:
    outputs: np.ndarray  # float32: [T, size] per step, else [size]
    states: list[np.ndarray]  # the new row of each state tensor


class BatchRunner:
    def __init__(self, model: StreamingModel):
        self.model = model
        self.version = model.spec.version  # what answers name as having computed them
        self.features = model.spec.input_features
        self.per_step = model.spec.per_step

    def run(self, inputs: list[np.ndarray], states: list[np.ndarray]) -> list[RowResult | None]:
        """Each row's chunk ``inputs[i]`` [T_i, F] from its state ``states[k][i]``. A row whose
        outputs or new state are not all finite is None: it must not be applied (so a session's
        state is always finite), and the rows beside it are unaffected."""
        lengths = np.fromiter((len(x) for x in inputs), np.int32, len(inputs))
        longest = int(lengths.max())
        if lengths.min() == longest:  # the usual case for streams: one copy, no padding
            batch = np.stack(inputs)
        else:  # right-padded; the padding is masked and moves no state
            batch = np.zeros((len(inputs), longest, self.features), np.float32)
            for i, x in enumerate(inputs):
                batch[i, : len(x)] = x
        outputs, new_states = self.model.run(batch, lengths, states)
        finite = _finite_rows(outputs, new_states, lengths if self.per_step else None)
        rows: list[RowResult | None] = []
        for i in range(len(inputs)):
            if finite[i]:
                out = outputs[i, : lengths[i]] if self.per_step else outputs[i]
                rows.append(RowResult(out, [s[i] for s in new_states]))
            else:
                rows.append(None)
        return rows


def _finite_rows(
    outputs: np.ndarray, states: list[np.ndarray], lengths: np.ndarray | None
) -> np.ndarray:
    """Which rows have finite outputs and states. With ``lengths`` (per-step outputs, [B, T, size])
    only each row's own steps count, not the padding after them."""
    finite = np.isfinite(outputs)
    if lengths is not None:
        finite = finite.all(axis=2) | (np.arange(outputs.shape[1]) >= lengths[:, None])
    ok = finite.reshape(len(finite), -1).all(axis=1)
    for state in states:
        ok &= np.isfinite(state).all(axis=1)
    return ok
