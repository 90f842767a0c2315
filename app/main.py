"""The application: wires api -> sessions -> engine -> model -> store together."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.api import errors
from app.api.routes import chunks, service, sessions, state
from app.config import Settings
from app.engine.batcher import Engine
from app.model.loader import load_model
from app.model.step import StreamingModel
from app.sessions.service import SessionService
from app.store.memory import MemoryStore

log = logging.getLogger("app")

DESCRIPTION = """
Keeps a recurrent Keras model's state per client stream. Each session owns one row of a fixed-size
state batch, exactly like one row of a Keras `stateful=True` layer; its chunks continue that row, and
chunks from many sessions run together in one compiled TensorFlow call. Errors are RFC 9457 problem
documents.
"""


def create_app(settings: Settings | None = None, model: StreamingModel | None = None) -> FastAPI:
    settings = settings or Settings()
    model = model or load_model(settings.model)
    store = MemoryStore(settings.capacity, model.spec.state_units)
    engine = Engine(model, store, max_batch=settings.max_batch, max_queue=settings.max_queue)
    session_service = SessionService(engine, default_ttl_s=settings.session_ttl)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        warming = asyncio.create_task(engine.start((settings.max_batch, settings.max_chunk_steps)))
        warming.add_done_callback(_report_warm_failure)
        session_service.start()
        try:
            yield
        finally:
            await session_service.stop()
            await engine.stop()
            warming.cancel()

    app = FastAPI(title="stateful-rnn", version="1", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.sessions = session_service
    errors.install(app)
    for module in (sessions, chunks, state, service):
        app.include_router(module.router)
    return app


def _report_warm_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("warming the model failed; /readyz stays 503", exc_info=task.exception())
