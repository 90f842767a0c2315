"""The compute ceiling: the service's compiled batched step called in a loop, in process, no HTTP.

The same ``StreamingModel`` the server builds from the same file, on full batches of equal-length
chunks, each call carrying the states the last one returned. What the service serves beyond this
fraction is lost to HTTP, parsing, batching and the state store.

    python -m bench.compute --model gru256_f40.keras --batch 256 --steps 10 --seconds 5
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from app.model.loader import load_model


def measure(model_path: str, batch: int, steps: int, seconds: float) -> dict:
    model = load_model(model_path)
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(batch, steps, model.spec.input_features)).astype(np.float32)
    lengths = np.full(batch, steps, np.int32)
    states = [np.zeros((batch, units), np.float32) for units in model.spec.state_units]
    for _ in range(3):  # warm: first calls of a shape build oneDNN primitives
        _, states = model.run(inputs, lengths, states)
    calls, times = 0, []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        _, states = model.run(inputs, lengths, states)
        times.append(time.perf_counter() - started)
        calls += 1
    call = float(np.median(times))
    return {
        "batch": batch,
        "steps": steps,
        "calls": calls,
        "call_ms": call * 1e3,
        "chunks_per_s": batch / call,
        "time_steps_per_s": batch * steps / call,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=5)
    args = parser.parse_args()
    print("RESULT " + json.dumps(measure(args.model, args.batch, args.steps, args.seconds)))


if __name__ == "__main__":
    main()
