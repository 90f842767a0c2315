"""The application: wires api -> sessions -> engine -> model -> store together."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI

from app import metrics
from app.api import connections, errors, middleware, openapi, origins, streaming
from app.api.auth import KeyRing
from app.api.parsing import ChunkLimits
from app.api.routes import chunks, console, state, stream, v2
from app.api.routes import models as models_routes
from app.api.routes import service as service_routes
from app.api.routes import sessions as sessions_routes
from app.api.shares import Shares
from app.config import Settings
from app.engine import Engine
from app.errors import StartupError
from app.logs import log_config
from app.model.repository import Repository, Source
from app.model.spec import model_key, split_key
from app.sessions import Sessions
from app.sessions.remote import RemoteSessions
from app.sessions.service import SessionService
from app.sessions.versions import Versions
from app.store import snapshot
from app.store.base import StateStore
from app.store.memory import MemoryStore
from app.store.redis import RedisStore

if TYPE_CHECKING:  # TensorFlow: imported only where the model runs
    from app.model.step import StreamingModel

log = logging.getLogger("app")

DESCRIPTION = """
Keeps a recurrent Keras model's state per client stream. Each session owns one row of a fixed-size
state batch, exactly like one row of a Keras `stateful=True` layer; its chunks continue that row, and
chunks from many sessions run together in one compiled TensorFlow call. Errors are RFC 9457 problem
documents.

Streams: `WS /v1/sessions/{session_id}/stream` speaks the protocol of the
[AsyncAPI document](/asyncapi.json) served beside this one.
"""


def create_store(settings: Settings) -> StateStore:
    quota = settings.max_sessions_per_tenant
    if settings.backend == "redis":
        return RedisStore(
            settings.redis_url, settings.redis_prefix, settings.capacity, tenant_quota=quota
        )
    return MemoryStore(settings.capacity, tenant_quota=quota)


def repository_of(settings: Settings) -> Repository:
    return Repository.of(settings.model, settings.model_repository)


def legacy_key(sources: dict[str, dict[int, Source]]) -> str | None:
    """Whose sessions a snapshot written before versions holds: the one model's newest version."""
    if len(sources) != 1:
        return None
    ((name, versions),) = sources.items()
    return model_key(name, max(versions))


def version_loader(settings: Settings) -> Callable[[Source], StreamingModel]:
    """How this server loads a version of the repository: its runtime, XLA and size limit."""
    from app.model.loader import load_version  # TensorFlow: only where the model runs

    return functools.partial(
        load_version,
        xla=settings.xla,
        max_bytes=settings.max_model_bytes,
        runtime=settings.runtime,
        threads=settings.runtime_threads,
    )


def load_initial(settings: Settings, repository: Repository) -> list[StreamingModel]:
    """The versions served from the start (compiled, not yet warm): each model's newest
    ``--keep-versions``, and those the snapshot holds sessions of. A version that fails to load is
    logged and left out (the others serve; it shows as failed once the repository is read again);
    if none loads, or the snapshot needs one the repository lacks, the server cannot start."""
    load_version = version_loader(settings)
    sources = repository.scan()
    wanted = {
        model_key(name, v): versions[v]
        for name, versions in sources.items()
        for v in sorted(versions, reverse=True)[: settings.keep_versions]
    }
    if settings.backend == "memory" and settings.snapshot is not None:
        for key in snapshot.models(settings.snapshot, legacy_key(sources) or ""):
            name, version = split_key(key)
            if version not in sources.get(name, {}):
                raise StartupError(
                    f"snapshot {str(settings.snapshot)!r} holds sessions of model {name} "
                    f"version {version}, which the model repository does not have"
                )
            wanted[key] = sources[name][version]
    models = []
    for _, source in sorted(wanted.items()):
        try:
            models.append(load_version(source))
        except StartupError as exc:
            if not repository.watched:
                raise
            log.error(
                "model %s version %d failed to load, and is not served: %s",
                source.name,
                source.version,
                exc,
            )
    if not models:
        raise StartupError(f"no model in the repository {str(settings.model_repository)!r} loads")
    return models


