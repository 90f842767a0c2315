"""The deployment files say what they should: the Dockerfile, docker-compose.yml, and an nginx
configuration that nginx itself accepts."""

import json
import re
import shutil
import subprocess

import pytest
import yaml

from app.config import Settings
from deploy.topology import write_nginx_conf
from tests.support.servers import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
NGINX = ROOT / "deploy" / "nginx"
APPS = ("app1", "app2", "app3")


def instructions(name: str) -> list[str]:
    """The Dockerfile's instructions called ``name``, continuation lines joined."""
    text = DOCKERFILE.replace("\\\n", " ")
    return [line[len(name):].strip() for line in text.splitlines() if line.startswith(name + " ")]


def test_dockerfile_is_multi_stage_slim_non_root_with_exec_form_entrypoint():
    stages = instructions("FROM")
    assert len(stages) == 2 and all(s.startswith("python:3.11-slim") for s in stages)
    assert any("--from=build /opt/venv /opt/venv" in c for c in instructions("COPY"))
    assert "[test]" not in DOCKERFILE and "pip install ." in DOCKERFILE  # runtime dependencies only
    (user,) = instructions("USER")
    assert user not in ("root", "0")
    (healthcheck,) = instructions("HEALTHCHECK")
    assert "/healthz" in healthcheck and "urllib" in healthcheck and "curl" not in healthcheck
    # Exec form (JSON arrays): the server is PID 1 and gets SIGTERM itself.
    assert json.loads(instructions("ENTRYPOINT")[0]) == ["stateful-rnn", "serve"]
    assert json.loads(instructions("CMD")[0]) == ["--host", "0.0.0.0"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "tests"} <= set(ignored)


def test_compose_has_redis_three_replicas_and_nginx_with_healthchecks():
    services = COMPOSE["services"]
    assert set(services) == {"redis", "nginx", *APPS}
    redis = services["redis"]
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    assert redis["volumes"][0].split(":")[0] in COMPOSE["volumes"]
    for name in APPS:
        app = services[name]
        assert app["environment"]["SRNN_BACKEND"] == "redis"
        assert app["environment"]["SRNN_REDIS_URL"] == "redis://redis:6379/0"
        assert app["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "/readyz" in " ".join(app["healthcheck"]["test"])
    nginx = services["nginx"]
    assert nginx["ports"] == ["8080:8080"]
    assert {d: c["condition"] for d, c in nginx["depends_on"].items()} == dict.fromkeys(APPS, "service_healthy")
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


def test_nginx_upstreams_are_the_compose_replicas_on_the_service_port():
    servers = re.findall(r"^server (\S+):(\d+)", (NGINX / "srnn-upstream.conf").read_text(), re.M)
    assert servers == [(name, str(Settings.model_fields["port"].default)) for name in APPS]


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (apt-get install nginx-light)")
def test_nginx_accepts_the_configuration(tmp_path):
    # The compose files as they are, but for hostnames that only Docker's DNS resolves.
    upstream = (NGINX / "srnn-upstream.conf").read_text()
    local = re.sub(r"^server app\d:", "server 127.0.0.1:", upstream, flags=re.M)
    listen = re.search(r"^listen (\S+);", (NGINX / "srnn-listen.conf").read_text(), re.M).group(1)
    conf = write_nginx_conf(tmp_path, [], f"127.0.0.1:{listen}")
    (tmp_path / "srnn-upstream.conf").write_text(local)
    checked = subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr
