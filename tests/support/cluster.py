"""A real Redis Cluster for tests: three masters (no replicas) on free ports, in a temporary
directory, made into a cluster with ``redis-cli --cluster create``."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import redis


def cluster_port() -> int:
    """A free port whose cluster bus port (10000 above it) is free and valid too."""
    while True:
        port = random.randrange(20000, 30000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


class RedisClusterServers:
    def __init__(self, masters: int = 3):
        for program in ("redis-server", "redis-cli"):
            if shutil.which(program) is None:
                raise RuntimeError(f"{program} is not installed (README: Redis)")
        self.ports = [cluster_port() for _ in range(masters)]
        self.dir = Path(tempfile.mkdtemp(prefix="srnn-cluster-"))
        self.processes: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_connect_timeout=1)

    def start(self) -> None:
        for port in self.ports:
            node_dir = self.dir / str(port)
            node_dir.mkdir()
            self.processes.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir),
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--appendonly", "no", "--save", ""],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        for port in self.ports:
            self._wait(lambda: self.node(port).ping(), "a cluster node did not start")
        subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        # Every node must agree before a client's first CLUSTER SLOTS is trustworthy.
        self._wait(lambda: all(self.node(p).cluster("info")["cluster_state"] == "ok" for p in self.ports),
                   "the cluster did not reach cluster_state:ok")

    def _wait(self, check, message: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(message)
            time.sleep(0.1)

    def holder(self, key: str) -> int:
        """The port of the master that holds ``key``: the one that serves its CLUSTER KEYSLOT, and
        has it."""
        slot = self.node(self.ports[0]).cluster("keyslot", key)
        for port in self.ports:
            try:
                if self.node(port).exists(key):
                    return port
            except redis.ResponseError:  # MOVED: another master serves that slot
                continue
        raise KeyError(f"{key} (slot {slot})")

    def keys(self, pattern: str) -> list[bytes]:
        return [k for p in self.ports for k in self.node(p).scan_iter(match=pattern, count=1000)]

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def redis_cluster(masters: int = 3) -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(masters)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
