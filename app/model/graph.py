"""Which Keras models can be streamed, and how to run one chunk through the model's own layers.

A model streams when every layer between its input and its recurrent layers works on each time step on
its own: then feeding a sequence in chunks, carrying the recurrent states across, gives exactly what
feeding it whole gives. Anything that looks across time steps (convolutions, attention, pooling,
bidirectional or backwards recurrence) is refused by name before the server starts.
"""

from __future__ import annotations

import inspect
import itertools
from dataclasses import dataclass
from typing import Any

from app.errors import ModelError
from app.model.framework import keras
from app.model.spec import RecurrentLayer, TensorSpec

RECURRENT_KINDS = {
    "GRU": keras.layers.GRU,
    "LSTM": keras.layers.LSTM,
    "SimpleRNN": keras.layers.SimpleRNN,
}

# Layers that are the identity at inference (dropout, noise, regularisers).
IDENTITY_AT_INFERENCE = {
    "Dropout",
    "SpatialDropout1D",
    "GaussianDropout",
    "GaussianNoise",
    "AlphaDropout",
    "ActivityRegularization",
    "Identity",
}
# Layers that act on each time step independently (or are the identity at inference).
PER_STEP = IDENTITY_AT_INFERENCE | {
    "InputLayer",
    "Dense",
    "EinsumDense",
    "LayerNormalization",
    "BatchNormalization",
    "UnitNormalization",
    "Normalization",
    "Rescaling",
    "TimeDistributed",
    "Activation",
    "ReLU",
    "LeakyReLU",
    "PReLU",
    "ELU",
    "Softmax",
    "Masking",
    "Add",
    "Subtract",
    "Multiply",
    "Average",
    "Maximum",
    "Minimum",
    "Concatenate",
}
# Per-step only when they normalise or join along the feature axis, not along time.
FEATURE_AXIS_ONLY = {
    "BatchNormalization",
    "LayerNormalization",
    "UnitNormalization",
    "Softmax",
    "Concatenate",
    "Normalization",
}

WHY_NOT = {
    "Bidirectional": "it reads the sequence backwards, so it needs the whole sequence at once",
    "Conv1D": "a convolution mixes neighbouring time steps across chunk boundaries",
    "SeparableConv1D": "a convolution mixes neighbouring time steps across chunk boundaries",
    "DepthwiseConv1D": "a convolution mixes neighbouring time steps across chunk boundaries",
    "Conv1DTranspose": "a convolution mixes neighbouring time steps across chunk boundaries",
    "MultiHeadAttention": "attention mixes time steps within a chunk",
    "Attention": "attention mixes time steps within a chunk",
    "AdditiveAttention": "attention mixes time steps within a chunk",
    "GroupQueryAttention": "attention mixes time steps within a chunk",
    "GlobalAveragePooling1D": "pooling over time depends on how the sequence is chunked",
    "GlobalMaxPooling1D": "pooling over time depends on how the sequence is chunked",
    "AveragePooling1D": "pooling over time depends on how the sequence is chunked",
    "MaxPooling1D": "pooling over time depends on how the sequence is chunked",
    "Flatten": "flattening the time axis depends on the chunk length",
    "Reshape": "reshaping across the time axis depends on the chunk length",
    "RepeatVector": "it invents a fixed number of time steps",
    "Cropping1D": "cropping removes time steps at chunk boundaries",
    "ZeroPadding1D": "padding adds time steps at chunk boundaries",
    "RNN": "only GRU, LSTM and SimpleRNN layers are supported, not a custom cell",
    "ConvLSTM1D": "a convolution mixes neighbouring time steps across chunk boundaries",
}


@dataclass
class _Step:
    """One operation of the model, with where its inputs come from."""

    layer: Any
    inputs: list[int]  # ids of the symbolic tensors it reads
    outputs: list[int]
    takes_mask: bool
    recurrent: RecurrentLayer | None = None
    runner: Any = None  # for recurrent layers: a copy that also returns its final states


def _layer_name(layer: Any) -> str:
    return f"layer {layer.name!r} ({type(layer).__name__})"


