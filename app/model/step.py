"""The compiled step: one TensorFlow call runs a chunk batch for many sessions at once.

The step is a ``tf.function`` traced once over relaxed shapes ``[None, None, F]``: any batch size and
any chunk length reuse the same graph, so nothing is traced after start-up and the first request costs
what the thousandth does. Chunks of different lengths are right-padded to the longest in the batch and
masked (see :meth:`StreamGraph.forward`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from app.model.graph import RecurrentLayer, StreamGraph


@dataclass(frozen=True)
class ModelSpec:
    """What the rest of the service needs to know about the served model."""

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


def fingerprint(model) -> str:
    """A hash of the architecture and every weight: equal fingerprints compute equal functions."""
    digest = hashlib.sha256(model.to_json(sort_keys=True).encode())
    for weight in model.weights:
        value = np.ascontiguousarray(weight.numpy())
        digest.update(f"{weight.path}:{value.dtype}:{value.shape}".encode())
        digest.update(value.tobytes())
    return "sha256:" + digest.hexdigest()


class StreamingModel:
    """Runs padded chunk batches through the model, carrying each row's recurrent states."""

    def __init__(self, model, name: str):
        import tensorflow as tf

        self._graph = StreamGraph(model)
        self.spec = ModelSpec(
            name=name,
            fingerprint=fingerprint(model),
            input_features=self._graph.input_features,
            per_step=self._graph.per_step,
            output_size=self._graph.output_size,
            recurrent=tuple(self._graph.recurrent),
        )
        signature = [
            tf.TensorSpec([None, None, self.spec.input_features], tf.float32, name="inputs"),
            tf.TensorSpec([None], tf.int32, name="lengths"),
            [tf.TensorSpec([None, units], tf.float32) for units in self.spec.state_units],
        ]

        def step(inputs, lengths, states):
            mask = tf.sequence_mask(lengths, maxlen=tf.shape(inputs)[1])
            return self._graph.forward(inputs, mask, list(states))

        # Calling the concrete function skips tf.function's per-call signature matching (about
        # 0.2 ms a call here); the signature's ``None`` dimensions make one graph serve every shape.
        self._step = tf.function(step, input_signature=signature, autograph=False).get_concrete_function()

    def run(
        self, inputs: np.ndarray, lengths: np.ndarray, states: list[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """``inputs`` [n, T, F] float32 right-padded, ``lengths`` [n], ``states`` one [n, units] each.

        Returns the outputs ([n, T, size] per step, else [n, size] after each row's last real step)
        and the new states in the same layout as ``states``.
        """
        outputs, new_states = self._step(inputs, lengths.astype(np.int32, copy=False), states)
        return outputs.numpy(), [s.numpy() for s in new_states]

    def warm(self, max_batch: int, max_steps: int) -> None:
        """Trace and run the step on the extreme shapes it will see, before any request does."""
        features = self.spec.input_features
        for n, steps in {(1, 1), (max_batch, 1), (1, max_steps), (min(max_batch, 8), min(max_steps, 8))}:
            inputs = np.zeros((n, steps, features), np.float32)
            states = [np.zeros((n, units), np.float32) for units in self.spec.state_units]
            self.run(inputs, np.full(n, steps, np.int32), states)
