"""app.probe, the container healthcheck: it asks the port of SRNN_PORT, and fails on no answer or
an error status."""

import os
import subprocess
import sys
from urllib.parse import urlsplit

import pytest

from app.model.loader import load_model
from harness.servers import ROOT, free_port, serve_in_thread

pytestmark = pytest.mark.deploy  # nginx, Redis Cluster, replicas or the deploy files


def probe(path: str, port: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app.probe", path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "SRNN_PORT": str(port)},
        timeout=30,
    )


def test_the_probe_follows_srnn_port_and_the_answers_status():
    with serve_in_thread(load_model("seed")) as url:
        port = urlsplit(url).port
        assert probe("/healthz", port).returncode == 0
        assert probe("/readyz", port).returncode == 0
        missing = probe("/no-such-path", port)
        assert missing.returncode == 1 and "404" in missing.stderr
    closed = probe("/healthz", free_port())
    assert closed.returncode == 1 and "refused" in closed.stderr.lower()