def _has_time_axis(tensor: Any) -> bool:
    return len(tensor.shape) == 3


def _check_axis(layer: Any) -> None:
    axis = getattr(layer, "axis", -1)
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    if any(a not in (-1, 2) for a in axes):
        raise ModelError(
            f"{_layer_name(layer)} cannot be streamed: it works along axis {axis}, "
            "which mixes time steps; only the feature axis (-1) is supported"
        )


def _check_recurrent(layer: Any) -> RecurrentLayer:
    if getattr(layer, "go_backwards", False):
        raise ModelError(
            f"{_layer_name(layer)} cannot be streamed: go_backwards=True needs the whole sequence"
        )
    size = layer.cell.state_size
    sizes = list(size) if isinstance(size, (list, tuple)) else [size]
    return RecurrentLayer(layer.name, type(layer).__name__, int(layer.units), len(sizes))


def _recurrent_runner(layer: Any, input_shape: tuple) -> Any:
    """The same layer, rebuilt to take initial states and hand back its final states.

    It shares the original's configuration and weights, so the math is Keras's own; it is built
    stateless because the service, not the layer, keeps one state row per session.
    """
    config = dict(layer.get_config(), return_state=True, stateful=False, unroll=False)
    runner = type(layer).from_config(config)
    runner.build(input_shape)
    runner.set_weights(layer.get_weights())
    return runner


def _operations(model: Any) -> tuple[list[tuple[Any, list[Any], list[Any]]], list[Any], list[Any]]:
    """Each layer with the symbolic tensors it reads and writes, in the order they run, and the
    model's input and output tensors, as that chain names them."""
    if isinstance(model, keras.Sequential):
        # A Sequential is a chain; its layers' node lists also hold calls from earlier builds.
        source = model.inputs[0]
        tensor, chain = source, []
        for layer in model.layers:
            output = layer.compute_output_spec(tensor)
            if not isinstance(output, keras.KerasTensor):
                raise ModelError(f"{_layer_name(layer)} returns several tensors; one is supported")
            chain.append((layer, [tensor], [output]))
            tensor = output
        return chain, [source], [tensor]
    chain = []
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        nodes = layer._inbound_nodes
        if len(nodes) != 1:
            raise ModelError(
                f"{_layer_name(layer)} is called {len(nodes)} times; shared layers are not supported"
            )
        node = nodes[0]
        if len(node.output_tensors) != 1:
            raise ModelError(f"{_layer_name(layer)} returns several tensors; one is supported")
        # Positional arguments only: masks are recomputed as the chunk runs, and a tensor given by
        # keyword (an explicit mask or initial_state) would be silently dropped, so it is refused.
        inputs = [
            t
            for arg in node.arguments.args
            for t in (arg if isinstance(arg, (list, tuple)) else [arg])
        ]
        if not inputs:
            raise ModelError(
                f"{_layer_name(layer)} takes its input by keyword; pass it positionally"
            )
        for keyword, value in node.arguments.kwargs.items():
            if keyword == "mask" and value is getattr(inputs[0], "_keras_mask", None):
                continue  # the mask Keras passes along by itself
            if any(isinstance(v, keras.KerasTensor) for v in keras.tree.flatten(value)):
                raise ModelError(
                    f"{_layer_name(layer)} is given a tensor as {keyword}=...; only positional "
                    "inputs can be streamed (masks come from Masking layers, states from the session)"
                )
        for tensor in inputs:
            producer = tensor._keras_history.operation
            if not isinstance(producer, keras.layers.Layer):
                raise ModelError(
                    f"operation {producer.name!r} ({type(producer).__name__}) feeding "
                    f"{_layer_name(layer)} is a bare keras.ops call; only layers can be checked "
                    "for streaming (use a layer such as Rescaling, Add or Activation)"
                )
        chain.append((layer, inputs, list(node.output_tensors)))
    return chain, list(model.inputs), list(model.outputs)


