"""The docker-compose topology as local processes: a ``redis-server``, K replicas on the Redis
backend and nginx in front, under one temporary directory, with the same nginx configuration as
docker-compose.yml (deploy/nginx/srnn.conf). ``python -m deploy.topology`` runs it from the command
line; the deploy tests start it themselves. Needs redis-server and nginx (Debian: apt-get install
redis-server nginx-light). Runs as any user: nginx gets a prefix, pid file and temp paths of its own.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import httpx

from harness.redis import RedisServer
from harness.servers import ROOT, ServerProcess
from harness.waiting import free_port, wait_for

NGINX_DIR = ROOT / "deploy" / "nginx"
SHARED_CONF = NGINX_DIR / "srnn.conf"
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
    return (
        f"{user}worker_processes 1;\npid {prefix / 'nginx.pid'};\nerror_log stderr warn;\n"
        "events { worker_connections 4096; }\n"
        "http {\n    access_log off;\n    " + "\n    ".join(temp) + f"\n    include {shared};\n}}\n"
    )


def write_nginx_conf(
    prefix: Path, upstreams: list[str], listen: str, shared: Path = SHARED_CONF
) -> Path:
    """nginx.conf plus this deployment's srnn-upstream.conf and srnn-listen.conf in ``prefix``."""
    servers = "".join(f"server {u} max_fails=1 fail_timeout=10s;\n" for u in upstreams)
    (prefix / "srnn-upstream.conf").write_text(servers)
    (prefix / "srnn-listen.conf").write_text(f"listen {listen};\n")
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_main_conf(prefix, shared))
    return conf


class Topology:
    def __init__(
        self,
        replicas: int = 3,
        port: int = 0,
        model: str = "default",
        args: tuple[str, ...] = (),
        quiet: bool = True,
    ):
        for program in ("redis-server", "nginx"):
            if shutil.which(program) is None:
                raise RuntimeError(
                    f"{program} is not installed (apt-get install redis-server nginx-light)"
                )
        self.dir = Path(tempfile.mkdtemp(prefix="srnn-topology-"))
        self.port = port or free_port()
        self.model, self.args = model, args
        self.output = subprocess.DEVNULL if quiet else None
        self.redis = RedisServer()
        self.nginx: subprocess.Popen | None = None
        self.replicas = [self._replica() for _ in range(replicas)]

    def _replica(self) -> ServerProcess:
        return ServerProcess(
            "--backend",
            "redis",
            "--redis-url",
            self.redis.url,
            "--model",
            self.model,
            "--host",
            "127.0.0.1",
            *self.args,
            output=self.output,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def redis_url(self) -> str:
        return self.redis.url

    def replica_url(self, index: int) -> str:
        return self.replicas[index].url

    def start(self) -> Topology:
        try:
            self.redis.start()
            for replica in self.replicas:
                replica.start()
            for replica in self.replicas:
                replica.wait_ready(120)
            self._start_nginx()
        except BaseException:
            self.stop()
            raise
        return self

    def start_replica(self, index: int) -> None:
        self.replicas[index].start().wait_ready(120)

    def stop_replica(self, index: int, kill: bool = False, timeout: float = 30) -> None:
        """SIGTERM (drains in-flight requests and queued chunks) or SIGKILL, then wait."""
        replica = self.replicas[index]
        replica.kill() if kill else replica.stop(timeout)

    def alive(self) -> bool:
        processes = [self.redis.process, self.nginx, *(r.process for r in self.replicas)]
        return all(p is not None and p.poll() is None for p in processes)

    def _start_nginx(self) -> None:
        upstreams = [f"127.0.0.1:{replica.port}" for replica in self.replicas]
        conf = write_nginx_conf(self.dir, upstreams, f"127.0.0.1:{self.port}")
        self.nginx = subprocess.Popen(
            ["nginx", "-p", str(self.dir), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"],
            stdout=self.output,
            stderr=self.output,
        )
        ready = lambda: httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200  # noqa: E731
        wait_for(ready, "nginx", 10, self.nginx, errors=NOT_YET)

    def stop(self) -> None:
        processes = [p for p in (self.nginx, *(r.process for r in self.replicas)) if p is not None]
        for process in processes:
            process.terminate()  # all at once, so they drain side by side
        if self.nginx is not None:
            self.nginx.wait(30)
            self.nginx = None
        for replica in self.replicas:
            replica.stop()
        self.redis.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Topology:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