class Service:
    """The session service and all it runs on (the store, the engine, the model versions), with
    their life: warming the models, watching the repository, sweeping expired sessions, snapshots,
    and a shutdown that finishes what is queued and loses nothing acknowledged. It lives in the
    process that serves the API, or, with API workers, in the engine process (app.serve).

    ``models`` are the versions loaded before serving (:func:`load_initial`), not yet warm."""

    def __init__(
        self, settings: Settings, models: list[StreamingModel], repository: Repository | None = None
    ):
        self.settings = settings
        self.store = create_store(settings)
        # Every session of a batch holds a slot while it runs, so a batch never outgrows the table.
        self.max_batch = min(settings.max_batch, settings.capacity)
        self.engine = Engine(
            self.store,
            max_batch=self.max_batch,
            max_queue=settings.max_queue,
            max_session_queue=settings.max_session_queue,
            batch_delay=settings.max_batch_delay_ms / 1000,
            batch_interval=settings.batch_interval_ms / 1000,
        )
        repository = repository or repository_of(settings)
        self.versions = Versions(
            repository,
            self.engine,
            version_loader(settings),
            (self.max_batch, settings.max_chunk_steps),
            keep=settings.keep_versions,
            poll_s=settings.repository_poll_s if repository.watched else 0,
        )
        self.versions.preload(models)
        if isinstance(self.store, MemoryStore) and settings.snapshot is not None:
            legacy = legacy_key(self.versions.sources)
            restored = snapshot.restore(
                self.store, self.versions.fingerprints, settings.snapshot, legacy
            )
            log.info("restored %d sessions from %s", restored, settings.snapshot)
        self.sessions = SessionService(
            self.engine, self.versions, default_ttl_s=settings.session_ttl
        )
        # Set once a second by the stats sampler, so they cost nothing per request.
        store, engine = self.store, self.engine
        metrics.CAPACITY.set(settings.capacity)
        metrics.refreshing("hot sessions", lambda: metrics.HOT_SESSIONS.set(store.hot))
        metrics.refreshing("queue depth", lambda: metrics.QUEUE_DEPTH.set(engine.depth))
        if isinstance(store, MemoryStore):
            metrics.refreshing("sessions", lambda: metrics.SESSIONS.set(len(store)))
        self._stopping = asyncio.Event()
        self._warming: asyncio.Task | None = None
        self._snapshots: asyncio.Task | None = None

    async def start(self) -> None:
        self.engine.start()
        self._warming = asyncio.create_task(self.versions.start())
        self._warming.add_done_callback(_report_warm_failure)
        self._warming.add_done_callback(lambda _: freeze_heap())
        freeze_heap()
        self.sessions.start()
        if isinstance(self.store, MemoryStore) and self.settings.snapshot is not None:
            self._snapshots = asyncio.create_task(self._snapshot_until_stopped())

    async def stop(self) -> None:
        """After the API has stopped taking requests and finished those in flight: the engine
        finishes what is queued, then the last snapshot holds every acknowledged chunk."""
        await self.sessions.stop()
        await self.engine.stop()
        if self._warming is not None:
            self._warming.cancel()
        if self._snapshots is not None:
            self._stopping.set()
            await self._snapshots
            await self._save_snapshot()
            log.info("saved %d sessions to %s", await self.store.count(), self.settings.snapshot)
        await self.store.close()

    async def _save_snapshot(self) -> None:
        data = snapshot.capture(self.store, self.versions.fingerprints)
        await asyncio.to_thread(snapshot.write, self.settings.snapshot, data)

    async def _snapshot_until_stopped(self) -> None:
        # Not cancelled at shutdown but told to stop, so that a write in progress finishes
        # before the last one starts.
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.snapshot_interval)
            if self._stopping.is_set():
                break
            try:
                await self._save_snapshot()
            except OSError:
                log.exception("writing the snapshot to %s failed", self.settings.snapshot)


