"""The naive baseline: what a user writes from the seed notebook, without this service.

One Keras ``stateful=True`` model per session (batch of one row, the scenario's weights), called
eagerly on each request, exactly as the notebook calls ``stateful_gru(sequence_data)``; the request
body validated by a pydantic model; a plain ``def`` endpoint, which FastAPI runs in its thread pool.
Nothing is batched or compiled.

    python -m bench.naive --port 8200 --model gru64_f16.keras
"""

from __future__ import annotations

import argparse
import threading

import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel


class NewSession(BaseModel):
    session_id: str


class ChunkIn(BaseModel):
    inputs: list[list[float]]


def create_naive_app(model_path: str) -> FastAPI:
    import keras

    from bench.scenarios import build

    trained = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    features = trained.input_shape[-1]
    units = trained.get_layer("gru").units
    app = FastAPI(title="naive stateful Keras")
    models: dict[str, keras.Model] = {}
    building = threading.Lock()  # Keras model construction is not thread-safe

    @app.get("/readyz")
    def ready() -> dict:
        return {"status": "ready"}

    @app.post("/v1/sessions", status_code=201)
    def create(new: NewSession) -> dict:
        with building:
            model = build(units, features, stateful_batch=1)
            model.set_weights(trained.get_weights())
        models[new.session_id] = model
        return {"session_id": new.session_id}

    @app.post("/v1/sessions/{session_id}/chunks")
    def push(session_id: str, chunk: ChunkIn) -> dict:
        model = models.get(session_id)
        if model is None:
            raise HTTPException(404, "no such session")
        outputs = model(np.array([chunk.inputs], np.float32))
        return {"session_id": session_id, "outputs": np.asarray(outputs)[0].tolist()}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_naive_app(args.model),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
