"""The HTTP and WebSocket ceiling: the service's own stack with the model taken out.

Same uvicorn options, same admission middleware and access log, same key check, same body reading and
JSON/frame parsing, same response encoding; a chunk is answered at once with zeros of the model's
output size instead of going through sessions, the engine and the model. Whatever the service does
beyond this is the price of the model and the state. The WebSocket echo is the service's own stream
transport (picows, ``app.api.streaming``) over sessions that answer at once (:class:`EchoSessions`).

    python -m bench.ceiling --port 8100 --features 16 --outputs 4 [--per-step] [--bare]

With ``--bare``, the chunk route alone on plain FastAPI and uvicorn: no middleware, no key check,
no size limits, the body parsed by ``orjson.loads`` and ``np.asarray``. What a hand-written endpoint
does for the same payload; the distance to the ceiling above is what the service's protections cost.
"""

from __future__ import annotations

import argparse
import asyncio
from types import SimpleNamespace

import numpy as np
import orjson
import uvicorn
from fastapi import FastAPI, Request
from starlette.responses import Response

from app.api import errors, middleware, origins
from app.api.auth import KeyRing, caller_of
from app.api.parsing import ChunkLimits, parse_chunk, read_body
from app.api.shares import Shares
from app.config import Settings
from app.engine.core import ChunkResult
from app.main import freeze_heap, server_config


class EchoSessions:
    """What the stream asks of the sessions layer, answered at once with zeros: every session
    exists, and a chunk's future is done when it is returned."""

    def __init__(self, features: int, zeros):
        self.spec = SimpleNamespace(input_features=features)
        self.zeros = zeros

    async def session_model(self, session_id: str, scope: str | None = None):
        return self.spec

    def submit(self, session_id: str, inputs: np.ndarray, reply=None, **_):
        answer = reply or asyncio.get_running_loop().create_future()
        answer.set_result(ChunkResult(session_id, 1, len(inputs), self.zeros(len(inputs))))
        return answer


def create_ceiling_app(settings: Settings, features: int, outputs: int, per_step: bool) -> FastAPI:
    app = FastAPI(title="stateful-rnn ceiling")
    app.state.keys = KeyRing.from_settings(settings)
    app.state.transports = 1  # HTTP alone: the whole descriptor budget for its connections
    limits = app.state.chunk_limits = ChunkLimits.of(
        features, settings.max_chunk_steps, settings.max_body_bytes
    )
    origins.install(app, settings)
    middleware.install(app, Shares.of(settings, app.state.keys))
    errors.install(app)

    def zeros(steps: int) -> np.ndarray:
        return np.zeros((steps, outputs) if per_step else (outputs,), np.float32)

    app.state.sessions = EchoSessions(features, zeros)

    @app.get("/readyz")
    async def ready() -> dict:
        return {"status": "ready"}

    @app.post("/v1/sessions", status_code=201)
    async def create(request: Request) -> Response:
        caller_of(request)
        await read_body(request, settings.max_body_bytes)
        return Response(b'{"session_id":"ceiling"}', 201, media_type="application/json")

    @app.post("/v1/sessions/{session_id}/chunks")
    async def push(session_id: str, request: Request) -> Response:
        caller_of(request)
        body = await read_body(request, limits.json_bytes)
        chunk = parse_chunk(body, features, limits.steps)
        answer = {
            "session_id": session_id,
            "seq": 1,
            "steps": len(chunk.inputs),
            "outputs": zeros(len(chunk.inputs)),
        }
        return Response(
            orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
        )

    return app


def create_bare_app(outputs: int, per_step: bool) -> FastAPI:
    app = FastAPI(title="bare FastAPI + orjson")

    @app.get("/readyz")
    async def ready() -> dict:
        return {"status": "ready"}

    @app.post("/v1/sessions", status_code=201)
    async def create() -> Response:
        return Response(b'{"session_id":"bare"}', 201, media_type="application/json")

    @app.post("/v1/sessions/{session_id}/chunks")
    async def push(session_id: str, request: Request) -> Response:
        inputs = np.asarray(orjson.loads(await request.body())["inputs"], np.float32)
        zeros = np.zeros((len(inputs), outputs) if per_step else (outputs,), np.float32)
        answer = {"session_id": session_id, "seq": 1, "steps": len(inputs), "outputs": zeros}
        return Response(
            orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
        )

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--features", type=int, required=True)
    parser.add_argument("--outputs", type=int, required=True)
    parser.add_argument("--per-step", action="store_true")
    parser.add_argument(
        "--bare", action="store_true", help="plain FastAPI and uvicorn, no middleware"
    )
    args = parser.parse_args()
    if args.bare:
        app = create_bare_app(args.outputs, args.per_step)
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
        return
    settings = Settings(port=args.port, log_level="warning")
    app = create_ceiling_app(settings, args.features, args.outputs, args.per_step)
    freeze_heap()  # as the service does
    uvicorn.Server(server_config(app, settings)).run()


if __name__ == "__main__":
    main()