def create_app(
    settings: Settings | None = None,
    model: StreamingModel | None = None,
    sessions: RemoteSessions | None = None,
    models: list[StreamingModel] | None = None,
    repository: Repository | None = None,
) -> FastAPI:
    """The API: with its own service, serving ``models`` of ``repository`` (as
    :func:`load_initial` loads them; default: the repository ``settings`` names), or ``model``
    alone; or, in an API worker, with the engine process's (``sessions``)."""
    settings = settings or Settings()
    keys = KeyRing.from_settings(settings)
    if sessions is None:  # in an API worker, the engine process has said so already
        warn_if_open(settings, keys)
    if sessions is None:
        if model is not None:
            models, repository = [model], Repository(single=model.spec.name)
        repository = repository or repository_of(settings)
        service = Service(settings, models or load_initial(settings, repository), repository)

        @asynccontextmanager
        async def lifespan(app: FastAPI):
            await service.start()
            rpc = await start_grpc(
                settings,
                service.sessions,
                keys,
                app.state.chunk_limits,
                app.state.shares,
                connections.max_connections(settings, app.state.transports),
            )
            try:
                yield
            finally:  # uvicorn has stopped accepting and finished the requests in flight
                if rpc is not None:
                    await rpc.stop()
                await service.stop()

        api: Sessions = service.sessions
    else:

        @asynccontextmanager
        async def lifespan(app: FastAPI):
            await sessions.start()
            refresher = asyncio.create_task(_refresh_metrics())
            try:
                yield
            finally:
                refresher.cancel()
                await sessions.close()

        api = sessions

    app = openapi.create(
        title="stateful-rnn", version="1", description=DESCRIPTION, lifespan=lifespan
    )
    origins.install(app, settings)  # inside admission: refusals are counted and logged too
    # One count of requests in progress for HTTP and (in this process) gRPC alike.
    app.state.shares = Shares.of(settings, keys)
    middleware.install(app, app.state.shares)
    app.state.settings = settings
    # From the versions loaded at start (a later one with more input features is held to these).
    app.state.chunk_limits = ChunkLimits.of(
        api.max_features, settings.max_chunk_steps, settings.max_body_bytes
    )
    app.state.sessions = api
    # HTTP, and gRPC when it is served here: they share this process's file descriptors.
    app.state.transports = 2 if sessions is None and settings.grpc_port is not None else 1
    app.state.keys = keys
    errors.install(app)
    # The hot routes first (chunks over /v1 and /v2, the stream): each request is matched against
    # the routes in order, about 1.5 µs a candidate in this FastAPI.
    for module in (
        chunks,
        v2,
        stream,
        sessions_routes,
        state,
        models_routes,
        service_routes,
        console,
    ):
        app.include_router(module.router)
    return app


async def start_grpc(
    settings: Settings,
    sessions: SessionService,
    keys: KeyRing,
    limits: ChunkLimits,
    shares: Shares,
    connections: int,
):
    """The gRPC server of ``--grpc-port``, started; None without one. ``connections``: the most
    it may hold open."""
    if settings.grpc_port is None:
        return None
    from app.api.rpc import GrpcServer  # grpcio: only when asked for

    server = GrpcServer(sessions, keys, limits, shares, settings, connections)
    await server.start()
    return server


def warn_if_open(settings: Settings, keys: KeyRing) -> None:
    if keys.open:
        log.warning(
            "no API keys configured: the service is open to anyone who can reach %s:%s "
            "(dev mode; set --api-keys and --admin-keys before exposing it)",
            settings.host,
            settings.port,
        )


async def _refresh_metrics() -> None:
    """An API worker's gauges (its connections), set once a second; the engine process's are set
    by its stats sampler."""
    while True:
        await asyncio.sleep(1.0)
        metrics.refresh()


def freeze_heap() -> None:
    """Take every object alive now out of the garbage collector's sight.

    TensorFlow and Keras leave some 300,000 long-lived objects, and a full collection walks them all:
    about 0.1 s here, a pause that every request in flight waits out (it was most of the p99 latency).
    What requests create later is still collected as usual."""
    gc.freeze()


def _report_warm_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("warming the model failed; /readyz stays 503", exc_info=task.exception())


def server_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    """How uvicorn serves ``app``: the one place its options are chosen."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=log_config(settings.log_level, settings.log_format),
        access_log=False,  # ours (app.access) leaves out query strings, where keys may be
        timeout_graceful_shutdown=30,
        # Header limits and deadlines, and the connection cap, are the protocol's (any parser).
        http=connections.protocol_class(settings, app.state.transports),
        timeout_keep_alive=30,  # an idle keep-alive connection is closed after this
        # h11's own limit on unparsed bytes, above the protocol's (which counts one read more).
        h11_max_incomplete_event_size=settings.max_header_bytes + 256 * 1024 + 1,
        # Streams continue on picows once uvicorn has parsed their upgrade request (its limits,
        # pings and the refusal of compression are set there).
        ws=streaming.protocol_class(app, settings),
    )
