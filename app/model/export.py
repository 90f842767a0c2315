"""The streaming step as an ONNX graph, written from the Keras layers' configuration and weights.

ONNX Runtime runs a step for a fraction of TensorFlow's fixed cost per call (GRU 64 over 10 steps,
one thread: 74 µs at one row against 609 µs for the XLA-compiled TensorFlow function; 831 against
1,263 at 64 rows), and the fixed cost is what live traffic's small batches pay. Written by hand
because no maintained converter gives that graph: tf2onnx exports a Keras recurrent layer as a
generic ``Loop`` (450 µs at one row), and keras2onnx is abandoned. The graph is built with onnx's
own helper API; each recurrent layer becomes ONNX's ``GRU``, ``LSTM`` or ``RNN`` operator, whose
``sequence_lens`` masks a padded row's steps as the TensorFlow path's mask does.

Only what this module can write exactly is written; any other layer or option raises
:class:`Unsupported` with the reason, and the model is served by TensorFlow. What is written is
still checked against TensorFlow before it serves (:mod:`app.model.step`).

Inside the graph the time axis comes first (``[T, n, features]``, what the recurrent operators
take), so the only transposes are at the input and the output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.model.graph import IDENTITY_AT_INFERENCE, StreamGraph

OPSET = 17  # LayerNormalization's first opset; ONNX Runtime 1.17 and later run it
INPUTS, LENGTHS, OUTPUTS = "inputs", "lengths", "outputs"


class Unsupported(Exception):
    """The model has something this exporter cannot write exactly; TensorFlow serves it."""


def state_name(index: int) -> str:
    return f"state_{index}"


def next_state_name(index: int) -> str:
    return f"state_{index}_next"


@dataclass
class _Value:
    name: str
    timed: bool  # [T, n, C] (True) or [n, C]


# Keras activation name -> how to write it (None: the identity).
_ACTIVATIONS: dict[str, tuple[str, dict[str, Any]] | None] = {
    "linear": None,
    "relu": ("Relu", {}),
    "sigmoid": ("Sigmoid", {}),
    "tanh": ("Tanh", {}),
    "softmax": ("Softmax", {"axis": -1}),
    "elu": ("Elu", {"alpha": 1.0}),
    "selu": ("Selu", {}),
    "softplus": ("Softplus", {}),
    "softsign": ("Softsign", {}),
    "exponential": ("Exp", {}),
    "hard_sigmoid": ("HardSigmoid", {"alpha": 1.0 / 6.0, "beta": 0.5}),
    "leaky_relu": ("LeakyRelu", {"alpha": 0.2}),
}
# The recurrent operators name their activations themselves; these take no parameters.
_RECURRENT_ACTIVATIONS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}
_BINARY = {"Add": "Add", "Subtract": "Sub", "Multiply": "Mul", "Maximum": "Max", "Minimum": "Min"}


class _Writer:
    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._names = 0

    def fresh(self, hint: str) -> str:
        self._names += 1
        return f"{hint}_{self._names}"

    def constant(self, hint: str, array: np.ndarray) -> str:
        name = self.fresh(hint)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], hint: str, outputs: int = 1, **attrs) -> Any:
        names = [self.fresh(f"{hint}_{op.lower()}") for _ in range(outputs)]
        self.nodes.append(self.helper.make_node(op, inputs, names, **attrs))
        return names[0] if outputs == 1 else names

    def axes(self, *axes: int) -> str:
        return self.constant("axes", np.array(axes, np.int64))


def _config(layer: Any) -> dict[str, Any]:
    return layer.get_config()


def _name(layer: Any) -> str:
    return f"layer {layer.name!r} ({type(layer).__name__})"


def _activation(writer: _Writer, layer: Any, value: _Value, name: Any) -> _Value:
    if not isinstance(name, str) or name not in _ACTIVATIONS and name not in ("swish", "silu"):
        raise Unsupported(f"{_name(layer)}: activation {name!r} is not written to ONNX")
    if name in ("swish", "silu"):
        gate = writer.node("Sigmoid", [value.name], layer.name)
        return _Value(writer.node("Mul", [value.name, gate], layer.name), value.timed)
    written = _ACTIVATIONS[name]
    if written is None:
        return value
    op, attrs = written
    return _Value(writer.node(op, [value.name], layer.name, **attrs), value.timed)


def _weight(variable: Any) -> np.ndarray:
    return np.asarray(variable.numpy(), np.float32)


def _dense(writer: _Writer, layer: Any, value: _Value) -> _Value:
    out = writer.node(
        "MatMul", [value.name, writer.constant("kernel", _weight(layer.kernel))], layer.name
    )
    if layer.use_bias:
        out = writer.node("Add", [out, writer.constant("bias", _weight(layer.bias))], layer.name)
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        raise Unsupported(f"{_name(layer)}: LoRA or quantized kernels are not written to ONNX")
    return _activation(writer, layer, _Value(out, value.timed), _config(layer)["activation"])


def _layer_norm(writer: _Writer, layer: Any, value: _Value) -> _Value:
    config = _config(layer)
    if config.get("rms_scaling"):
        raise Unsupported(f"{_name(layer)}: rms_scaling is not written to ONNX")
    axis = config["axis"]
    if axis not in (-1, [-1]) and not (value.timed and axis in (2, [2])):
        raise Unsupported(f"{_name(layer)}: only the last axis is written to ONNX")
    width = int(layer.gamma.shape[-1] if layer.scale else layer.beta.shape[-1])
    scale = _weight(layer.gamma) if layer.scale else np.ones(width, np.float32)
    inputs = [value.name, writer.constant("gamma", scale)]
    if layer.center:
        inputs.append(writer.constant("beta", _weight(layer.beta)))
    out = writer.node(
        "LayerNormalization", inputs, layer.name, axis=-1, epsilon=float(config["epsilon"])
    )
    return _Value(out, value.timed)


def _batch_norm(writer: _Writer, layer: Any, value: _Value) -> _Value:
    # At inference a batch normalisation is an affine map of each feature.
    mean, variance = _weight(layer.moving_mean), _weight(layer.moving_variance)
    gamma = _weight(layer.gamma) if layer.scale else np.ones_like(mean)
    beta = _weight(layer.beta) if layer.center else np.zeros_like(mean)
    factor = gamma / np.sqrt(variance + np.float32(layer.epsilon))
    out = writer.node("Mul", [value.name, writer.constant("factor", factor)], layer.name)
    out = writer.node("Add", [out, writer.constant("shift", beta - mean * factor)], layer.name)
    return _Value(out, value.timed)


def _rescaling(writer: _Writer, layer: Any, value: _Value) -> _Value:
    config = _config(layer)
    scale = np.asarray(config["scale"], np.float32)
    offset = np.asarray(config["offset"], np.float32)
    out = writer.node("Mul", [value.name, writer.constant("scale", scale)], layer.name)
    out = writer.node("Add", [out, writer.constant("offset", offset)], layer.name)
    return _Value(out, value.timed)


def _relu_layer(writer: _Writer, layer: Any, value: _Value) -> _Value:
    config = _config(layer)
    if config.get("max_value") is not None or config.get("threshold", 0.0) != 0.0:
        raise Unsupported(f"{_name(layer)}: max_value or threshold is not written to ONNX")
    slope = float(config.get("negative_slope", 0.0))
    if slope:
        return _Value(writer.node("LeakyRelu", [value.name], layer.name, alpha=slope), value.timed)
    return _Value(writer.node("Relu", [value.name], layer.name), value.timed)


def _softmax_layer(writer: _Writer, layer: Any, value: _Value) -> _Value:
    return _Value(writer.node("Softmax", [value.name], layer.name, axis=-1), value.timed)


_PER_STEP: dict[str, Callable[[_Writer, Any, _Value], _Value]] = {
    "Dense": _dense,
    "LayerNormalization": _layer_norm,
    "BatchNormalization": _batch_norm,
    "Rescaling": _rescaling,
    "ReLU": _relu_layer,
    "Softmax": _softmax_layer,
    "Activation": lambda w, layer, v: _activation(w, layer, v, _config(layer)["activation"]),
    "LeakyReLU": lambda w, layer, v: _Value(
        w.node("LeakyRelu", [v.name], layer.name, alpha=float(_config(layer)["negative_slope"])),
        v.timed,
    ),
}


def _join(writer: _Writer, layer: Any, values: list[_Value]) -> _Value:
    kind = type(layer).__name__
    timed = any(v.timed for v in values)
    if timed and not all(v.timed for v in values):
        raise Unsupported(f"{_name(layer)}: joins a sequence with a vector")
    names = [v.name for v in values]
    if kind == "Concatenate":
        if _config(layer)["axis"] not in (-1, 2 if timed else 1):
            raise Unsupported(f"{_name(layer)}: only the feature axis is written to ONNX")
        return _Value(writer.node("Concat", names, layer.name, axis=-1), timed)
    if kind == "Average":
        total = writer.node("Sum", names, layer.name)
        share = writer.constant("share", np.array(1.0 / len(names), np.float32))
        return _Value(writer.node("Mul", [total, share], layer.name), timed)
    out = names[0]
    for other in names[1:]:
        out = writer.node(_BINARY[kind], [out, other], layer.name)
    return _Value(out, timed)


def _recurrent(
    writer: _Writer, layer: Any, value: _Value, states: list[str], lengths: str
) -> tuple[_Value, list[str]]:
    """One GRU, LSTM or SimpleRNN layer: its output and the names of its new states."""
    kind = type(layer).__name__
    config = _config(layer)
    cell = layer.cell
    units = int(layer.units)
    activations = []
    for key in ("recurrent_activation", "activation") if kind != "SimpleRNN" else ("activation",):
        activation = config[key]
        if activation not in _RECURRENT_ACTIVATIONS:
            raise Unsupported(f"{_name(layer)}: {key} {activation!r} is not written to ONNX")
        activations.append(_RECURRENT_ACTIVATIONS[activation])
    kernel, recurrent = _weight(cell.kernel), _weight(cell.recurrent_kernel)
    gates = {"GRU": 3, "LSTM": 4, "SimpleRNN": 1}[kind]
    if cell.use_bias:
        bias = _weight(cell.bias).reshape(-1, gates * units)
    else:
        bias = np.zeros((1, gates * units), np.float32)
    if bias.shape[0] == 1:  # one bias, on the input side; ONNX's recurrent bias is then zero
        bias = np.concatenate([bias, np.zeros_like(bias)])
    attrs: dict[str, Any] = {"hidden_size": units}
    if kind == "GRU":
        # Keras's gates are z | r | h, as ONNX's; reset_after is ONNX's linear_before_reset.
        attrs["linear_before_reset"] = int(bool(cell.reset_after))
        op = "GRU"
    elif kind == "LSTM":
        # Keras's gates are i | f | c | o; ONNX's are i | o | f | c.
        order = [0, 3, 1, 2]
        kernel, recurrent, bias = (
            np.concatenate([np.split(w, 4, axis=-1)[k] for k in order], axis=-1)
            for w in (kernel, recurrent, bias)
        )
        activations.append(activations[-1])  # the output's activation is the candidate's
        op = "LSTM"
    else:
        op = "RNN"
    attrs["activations"] = activations
    inputs = [
        value.name,
        writer.constant("W", kernel.T[None].copy()),
        writer.constant("R", recurrent.T[None].copy()),
        writer.constant("B", bias.reshape(1, -1)),
        lengths,
    ]
    first = writer.axes(0)
    inputs += [writer.node("Unsqueeze", [state, first], layer.name) for state in states]
    produced = writer.node(op, inputs, layer.name, outputs=1 + len(states), **attrs)
    finals = [writer.node("Squeeze", [name, first], layer.name) for name in produced[1:]]
    if layer.return_sequences:
        sequence = writer.node("Squeeze", [produced[0], writer.axes(1)], layer.name)
        return _Value(sequence, True), finals
    return _Value(finals[0], False), finals  # the last real step's output is the final h


def export(graph: StreamGraph) -> bytes:
    """The ONNX model of ``graph``'s step: inputs ``inputs`` [n, T, F] float32, ``lengths`` [n]
    int32 and ``state_k`` [n, units]; outputs ``outputs`` and ``state_k_next``, as
    :meth:`StreamGraph.forward` computes them. Raises :class:`Unsupported`."""
    import onnx
    from onnx import TensorProto, helper

    writer = _Writer()
    timed = writer.node("Transpose", [INPUTS], "input", perm=[1, 0, 2])  # [T, n, F]
    values: dict[int, _Value] = {}
    at = 0
    for key, tensor in zip(graph.input_ids, graph.inputs):  # each input's features, in order
        if len(graph.inputs) == 1:
            values[key] = _Value(timed, True)
            break
        bounds = [
            writer.constant("bound", np.array([edge], np.int64)) for edge in (at, at + tensor.width)
        ]
        values[key] = _Value(writer.node("Slice", [timed, *bounds, writer.axes(2)], "part"), True)
        at += tensor.width
    state_names = [state_name(k) for k in range(len(graph.state_units))]
    finals: list[str] = []
    for step in graph.steps:
        layer = step.layer
        kind = type(layer).__name__
        args = [values[i] for i in step.inputs]
        if step.recurrent is not None:
            own = state_names[len(finals) : len(finals) + step.recurrent.state_tensors]
            out, new = _recurrent(writer, layer, args[0], own, LENGTHS)
            finals.extend(new)
        elif kind in IDENTITY_AT_INFERENCE:
            out = args[0]
        elif kind in _PER_STEP:
            out = _PER_STEP[kind](writer, layer, args[0])
        elif kind == "TimeDistributed" and type(layer.layer).__name__ in _PER_STEP:
            # Our per-step writers act on the last axis whatever comes before it.
            out = _PER_STEP[type(layer.layer).__name__](writer, layer.layer, args[0])
        elif kind in _BINARY or kind in ("Concatenate", "Average"):
            out = _join(writer, layer, args)
        else:
            raise Unsupported(f"{_name(layer)} is not written to ONNX")
        values[step.outputs[0]] = out
    parts = [values[key] for key in graph.output_ids]
    result = parts[0]
    if len(parts) > 1:  # side by side, on the last axis ([T, n, size] or [n, size] alike)
        result = _Value(
            writer.node("Concat", [p.name for p in parts], "outputs", axis=-1), result.timed
        )
    if result.timed:
        writer.nodes.append(helper.make_node("Transpose", [result.name], [OUTPUTS], perm=[1, 0, 2]))
    else:
        writer.nodes.append(helper.make_node("Identity", [result.name], [OUTPUTS]))
    writer.nodes += [
        helper.make_node("Identity", [final], [next_state_name(k)])
        for k, final in enumerate(finals)
    ]
    f32 = TensorProto.FLOAT
    model = helper.make_model(
        helper.make_graph(
            writer.nodes,
            "step",
            [
                helper.make_tensor_value_info(INPUTS, f32, ["n", "T", graph.input_features]),
                helper.make_tensor_value_info(LENGTHS, TensorProto.INT32, ["n"]),
                *(
                    helper.make_tensor_value_info(name, f32, ["n", units])
                    for name, units in zip(state_names, graph.state_units)
                ),
            ],
            [
                helper.make_tensor_value_info(
                    OUTPUTS,
                    f32,
                    ["n", "T", graph.output_size] if graph.per_step else ["n", graph.output_size],
                ),
                *(
                    helper.make_tensor_value_info(next_state_name(k), f32, ["n", units])
                    for k, units in enumerate(graph.state_units)
                ),
            ],
            writer.initializers,
        ),
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="stateful-rnn",
    )
    model.ir_version = 8  # what ONNX Runtime 1.14 and later read
    onnx.checker.check_model(model)
    return model.SerializeToString()
