"""A real Redis Cluster for tests: three masters (no replicas) on free ports, in a temporary
directory, made into a cluster with ``redis-cli --cluster create``."""

from __future__ import annotations

import itertools
import random
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from redis.crc import key_slot

from harness.waiting import wait_for


def cluster_ports(count: int) -> list[int]:
    """``count`` distinct free ports whose cluster bus ports (10000 above) are free too. Ports come
    from 20000-29999, so no bus port (30000 and up) can be another node's port."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20000, 30000)
        if port in ports:
            continue
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        ports.append(port)
    return ports


class RedisClusterServers:
    def __init__(self, masters: int = 3):
        for program in ("redis-server", "redis-cli"):
            if shutil.which(program) is None:
                raise RuntimeError(f"{program} is not installed (README: Redis)")
        self.ports = cluster_ports(masters)
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
            self.processes.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--dir",
                        str(node_dir),
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--appendonly",
                        "no",
                        "--save",
                        "",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in self.ports:
            wait_for(
                lambda port=port: self.node(port).ping(),
                "a cluster node",
                30,
                errors=(redis.RedisError,),
            )
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        # Every node must agree before a client's first CLUSTER SLOTS is trustworthy.
        wait_for(
            lambda: all(self.node(p).cluster("info")["cluster_state"] == "ok" for p in self.ports),
            "cluster_state:ok",
            30,
            errors=(redis.RedisError,),
        )

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

    def ids_on_every_master(self, prefix: str, per_master: int) -> list[str]:
        """Session ids chosen by the slot of their key, ``per_master`` on each master (random ids
        could all miss one)."""
        owner = {}
        for start, end, (_, port, *_rest), *_replicas in self.node(self.ports[0]).execute_command(
            "CLUSTER SLOTS"
        ):
            owner.update((slot, int(port)) for slot in range(start, end + 1))
        chosen: dict[int, list[str]] = {port: [] for port in self.ports}
        for n in itertools.count():
            sid = f"pick-{n}"
            ids = chosen[owner[key_slot(f"{prefix}:{{{sid}}}".encode())]]
            if len(ids) < per_master:
                ids.append(sid)
            if all(len(ids) == per_master for ids in chosen.values()):
                return [sid for ids in chosen.values() for sid in ids]
        raise AssertionError("unreachable")

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