def _check_input(source: Any) -> None:
    if len(source.shape) != 3 or source.shape[-1] is None:
        raise ModelError(
            f"the model's input {source.name!r} has shape {tuple(source.shape)}; every input must "
            "be a sequence, (batch, time, features) with a known number of features"
        )


def _input(source: Any) -> TensorSpec:
    # The Input layer's name, as the file keeps it (an unnamed one's tensor is renamed per load).
    layer = getattr(getattr(source, "_keras_history", None), "operation", None)
    name = getattr(layer, "name", None) or source.name
    return TensorSpec(str(name), str(source.dtype), int(source.shape[-1]))


def _output(out: Any, made_by: Any) -> tuple[TensorSpec, bool]:
    """An output (made by the layer ``made_by``), and whether it has a time axis."""
    producer = getattr(getattr(out, "_keras_history", None), "operation", None)
    if producer is not None and not isinstance(producer, keras.layers.Layer):
        raise ModelError(
            f"the model's output comes from {producer.name!r} ({type(producer).__name__}), a bare "
            "keras.ops call; only layers can be checked for streaming"
        )
    if len(out.shape) not in (2, 3) or out.shape[-1] is None:
        raise ModelError(
            f"the model's output has shape {tuple(out.shape)}; expected (batch, size) or "
            "(batch, time, size)"
        )
    name = getattr(made_by, "name", None) or getattr(producer, "name", None) or "outputs"
    return TensorSpec(str(name), str(out.dtype), int(out.shape[-1])), len(out.shape) == 3


