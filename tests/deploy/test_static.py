"""The deployment files say what they should: the Dockerfile, docker-compose.yml, and an nginx
configuration that nginx itself accepts."""

import json
import re
import shutil
import subprocess
import sys
import time

import httpx
import pytest
import tomllib
import yaml

from app.config import Settings
from harness.servers import ROOT, free_port
from harness.topology import write_nginx_conf

pytestmark = pytest.mark.deploy  # nginx, Redis Cluster, replicas or the deploy files

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
NGINX = ROOT / "deploy" / "nginx"
APPS = ("app1", "app2", "app3")


def instructions(name: str) -> list[str]:
    """The Dockerfile's instructions called ``name``, continuation lines joined."""
    text = DOCKERFILE.replace("\\\n", " ")
    return [line[len(name) :].strip() for line in text.splitlines() if line.startswith(name + " ")]


def test_dockerfile_is_multi_stage_slim_non_root_with_exec_form_entrypoint():
    stages = instructions("FROM")
    assert stages == ["${BASE} AS build", "${BASE}"]
    # One base, pinned to a patch release (python:3.11.11-slim-bookworm), not a moving tag.
    (base,) = instructions("ARG")
    assert re.fullmatch(r"BASE=python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    assert any("--from=build /opt/venv /opt/venv" in c for c in instructions("COPY"))
    assert (
        "[test]" not in DOCKERFILE and "pip install --no-deps ./client ." in DOCKERFILE
    )  # runtime dependencies only
    (user,) = instructions("USER")
    assert user not in ("root", "0")
    (healthcheck,) = instructions("HEALTHCHECK")
    assert (
        healthcheck.endswith('CMD ["python", "-m", "app.probe", "/healthz"]')
        and "curl" not in healthcheck
    )
    # Exec form (JSON arrays): the server is PID 1 and gets SIGTERM itself.
    assert json.loads(instructions("ENTRYPOINT")[0]) == ["stateful-rnn", "serve"]
    # Host and port from the environment alone: a CMD flag would override SRNN_HOST, and a --port
    # flag would leave the healthcheck (which reads SRNN_PORT) asking the wrong port.
    assert instructions("CMD") == []
    env = " ".join(instructions("ENV"))
    assert (
        "SRNN_HOST=0.0.0.0" in env and f"SRNN_PORT={Settings.model_fields['port'].default}" in env
    )
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".git", "tests", "docs", "test-artifacts", "bench"} <= ignored


def test_dependencies_install_from_the_constraints_before_the_code_is_copied():
    # A change to app/ or client/ must not reinstall TensorFlow: every COPY of code comes after
    # the RUN that installs the dependencies, which sees only the pyproject files and the pins.
    steps = [line.split()[0] + " " + line for line in _steps()]
    install = next(i for i, step in enumerate(steps) if "pip install -c constraints.txt" in step)
    copied_before = " ".join(s for s in steps[:install] if s.startswith("COPY"))
    assert "app" not in copied_before.split() and "./client" not in copied_before.split()
    assert "client/pyproject.toml" in copied_before and "constraints.txt" in copied_before
    assert any(s.startswith("COPY") and " app " in s + " " for s in steps[install:])
    labels = dict(re.findall(r'(org\.opencontainers\.image\.\w+)="([^"]*)"', DOCKERFILE))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert labels["org.opencontainers.image.version"] == project["version"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]
    assert {"title", "description"} <= {key.rsplit(".", 1)[1] for key in labels}


def test_constraints_pin_every_dependency_of_the_server_and_the_client():
    pinned = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    for path in ("pyproject.toml", "client/pyproject.toml"):
        project = tomllib.loads((ROOT / path).read_text())["project"]
        wanted = project["dependencies"] + project.get("optional-dependencies", {}).get("test", [])
        for requirement in wanted:
            name = re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0].lower().replace("_", "-")
            assert name.startswith("stateful-rnn") or name in pinned, (path, requirement)


def _steps() -> list[str]:
    """The Dockerfile's instructions in order, continuation lines joined."""
    text = DOCKERFILE.replace("\\\n", " ")
    return [line for line in text.splitlines() if line and not line.startswith((" ", "#"))]


def test_the_build_context_is_the_runtime_files_only():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    ignored = {
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and line[0] != "#"
    }
    tops = {path.split("/")[0] for path in tracked.stdout.split()} | {"test-artifacts"}
    runtime = {"pyproject.toml", "constraints.txt", "README.md", "LICENSE", "client", "app"}
    assert not runtime & ignored
    assert tops - runtime <= ignored, f"would go into the build context: {tops - runtime - ignored}"


