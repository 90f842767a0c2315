"""How ``stateful-rnn serve`` runs: in one process, or as an engine process and API worker processes.

``--workers 0``: one process. uvicorn serves the API, and the engine, the store and the model live
beside it (the model on a thread of its own); one interpreter lock for all of it.

``--workers N``: this process is the engine process. It binds the listening socket, loads and warms
the model, runs the engine and the store (one owner per session, as the memory backend needs), and
answers the session service's calls (:mod:`app.sessions.remote`). N worker processes
(``python -m app.worker``) share the socket and serve HTTP and WebSockets: parsing, checking,
encoding, the connections. That work, which caps one process near one core, is spread over N
processes, and none of it contends with the model for an interpreter lock. Metrics are summed over
the processes (Prometheus's multiprocess mode).

Shutdown (SIGTERM or SIGINT) goes in the order one process follows: the workers stop accepting and
finish the requests they hold, then the engine finishes what is queued and writes the snapshot. A
worker that dies is started again.

An engine process that dies (killed, out of memory) takes the server down at once rather than
leave it hanging: every worker holds the read end of a pipe whose write end only the engine
process holds, so each learns of the death the moment it happens, answers 503 to the requests it
holds and to readiness, stops accepting, removes the engine's private folder and exits with status
3. A supervisor (systemd, Docker, Kubernetes) then restarts the server as a whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import uvicorn
from prometheus_client import multiprocess

from app.api.auth import KeyRing
from app.api.connections import max_connections
from app.api.parsing import ChunkLimits
from app.api.shares import Shares
from app.config import Settings
from app.main import Service, create_app, server_config, start_grpc, warn_if_open
from app.model.repository import Repository
from app.model.step import StreamingModel
from app.sessions.remote import SessionServer

log = logging.getLogger("app")
WORKER_GRACE_S = 35.0  # uvicorn's own graceful shutdown is 30 s


def run(settings: Settings, models: list[StreamingModel], repository: Repository) -> int:
    if not settings.workers:
        uvicorn.Server(
            server_config(create_app(settings, models=models, repository=repository), settings)
        ).run()
        return 0
    import logging.config

    from app.logs import log_config

    logging.config.dictConfig(log_config(settings.log_level, settings.log_format))
    try:
        import uvloop
    except ImportError:  # uvicorn[standard] brings it; without it, plain asyncio
        return asyncio.run(EngineProcess(settings, models, repository).run())
    return uvloop.run(EngineProcess(settings, models, repository).run())


def listen(settings: Settings) -> socket.socket:
    """The listening socket the workers share, bound here so that it is bound once."""
    family, kind, proto, _, address = socket.getaddrinfo(
        settings.host, settings.port, type=socket.SOCK_STREAM
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def worker_environment(settings: Settings) -> dict[str, str]:
    """The settings as ``SRNN_*`` variables, which is how a worker reads them."""
    found = {
        f"SRNN_{name.upper()}": str(value)
        for name, value in settings.model_dump().items()
        if value is not None
    }
    return {**os.environ, **found}


class EngineProcess:
    def __init__(self, settings: Settings, models: list[StreamingModel], repository: Repository):
        self.settings, self.models, self.repository = settings, models, repository
        self.workers: dict[int, subprocess.Popen] = {}

    async def run(self) -> int:
        keys = KeyRing.from_settings(self.settings)
        warn_if_open(self.settings, keys)
        folder = Path(tempfile.mkdtemp(prefix="srnn-engine-"))  # only this user may enter it
        # Its write end stays here alone: the workers see it end the moment this process does.
        self._alive, self._alive_end = os.pipe()
        address = f"ipc://{folder}/sessions"
        listener = listen(self.settings)
        service = Service(self.settings, self.models, self.repository)
        await service.start()
        server = SessionServer(service.sessions, address)
        server.start()
        # gRPC is served here, beside the session service (its streams keep order only there).
        limits = ChunkLimits.of(
            service.sessions.max_features,
            self.settings.max_chunk_steps,
            self.settings.max_body_bytes,
        )
        rpc = await start_grpc(
            self.settings,
            service.sessions,
            keys,
            limits,
            Shares.of(self.settings, keys),
            max_connections(self.settings),
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for received in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(received, stop.set)
        try:
            for index in range(self.settings.workers):
                self.workers[index] = self._start(index, listener, address)
            host, port = listener.getsockname()[:2]
            log.info(
                "serving on http://%s:%d: an engine process and %d API workers",
                host,
                port,
                self.settings.workers,
            )
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
                self._restart_dead(listener, address, stop)
            await self._stop_workers()
        finally:
            for worker in self.workers.values():
                if worker.poll() is None:
                    worker.kill()
            listener.close()
            if rpc is not None:
                await rpc.stop()
            await server.close()
            await service.stop()
            shutil.rmtree(folder, ignore_errors=True)
        return 0

    def _start(self, index: int, listener: socket.socket, address: str) -> subprocess.Popen:
        command = [
            sys.executable,
            "-m",
            "app.worker",
            "--fd",
            str(listener.fileno()),
            "--engine",
            address,
            "--alive",
            str(self._alive),
        ]
        return subprocess.Popen(
            command,
            env=worker_environment(self.settings),
            pass_fds=(listener.fileno(), self._alive),
        )

    def _restart_dead(self, listener: socket.socket, address: str, stop: asyncio.Event) -> None:
        for index, worker in list(self.workers.items()):
            if worker.poll() is not None and not stop.is_set():
                log.error(
                    "API worker %d (pid %d) exited with %s; starting another",
                    index,
                    worker.pid,
                    worker.returncode,
                )
                multiprocess.mark_process_dead(worker.pid)
                self.workers[index] = self._start(index, listener, address)

    async def _stop_workers(self) -> None:
        for worker in self.workers.values():
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)

        def wait(worker: subprocess.Popen) -> None:
            try:
                worker.wait(WORKER_GRACE_S)
            except subprocess.TimeoutExpired:
                log.error(
                    "API worker pid %d did not stop within %.0f s; killed",
                    worker.pid,
                    WORKER_GRACE_S,
                )
                worker.kill()
                worker.wait()
            multiprocess.mark_process_dead(worker.pid)

        await asyncio.gather(*(asyncio.to_thread(wait, worker) for worker in self.workers.values()))