class StreamGraph:
    """The model's operations in order, checked for streaming; :meth:`forward` runs one chunk."""

    def __init__(self, model: Any):
        # Several inputs are read as one chunk, their features side by side in the model's order
        # (and several outputs given as one, side by side): sessions, the engine and the store see
        # one [T, F] chunk and one [T, size] answer whatever the model's signature.
        for source in model.inputs:  # refused before the walk
            _check_input(source)
        operations, sources, outs = _operations(model)
        self._tensors = (sources, outs)  # held: their ids name them below
        self.inputs = [_input(source) for source in sources]
        self.input_features = sum(t.width for t in self.inputs)
        self.input_ids = [id(source) for source in sources]
        made_by = {id(t): layer for layer, _, written in operations for t in written}
        found = [_output(out, made_by.get(id(out))) for out in outs]
        self.outputs = [tensor for tensor, _ in found]
        if len({timed for _, timed in found}) > 1:
            raise ModelError(
                "the model's outputs mix per-step outputs (batch, time, size) with last-step ones "
                "(batch, size); all must be one or the other"
            )
        self.output_ids = [id(out) for out in outs]
        self.per_step = found[0][1]
        self.output_size = sum(t.width for t in self.outputs)
        self.steps: list[_Step] = []
        self.recurrent: list[RecurrentLayer] = []
        for layer, inputs, outputs in operations:
            self._add(layer, inputs, outputs)
        if not self.recurrent:
            raise ModelError(
                "the model has no GRU, LSTM or SimpleRNN layer: there is no state to keep"
            )

    @property
    def state_units(self) -> list[int]:
        """Width of every state tensor, flattened in model order (LSTM: h then c)."""
        return [layer.units for layer in self.recurrent for _ in range(layer.state_tensors)]

    def _add(self, layer: Any, inputs: list[Any], outputs: list[Any]) -> None:
        kind = type(layer).__name__
        time_axis = any(_has_time_axis(t) for t in inputs)
        if not time_axis and any(_has_time_axis(t) for t in outputs):
            raise ModelError(
                f"{_layer_name(layer)} cannot be streamed: it makes a time axis out of the output "
                "of a recurrent layer that returns only its last step, so its meaning depends on "
                "how the sequence is chunked"
            )
        recurrent = None
        if kind in RECURRENT_KINDS and type(layer) is RECURRENT_KINDS[kind]:
            recurrent = _check_recurrent(layer)
            self.recurrent.append(recurrent)
        elif time_axis:
            if kind not in PER_STEP:
                reason = WHY_NOT.get(kind, "it is not known to act on each time step independently")
                raise ModelError(f"{_layer_name(layer)} cannot be streamed: {reason}")
            if kind in FEATURE_AXIS_ONLY:
                _check_axis(layer)
            if kind == "TimeDistributed" and type(layer.layer).__name__ not in PER_STEP:
                raise ModelError(
                    f"{_layer_name(layer)} cannot be streamed: it wraps "
                    f"{type(layer.layer).__name__}, which is not known to be a per-step layer"
                )
        elif kind in WHY_NOT and kind in {"RepeatVector", "RNN", "Bidirectional", "ConvLSTM1D"}:
            raise ModelError(f"{_layer_name(layer)} cannot be streamed: {WHY_NOT[kind]}")
        takes_mask = "mask" in inspect.signature(layer.call).parameters
        self.steps.append(
            _Step(
                layer=layer,
                inputs=[id(t) for t in inputs],
                outputs=[id(t) for t in outputs],
                takes_mask=takes_mask,
                recurrent=recurrent,
                runner=_recurrent_runner(layer, tuple(inputs[0].shape)) if recurrent else None,
            )
        )

    def forward(self, x: Any, step_mask: Any, states: list[Any]) -> tuple[Any, list[Any]]:
        """Run a padded chunk batch: ``x`` [n, T, F], ``step_mask`` [n, T] (False on padding).

        Padding is masked in every recurrent layer, so a padded step moves no state; per-step layers
        compute garbage on padding, which the caller drops.
        """
        import tensorflow as tf

        values: dict[int, tuple[Any, Any]] = {self.input_ids[0]: (x, None)}
        if len(self.inputs) > 1:  # each input's features, side by side in the chunk
            edges = [0, *itertools.accumulate(t.width for t in self.inputs)]
            for key, at, end in zip(self.input_ids, edges, edges[1:]):
                values[key] = (x[:, :, at:end], None)
        new_states: list[Any] = []
        cursor = 0
        for step in self.steps:
            args = [values[i] for i in step.inputs]
            tensors = [a[0] for a in args]
            masks = [a[1] for a in args]
            inputs = tensors[0] if len(tensors) == 1 else tensors
            mask = masks[0] if len(masks) == 1 else masks
            if step.recurrent is not None:
                n = step.recurrent.state_tensors
                own = mask if mask is not None else None
                combined = (
                    step_mask if own is None else tf.logical_and(step_mask, tf.cast(own, tf.bool))
                )
                result = step.runner(
                    inputs, initial_state=states[cursor : cursor + n], mask=combined, training=False
                )
                output, finals = result[0], list(result[1:])
                new_states.extend(finals)
                cursor += n
                out_mask = combined if step.runner.return_sequences else None
            elif isinstance(step.layer, keras.layers.TimeDistributed):
                output = _each_time_step(step.layer.layer, inputs)
                out_mask = mask
            else:
                kwargs = {"training": False}
                if step.takes_mask and mask is not None:
                    kwargs["mask"] = mask
                output = step.layer(inputs, **kwargs)
                # As in Keras: a layer that does not support masking ends the mask.
                out_mask = (
                    step.layer.compute_mask(inputs, mask) if step.layer.supports_masking else None
                )
            values[step.outputs[0]] = (output, out_mask)
        outputs = [values[key][0] for key in self.output_ids]
        return (outputs[0] if len(outputs) == 1 else tf.concat(outputs, -1)), new_states


def _each_time_step(layer: Any, inputs: Any) -> Any:
    """What ``TimeDistributed(layer)`` means: ``layer`` on every (row, step) pair as one batch.

    Done here rather than by the wrapper because its path for a time axis of unknown length (ours:
    one graph serves every chunk length) maps over the wrong axis in Keras 3 and gives wrong numbers.
    """
    import tensorflow as tf

    shape = tf.shape(inputs)
    flat = tf.reshape(inputs, tf.concat([[-1], shape[2:]], axis=0))
    output = layer(flat, training=False)
    return tf.reshape(output, tf.concat([shape[:2], tf.shape(output)[1:]], axis=0))