def test_compose_has_redis_three_replicas_and_nginx_with_healthchecks():
    services = COMPOSE["services"]
    assert set(services) == {"redis", "nginx", *APPS}
    redis = services["redis"]
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    assert redis["volumes"][0].split(":")[0] in COMPOSE["volumes"]
    # Built once: app1 builds the image, the others run it.
    assert [name for name in APPS if "build" in services[name]] == ["app1"]
    assert {services[name]["image"] for name in APPS} == {"stateful-rnn:latest"}
    assert all(services[name]["pull_policy"] == "never" for name in APPS[1:])
    for name in APPS:
        app = services[name]
        assert app["environment"]["SRNN_BACKEND"] == "redis"
        assert app["environment"]["SRNN_REDIS_URL"] == "redis://redis:6379/0"
        assert app["depends_on"]["redis"]["condition"] == "service_healthy"
        assert app["healthcheck"]["test"] == ["CMD", "python", "-m", "app.probe", "/readyz"]
    nginx = services["nginx"]
    # This machine only, until keys are set (README: Deploy): with none, every caller is an admin.
    assert nginx["ports"] == ["127.0.0.1:8080:8080"]
    assert {d: c["condition"] for d, c in nginx["depends_on"].items()} == dict.fromkeys(
        APPS, "service_healthy"
    )
    assert all("healthcheck" in s for s in services.values())
    for volume in nginx["volumes"]:  # every file nginx mounts is in the repository
        assert (ROOT / volume.split(":")[0]).is_file(), volume


def test_every_srnn_variable_is_a_setting():
    names = set(re.findall(r"\bSRNN_[A-Z_]+", DOCKERFILE))
    for service in COMPOSE["services"].values():
        names |= {n for n in service.get("environment", {}) if n.startswith("SRNN_")}
    assert names, "no SRNN_ variables found"
    fields = {"SRNN_" + f.upper() for f in Settings.model_fields}
    assert names <= fields, f"not settings: {names - fields}"


def test_nginx_logs_no_query_strings():
    # WebSocket clients may send their key as ?token=; nothing that holds the query may be logged.
    conf = (NGINX / "srnn.conf").read_text()
    (fmt,) = re.findall(r"^log_format srnn\b(.*?);", conf, re.M | re.S)
    assert "$request_method $uri" in fmt and "$status" in fmt and "$upstream_response_time" in fmt
    leaks = r"\$(request|request_uri|args|query_string|arg_\w+|http_authorization|http_referer)\b"
    assert not re.findall(leaks, fmt)
    # In the server block, so it replaces the image's default access log (format "main": $request).
    server = conf[conf.index("\nserver {") :]
    assert re.search(r"^    access_log \S+ srnn;", server, re.M)
    assert re.findall(r"access_log\s+\S+\s+(\w+)", conf) == ["srnn"]


def test_nginx_keeps_a_clients_stats_on_one_replica():
    conf = (NGINX / "srnn.conf").read_text()
    session_map = re.search(r"map \$uri \$srnn_session \{(.*?)\}", conf, re.S).group(1)
    assert re.search(r"^\s*/v1/stats\s+\$remote_addr;", session_map, re.M)
    assert re.search(r"^\s*default\s+\$request_id;", session_map, re.M)


def test_nginx_upstreams_are_the_compose_replicas_on_the_service_port():
    servers = re.findall(r"^server (\S+):(\d+)", (NGINX / "srnn-upstream.conf").read_text(), re.M)
    assert servers == [(name, str(Settings.model_fields["port"].default)) for name in APPS]


needs_nginx = pytest.mark.skipif(
    shutil.which("nginx") is None, reason="nginx is not installed (apt-get install nginx-light)"
)


@needs_nginx
def test_nginx_logs_requests_without_their_query(tmp_path):
    # Any HTTP server will do as the upstream: what is checked is nginx's own access log.
    upstream = free_port()
    backend = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(upstream), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    port = free_port()
    conf = write_nginx_conf(tmp_path, [f"127.0.0.1:{upstream}"], f"127.0.0.1:{port}")
    nginx = subprocess.Popen(
        ["nginx", "-p", str(tmp_path), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                answer = httpx.get(
                    f"http://127.0.0.1:{port}/v1/sessions/s-1/stream?token=secret-key-1", timeout=2
                )
                if (
                    answer.status_code != 502 or time.monotonic() > deadline
                ):  # 502: backend not up yet
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)
    finally:
        nginx.terminate()
        log, _ = nginx.communicate(timeout=10)
        backend.terminate()
        backend.wait(10)
    assert '"GET /v1/sessions/s-1/stream HTTP/1.1" 404' in log, log
    assert "secret-key-1" not in log and "token" not in log


@needs_nginx
def test_nginx_accepts_the_configuration(tmp_path):
    # The compose files as they are, but for hostnames that only Docker's DNS resolves.
    upstream = (NGINX / "srnn-upstream.conf").read_text()
    local = re.sub(r"^server app\d:", "server 127.0.0.1:", upstream, flags=re.M)
    listen = re.search(r"^listen (\S+);", (NGINX / "srnn-listen.conf").read_text(), re.M).group(1)
    conf = write_nginx_conf(tmp_path, [], f"127.0.0.1:{listen}")
    (tmp_path / "srnn-upstream.conf").write_text(local)
    checked = subprocess.run(
        ["nginx", "-t", "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr
