"""Real Redis for tests: the machine's (``SRNN_TEST_REDIS_URL``, default 127.0.0.1:6379) under a key
prefix of the test's own, or a ``redis-server`` the test starts, stops and restarts itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from harness.waiting import free_port, wait_for

SHARED_URL = os.environ.get("SRNN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


class RedisServer:
    """A ``redis-server`` of the test's own, on a free port, with an append-only file so that a
    restart keeps what it had."""

    def __init__(self, appendonly: bool = True):
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (README: Redis)")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="srnn-redis-"))
        self.appendonly = appendonly
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--appendfsync",
                "always",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: reachable(self.url), "redis-server", 10, self.process, every_s=0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def own_redis(appendonly: bool = True) -> Iterator[RedisServer]:
    server = RedisServer(appendonly)
    server.start()
    try:
        yield server
    finally:
        server.close()


def new_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
