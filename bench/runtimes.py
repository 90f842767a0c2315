"""The model call's cost on each runtime: ONNX Runtime against TensorFlow (XLA), in one run.

The live scenario's model (GRU 64 over F = 16, a per-step Dense head, T = 10) as the server builds
it from its file, once per runtime; each call carries the states the last one returned. Rounds
alternate the runtimes so that the machine's noise falls on both; the medians of CPU per call
(``time.process_time``: every thread of this process) and their ratio are printed, per batch size.

    python -m bench.runtimes                       # B = 1, 8, 64, 512
    python -m bench.runtimes --batches 1,32 --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from app.model.loader import Source, load_version
from bench.scenarios import LIVE, write_model


def _cpu_per_call(model, batch: int, steps: int, seconds: float) -> float:
    rng = np.random.default_rng(batch)
    inputs = rng.normal(size=(batch, steps, model.spec.input_features)).astype(np.float32)
    lengths = np.full(batch, steps, np.int32)
    states = [np.zeros((batch, units), np.float32) for units in model.spec.state_units]
    calls = 0
    cpu, deadline = time.process_time(), time.perf_counter() + seconds
    while calls == 0 or time.perf_counter() < deadline:
        _, states = model.run(inputs, lengths, states)
        calls += 1
    return (time.process_time() - cpu) / calls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,8,64,512")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5, help="per runtime, batch and round")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        source = Source("live", 1, str(write_model(LIVE, Path(folder))))
        models = {
            "onnx": load_version(source, runtime="onnx"),
            "tensorflow": load_version(source, xla=True, runtime="tensorflow"),
        }
    for batch in batches:  # XLA compiles a program per shape in the background: wait for them
        for model in models.values():
            for _ in range(3):
                _cpu_per_call(model, batch, LIVE.steps, 0.0)
    time.sleep(5)
    print(f"CPU per model call, µs (median of {args.rounds} rounds; T = {LIVE.steps})")
    print(f"{'batch':>6} {'onnx':>10} {'tensorflow':>11} {'ratio':>7}")
    for batch in batches:
        found: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(args.rounds):
            for name, model in models.items():
                found[name].append(_cpu_per_call(model, batch, LIVE.steps, args.seconds))
        onnx, tf = (statistics.median(found[name]) * 1e6 for name in ("onnx", "tensorflow"))
        print(f"{batch:>6} {onnx:>10.0f} {tf:>11.0f} {onnx / tf:>7.2f}")


if __name__ == "__main__":
    main()
