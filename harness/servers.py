"""Real servers: a uvicorn in a thread of this process, or ``stateful-rnn serve`` as its own
process. Both listen on a real socket on 127.0.0.1."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from harness.waiting import free_port, wait_for  # noqa: F401 (free_port: for the tests)

if TYPE_CHECKING:  # TensorFlow: imported by the in-thread server only, not by process tests
    from app.model.step import StreamingModel

ROOT = Path(__file__).resolve().parents[1]


def wait_ready(url: str, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    wait_for(
        lambda: httpx.get(f"{url}/readyz", timeout=1).status_code == 200,
        url,
        timeout,
        process,
        errors=(httpx.TransportError,),
        every_s=0.05,
    )


@contextmanager
def serve_in_thread(model: StreamingModel | None, **settings) -> Iterator[str]:
    """uvicorn serving ``model`` (None: what ``settings`` name, a repository say) on a free port, in
    a thread: real HTTP, without a new process."""
    import uvicorn

    from app.config import Settings
    from app.main import create_app, server_config

    config = Settings(port=free_port(), log_level="warning", **settings)
    server = uvicorn.Server(server_config(create_app(config, model), config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{config.port}"
    try:
        wait_ready(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


class ServerProcess:
    """``python -m app serve ARGS`` on a port of its own, as its own process."""

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        output: Any = None,
        log_level: str = "warning",
        open_files: int | None = None,
    ):
        self.args, self.env, self.log_level = args, env, log_level
        self.open_files = open_files  # its RLIMIT_NOFILE (ulimit -n), if not inherited
        self.output = output  # where its stdout and stderr go (a file, or subprocess.DEVNULL)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "app",
            "serve",
            "--port",
            str(self.port),
            "--log-level",
            self.log_level,
            *self.args,
        ]

    def start(self) -> ServerProcess:
        self.process = subprocess.Popen(
            self.command(),
            cwd=ROOT,
            env={**os.environ, **(self.env or {})},
            stdout=self.output,
            stderr=self.output,
            preexec_fn=None if self.open_files is None else self._limit_files,
        )
        return self

    def _limit_files(self) -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))

    def rss(self) -> int | None:
        """Its resident memory in bytes (Linux; None elsewhere)."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        return next(
            int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")
        )

    def wait_ready(self, timeout: float = 90.0) -> ServerProcess:
        wait_ready(self.url, timeout, self.process)
        return self

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then wait for a graceful exit (SIGKILL if it does not come)."""
        if self.process is None:
            return None
        self.process.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
        finally:
            self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@contextmanager
def running(servers: list[ServerProcess], timeout: float = 90.0) -> Iterator[list[ServerProcess]]:
    """Start ``servers`` side by side (their warm-ups overlap), wait until each is ready, and stop
    them all at the end."""
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready(timeout)
        yield servers
    finally:
        for server in servers:
            server.stop()


@contextmanager
def serve_processes(
    count: int, *args: str, env: dict[str, str] | None = None
) -> Iterator[list[ServerProcess]]:
    """``count`` server processes with the same arguments, started side by side."""
    with running([ServerProcess(*args, env=env) for _ in range(count)]) as servers:
        yield servers


@contextmanager
def serve_process(*args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """One server process; yields its URL."""
    with serve_processes(1, *args, env=env) as (server,):
        yield server.url
