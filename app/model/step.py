"""The compiled step: one TensorFlow call runs a chunk batch for many sessions at once.

The step is a ``tf.function`` traced once over relaxed shapes ``[None, None, F]``: any batch size and
any chunk length reuse the same graph, so nothing is traced after start-up and the first request costs
what the thousandth does. Chunks of different lengths are right-padded to the longest in the batch and
masked (see :meth:`StreamGraph.forward`).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from app.errors import ModelError
from app.model.graph import StreamGraph
from app.model.spec import ModelSpec


def fingerprint(model, recurrent_names: set[str]) -> str:
    """A hash of the architecture and every weight: equal fingerprints compute equal functions.

    Names Keras makes up (``dense_3``, ``input_layer_7``) depend on what the process built before,
    so every layer name is replaced by its position; recurrent layers keep theirs, which the state
    documents show.
    """
    config = json.loads(model.to_json())
    aliases = {model.name: "model"}
    for index, layer in enumerate(config["config"].get("layers", [])):
        name = layer.get("config", {}).get("name")
        if name is not None and name not in recurrent_names:
            aliases[name] = f"layer{index}"

    def canonical(value):
        if isinstance(value, dict):
            return {k: canonical(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [canonical(v) for v in value]
        return aliases.get(value, value) if isinstance(value, str) else value

    architecture = json.dumps(canonical(config), sort_keys=True)
    digest = hashlib.sha256(architecture.encode())
    for index, weight in enumerate(model.weights):
        value = np.ascontiguousarray(weight.numpy())
        digest.update(f"{index}:{value.dtype}:{value.shape}".encode())
        digest.update(value.tobytes())
    return "sha256:" + digest.hexdigest()


class StreamingModel:
    """Runs padded chunk batches through the model, carrying each row's recurrent states."""

    def __init__(self, model, name: str):
        import tensorflow as tf

        self._graph = StreamGraph(model)
        self.spec = ModelSpec(
            name=name,
            fingerprint=fingerprint(model, {r.name for r in self._graph.recurrent}),
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
        self._check_chunk_lengths()

    def _check_chunk_lengths(self) -> None:
        """Run two chunk lengths now: a layer whose weights are tied to a fixed time length (the
        model's Input had one) fails here, at start, rather than on a request."""
        features = self.spec.input_features
        for steps in (1, 3):
            states = [np.zeros((2, units), np.float32) for units in self.spec.state_units]
            try:
                self.run(np.zeros((2, steps, features), np.float32), np.array([steps, 1]), states)
            except Exception as exc:
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ModelError(
                    f"the model cannot run on a chunk of {steps} time step(s): {message}. Its "
                    "layers must act on each time step alone, whatever the chunk's length."
                ) from exc

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
