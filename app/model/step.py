"""The step: one model call runs a chunk batch for many sessions at once.

Two runtimes compute it. **ONNX Runtime** runs the graph :mod:`app.model.export` writes from the
model's layers (a small fixed cost per call, nothing compiled per shape); **TensorFlow** runs the
model's own layers as a ``tf.function`` traced once over relaxed shapes ``[None, None, F]`` (any
batch size and chunk length reuse the same graph), optionally compiled by XLA per shape bucket.
The TensorFlow step is always built: it is the reference the ONNX graph is checked against before
it serves (random multi-chunk streams, each runtime carrying its own states), and what serves a
model the exporter cannot write or whose export disagrees. Chunks of different lengths are
right-padded to the longest in the batch and masked (see :meth:`StreamGraph.forward`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Literal

import numpy as np

from app.errors import ModelError
from app.model import export
from app.model.graph import StreamGraph
from app.model.spec import ModelSpec

log = logging.getLogger(__name__)
Runtime = Literal["auto", "onnx", "tensorflow"]
# How close the ONNX graph must come to the TensorFlow step to serve: the service's exactness
# promise (chunked equals whole, to Keras, within 1e-5).
TOLERANCE = 1e-5
CHECK_ROWS, CHECK_CHUNKS, CHECK_STEPS = 6, 8, 9


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
    """Runs padded chunk batches through the model, carrying each row's recurrent states.

    ``runtime``: ``onnx`` serves the exported graph or refuses the model; ``auto`` serves it where
    the export is possible and agrees, TensorFlow otherwise; ``tensorflow`` always TensorFlow
    (``threads``: ONNX Runtime's intra-op threads). On TensorFlow with ``xla``, a batch runs on an
    XLA-compiled step for its shape bucket once that is compiled (see :class:`XlaSteps`), and on
    the plain graph until then."""

    def __init__(
        self,
        model,
        name: str,
        xla: bool = False,
        version: int = 1,
        *,
        runtime: Runtime = "auto",
        threads: int = 1,
    ):
        import tensorflow as tf

        self._graph = StreamGraph(model)
        self.spec = ModelSpec(
            name=name,
            fingerprint=fingerprint(model, {r.name for r in self._graph.recurrent}),
            input_features=self._graph.input_features,
            per_step=self._graph.per_step,
            output_size=self._graph.output_size,
            recurrent=tuple(self._graph.recurrent),
            version=version,
            inputs=tuple(self._graph.inputs),
            outputs=tuple(self._graph.outputs),
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
        self._step = tf.function(
            step, input_signature=signature, autograph=False
        ).get_concrete_function()
        self._xla: XlaSteps | None = None
        self._onnx: OnnxStep | None = None
        self._check_chunk_lengths()
        if runtime == "auto" and tf.config.list_physical_devices("GPU"):
            # ONNX Runtime's package here runs on the CPU; TensorFlow has a GPU to run on.
            runtime = "tensorflow"
            log.info("model %s version %d runs on TensorFlow: it has a GPU", name, version)
        if runtime != "tensorflow":
            self._onnx, why = self._exported(threads)
            if self._onnx is None and runtime == "onnx":
                raise ModelError(f"the model cannot run on ONNX Runtime: {why}")
            if self._onnx is None:
                log.info("model %s version %d runs on TensorFlow: %s", name, version, why)
        if self._onnx is not None:
            log.info("model %s version %d runs on ONNX Runtime", name, version)
            self.spec = replace(self.spec, runtime="onnx")
        elif xla:
            self._xla = XlaSteps(step, self.spec)

    def _exported(self, threads: int) -> tuple[OnnxStep | None, str]:
        """The ONNX step, if the model can be written and the result agrees with TensorFlow; else
        None and why not."""
        try:
            candidate = OnnxStep(export.export(self._graph), threads, len(self.spec.state_units))
        except export.Unsupported as exc:
            return None, str(exc)
        except Exception as exc:  # an exporter or runtime fault: TensorFlow still serves
            log.warning("exporting the model to ONNX failed", exc_info=True)
            return None, f"the export failed ({type(exc).__name__})"
        differs = self._disagreement(candidate)
        if differs is not None:
            return (
                None,
                f"the ONNX graph differs from TensorFlow by {differs:.2g} (over {TOLERANCE})",
            )
        return candidate, ""

    def _disagreement(self, candidate: OnnxStep) -> float | None:
        """None when ``candidate`` gives what the TensorFlow step gives within ``TOLERANCE`` on
        random streams of several chunks (ragged, padded, from random states, each runtime
        carrying its own states so that drift shows); else the largest difference found."""
        rng = np.random.default_rng(0)
        features, units = self.spec.input_features, self.spec.state_units
        start = [rng.normal(0, 0.5, (CHECK_ROWS, u)).astype(np.float32) for u in units]
        mine, theirs = start, start
        worst = 0.0
        for _ in range(CHECK_CHUNKS):
            steps = int(rng.integers(1, CHECK_STEPS + 1))
            inputs = rng.normal(0, 1, (CHECK_ROWS, steps, features)).astype(np.float32)
            lengths = rng.integers(1, steps + 1, CHECK_ROWS).astype(np.int32)
            lengths[0] = steps
            want, theirs = self._run_graph(inputs, lengths, theirs)
            got, mine = candidate.run(inputs, lengths, mine)
            if self.spec.per_step:  # only each row's own steps; padding is dropped
                real = np.arange(steps)[None, :] < lengths[:, None]
                want, got = want[real], got[real]
            for a, b in zip([got, *mine], [want, *theirs]):
                if a.shape != b.shape or not np.allclose(a, b, rtol=TOLERANCE, atol=TOLERANCE):
                    worst = max(
                        worst, float(np.max(np.abs(a - b))) if a.shape == b.shape else np.inf
                    )
        return worst or None

    def _run_graph(self, inputs, lengths, states):
        outputs, new_states = self._step(inputs, lengths, states)
        return outputs.numpy(), [s.numpy() for s in new_states]

    def _check_chunk_lengths(self) -> None:
        """Run two chunk lengths now: a layer whose weights are tied to a fixed time length (the
        model's Input had one) fails here, at start, rather than on a request."""
        features = self.spec.input_features
        for steps in (1, 3):
            states = [np.zeros((2, units), np.float32) for units in self.spec.state_units]
            try:
                self.run(np.zeros((2, steps, features), np.float32), np.array([steps, 1]), states)
            except Exception as exc:
                message = (
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                )
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
        lengths = lengths.astype(np.int32, copy=False)
        if self._onnx is not None:
            return self._onnx.run(inputs, lengths, states)
        if self._xla is not None:
            found = self._xla.run(inputs, lengths, states)
            if found is not None:
                return found
        return self._run_graph(inputs, lengths, states)

    def warm(self, max_batch: int, max_steps: int) -> None:
        """Trace and run the plain graph on the extreme shapes it will see, before any request
        does. XLA's programs are left to the chunk lengths that traffic brings: compiling every
        batch size of these lengths too (27 programs, 1,024 steps long for some) held a new server
        busy for seconds and grew it by 330 MB (bench.run's idle scenario)."""
        if self._xla is not None:
            self._xla.largest = _power_of_two(max_batch)
        features = self.spec.input_features
        for n, steps in {
            (1, 1),
            (max_batch, 1),
            (1, max_steps),
            (min(max_batch, 8), min(max_steps, 8)),
        }:
            inputs = np.zeros((n, steps, features), np.float32)
            states = [np.zeros((n, units), np.float32) for units in self.spec.state_units]
            run = self._onnx.run if self._onnx is not None else self._run_graph
            run(inputs, np.full(n, steps, np.int32), states)


class OnnxStep:
    """The exported step in an ONNX Runtime session: the same ``run`` as the TensorFlow step."""

    def __init__(self, graph: bytes, threads: int, states: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Threads that spin between calls would burn the cores the event loop needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self._session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self._states = [export.state_name(k) for k in range(states)]
        self._outputs = [export.OUTPUTS, *(export.next_state_name(k) for k in range(states))]

    def run(
        self, inputs: np.ndarray, lengths: np.ndarray, states: list[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        feeds = {export.INPUTS: inputs, export.LENGTHS: lengths}
        feeds.update(zip(self._states, states))
        outputs, *new_states = self._session.run(self._outputs, feeds)
        return outputs, new_states


class XlaSteps:
    """The step compiled by XLA, one program per shape bucket: the batch size and the chunk length
    each rounded up to a power of two (the padding is masked: padded rows and steps move no state).

    A plain TensorFlow graph pays a fixed cost per call, most of it the recurrent loop's many small
    operations run one by one: about 2.4 ms of CPU for a GRU 64 over 10 steps, whether the batch has
    12 rows or 50, which at a few hundred calls a second is most of a core. XLA fuses the loop (0.8
    ms for 25 rows, 1.6 ms for 50). It compiles a program per shape, 0.3 to 0.6 s each, so a bucket
    is compiled on a thread of its own the first time a batch needs it, and batches run on the plain
    graph until it is ready: no request waits for the compiler. The first batch of a chunk length
    asks for that length's programs of every batch size up to ``largest`` (the size it needed
    first), so that a load that grows later finds its programs ready rather than compiling them when
    the machine is busiest; only for the first ``AHEAD_LENGTHS`` lengths seen, as streams send one
    length over and over while a client of varied lengths would otherwise fill memory with programs
    it never runs. Its results agree with the plain graph's to
    float32 rounding (a few 1e-7)."""

    def __init__(self, step, spec: ModelSpec):
        import tensorflow as tf

        self._tf = tf
        self._function = tf.function(step, jit_compile=True, autograph=False)
        self.spec = spec
        self._ready: dict[tuple[int, int], object] = {}
        self._asked: set[tuple[int, int]] = set()
        self._compiler = ThreadPoolExecutor(1, thread_name_prefix="xla")
        self.largest = 1  # the largest batch bucket to compile ahead (set by ``warm``)
        self._ahead: set[int] = set()  # the chunk lengths whose programs were asked for ahead

    @property
    def compiled(self) -> int:
        return len(self._ready)

    def run(self, inputs: np.ndarray, lengths: np.ndarray, states: list[np.ndarray]):
        """The outputs and new states, or None when the batch's bucket is not compiled yet."""
        n, steps = inputs.shape[:2]
        bucket = (_power_of_two(n), steps if steps <= EXACT_STEPS else _power_of_two(steps))
        program = self._ready.get(bucket)
        if program is None:
            if bucket not in self._asked:
                self._ask(bucket)
            return None
        if bucket != (n, steps):
            inputs, lengths, states = _padded(inputs, lengths, states, bucket)
        outputs, new_states = program(inputs, lengths, states)
        outputs = outputs.numpy()
        outputs = outputs[:n, :steps] if self.spec.per_step else outputs[:n]
        return outputs, [s.numpy()[:n] for s in new_states]

    def _ask(self, needed: tuple[int, int]) -> None:
        ahead = []
        if needed[1] in self._ahead or len(self._ahead) < AHEAD_LENGTHS:
            self._ahead.add(needed[1])
            ahead = [(1 << k, needed[1]) for k in range(max(self.largest, needed[0]).bit_length())]
        for bucket in [needed, *ahead]:
            if bucket not in self._asked:
                self._asked.add(bucket)
                self._compiler.submit(self._compile, bucket)

    def _compile(self, bucket: tuple[int, int]) -> None:
        tf = self._tf
        size, steps = bucket
        features = self.spec.input_features
        signature = [
            tf.TensorSpec([size, steps, features], tf.float32),
            tf.TensorSpec([size], tf.int32),
            [tf.TensorSpec([size, units], tf.float32) for units in self.spec.state_units],
        ]
        try:
            program = self._function.get_concrete_function(*signature)
            program(
                np.zeros((size, steps, features), np.float32),
                np.zeros(size, np.int32),
                [np.zeros((size, units), np.float32) for units in self.spec.state_units],
            )  # compiles
        except Exception:  # this bucket stays on the plain graph
            log.warning(
                "XLA could not compile the step for %s; it runs on the plain graph",
                bucket,
                exc_info=True,
            )
            return
        self._ready[bucket] = program


EXACT_STEPS = (
    16  # chunk lengths up to this get a program each: streams send one length over and over
)
# Chunk lengths whose programs are compiled for every batch size at once (about 3 s of CPU and 30 MB
# for 9 sizes); later lengths compile a program only when a batch needs it.
AHEAD_LENGTHS = 4


def _power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _padded(
    inputs: np.ndarray, lengths: np.ndarray, states: list[np.ndarray], bucket: tuple[int, int]
):
    size, steps = bucket
    n, t, features = inputs.shape
    padded = np.zeros((size, steps, features), np.float32)
    padded[:n, :t] = inputs
    padded_lengths = np.zeros(size, np.int32)
    padded_lengths[:n] = lengths
    padded_states = []
    for state in states:
        grown = np.zeros((size, state.shape[1]), np.float32)
        grown[:n] = state
        padded_states.append(grown)
    return padded, padded_lengths, padded_states
