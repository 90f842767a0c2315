"""The docker-compose topology without Docker: redis-server, K replicas on the Redis backend and
nginx in front, as local processes under one temporary directory, with the same nginx
configuration as docker-compose.yml (deploy/nginx/srnn.conf).

    python -m deploy.topology --replicas 3 --port 8080     # or: make topology
    # prints the URL; Ctrl-C stops everything

Needs redis-server and nginx (Debian: apt-get install redis-server nginx-light). Runs as any user:
nginx gets a prefix, pid file and temp paths of its own.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from deploy.waiting import free_port, wait_for

NGINX_DIR = Path(__file__).resolve().parent / "nginx"
SHARED_CONF = NGINX_DIR / "srnn.conf"
ROOT = NGINX_DIR.parents[1]
NOT_YET = (httpx.TransportError, OSError)  # a server still starting


def nginx_main_conf(prefix: Path, shared: Path = SHARED_CONF) -> str:
    """The main configuration of a local nginx: everything that must not point at system paths
    (pid, logs, temp files) lives under ``prefix``; the http part is the shared file."""
    built = subprocess.run(["nginx", "-V"], capture_output=True, text=True).stderr
    temp = [f"client_body_temp_path {prefix / 'body'};", f"proxy_temp_path {prefix / 'proxy'};"]
    for module in ("fastcgi", "uwsgi", "scgi"):  # each compiled-in module insists on its own path
        if f"--without-http_{module}_module" not in built:
            temp.append(f"{module}_temp_path {prefix / module};")
    # As root, nginx would run its workers as nobody, who cannot use a private temp directory.
    user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
    return (f"{user}worker_processes 1;\npid {prefix / 'nginx.pid'};\nerror_log stderr warn;\n"
            "events { worker_connections 4096; }\n"
            "http {\n    access_log off;\n    " + "\n    ".join(temp) + f"\n    include {shared};\n}}\n")


def write_nginx_conf(prefix: Path, upstreams: list[str], listen: str, shared: Path = SHARED_CONF) -> Path:
    """nginx.conf plus this deployment's srnn-upstream.conf and srnn-listen.conf in ``prefix``."""
    servers = "".join(f"server {u} max_fails=1 fail_timeout=10s;\n" for u in upstreams)
    (prefix / "srnn-upstream.conf").write_text(servers)
    (prefix / "srnn-listen.conf").write_text(f"listen {listen};\n")
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_main_conf(prefix, shared))
    return conf


class Topology:
    def __init__(self, replicas: int = 3, port: int = 0, model: str = "default", args: tuple[str, ...] = (),
                 quiet: bool = True):
        for program in ("redis-server", "nginx"):
            if shutil.which(program) is None:
                raise RuntimeError(f"{program} is not installed (apt-get install redis-server nginx-light)")
        self.dir = Path(tempfile.mkdtemp(prefix="srnn-topology-"))
        self.redis_port, self.port = free_port(), port or free_port()
        self.replica_ports = [free_port() for _ in range(replicas)]
        self.model, self.args = model, args
        self.output = subprocess.DEVNULL if quiet else None
        self.redis: subprocess.Popen | None = None
        self.nginx: subprocess.Popen | None = None
        self.replicas: list[subprocess.Popen | None] = [None] * replicas

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def replica_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.replica_ports[index]}"

    def start(self) -> Topology:
        try:
            self._start_redis()
            for index in range(len(self.replicas)):
                self.start_replica(index, wait=False)
            for index in range(len(self.replicas)):
                self.wait_replica(index)
            self._start_nginx()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_redis(self) -> None:
        data = self.dir / "redis"
        data.mkdir()
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", str(data),
             "--appendonly", "yes", "--save", ""], stdout=self.output, stderr=self.output)
        ping = lambda: socket.create_connection(("127.0.0.1", self.redis_port), timeout=0.5).close() or True  # noqa: E731
        wait_for(ping, "redis-server", 10, self.redis)

    def start_replica(self, index: int, wait: bool = True) -> None:
        self.replicas[index] = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--backend", "redis", "--redis-url", self.redis_url,
             "--model", self.model, "--host", "127.0.0.1", "--port", str(self.replica_ports[index]),
             "--log-level", "warning", *self.args],
            cwd=ROOT, stdout=self.output, stderr=self.output)
        if wait:
            self.wait_replica(index)

    def wait_replica(self, index: int) -> None:
        ready = lambda: httpx.get(f"{self.replica_url(index)}/readyz", timeout=1).status_code == 200  # noqa: E731
        wait_for(ready, f"replica {index}", 120, self.replicas[index], errors=NOT_YET)

    def stop_replica(self, index: int, kill: bool = False, timeout: float = 30) -> None:
        """SIGTERM (drains in-flight requests and queued chunks) or SIGKILL, then wait."""
        process, self.replicas[index] = self.replicas[index], None
        if process is not None:
            _end(process, kill, timeout)

    def _start_nginx(self) -> None:
        upstreams = [f"127.0.0.1:{p}" for p in self.replica_ports]
        conf = write_nginx_conf(self.dir, upstreams, f"127.0.0.1:{self.port}")
        self.nginx = subprocess.Popen(
            ["nginx", "-p", str(self.dir), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"],
            stdout=self.output, stderr=self.output)
        ready = lambda: httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200  # noqa: E731
        wait_for(ready, "nginx", 10, self.nginx, errors=NOT_YET)

    def stop(self) -> None:
        for process in (self.nginx, *self.replicas):
            if process is not None:
                process.terminate()  # all at once, so they drain side by side
        for process in (self.nginx, *self.replicas):
            if process is not None:
                _end(process, False, 30)
        self.nginx, self.replicas = None, [None] * len(self.replicas)
        if self.redis is not None:
            _end(self.redis, False, 10)
            self.redis = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Topology:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _end(process: subprocess.Popen, kill: bool, timeout: float) -> None:
    process.kill() if kill else process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.topology", description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--port", type=int, default=8080, help="nginx's port (0: any free port)")
    parser.add_argument("--model", default="default")
    parser.add_argument("serve_args", nargs="*", help="more `stateful-rnn serve` flags, after --")
    options = parser.parse_args(argv)
    topology = Topology(options.replicas, options.port, options.model, tuple(options.serve_args), quiet=False)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop like Ctrl-C: through `finally`
    print(f"starting redis-server, {options.replicas} replicas and nginx in {topology.dir} ...", flush=True)
    try:
        topology.start()
        print(f"ready: {topology.url}  (Redis {topology.redis_url}; replicas "
              f"{', '.join(topology.replica_url(i) for i in range(options.replicas))}); Ctrl-C stops",
              flush=True)
        while all(p is not None and p.poll() is None for p in (topology.redis, topology.nginx, *topology.replicas)):
            time.sleep(0.5)
        print("a process of the topology exited; stopping the rest", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        topology.stop()


if __name__ == "__main__":
    sys.exit(main())
