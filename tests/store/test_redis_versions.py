"""Model versions across replicas on Redis: a replica that has not loaded a session's version loads
it and answers 503 with Retry-After meanwhile, never 409; a replica that never sees a version it
is asked for says so plainly."""

from __future__ import annotations

import time

import httpx
import numpy as np

from harness.servers import serve_in_thread
from tests.support.reference import StatefulReference
from tests.support.repository import save_version


def test_a_replica_loads_a_version_it_lacks_and_answers_503_meanwhile_never_409(
    tmp_path, redis_url, redis_prefix
):
    repo = tmp_path / "models"
    save_version(repo, "speech", 1, seed=81)
    shared = {
        "backend": "redis",
        "redis_url": redis_url,
        "redis_prefix": redis_prefix,
        "model_repository": str(repo),
        "xla": False,
    }
    # B never reads the repository by itself: it learns of version 2 from a session that runs it.
    with (
        serve_in_thread(None, repository_poll_s=0.2, **shared) as a,
        serve_in_thread(None, repository_poll_s=0, **shared) as b,
        httpx.Client(timeout=30) as http,
    ):
        v2 = save_version(repo, "speech", 2, seed=82)
        deadline = time.monotonic() + 60
        while http.post(f"{a}/v1/models/speech/load").json()["default_version"] != 2:
            assert time.monotonic() < deadline
        sid = http.post(f"{a}/v1/sessions", json={}).json()["session_id"]
        reference = StatefulReference(v2)
        rng = np.random.default_rng(8)
        waits = 0
        for seq in range(1, 6):
            inputs = rng.uniform(-2, 2, (2, 2)).astype(np.float32)
            while True:
                answer = http.post(
                    f"{b}/v1/sessions/{sid}/chunks", json={"inputs": inputs.tolist(), "seq": seq}
                )
                if answer.status_code == 200:
                    break
                assert answer.status_code == 503 and answer.headers["Retry-After"] == "2", (
                    answer.text
                )
                assert "is loading on this replica" in answer.json()["detail"]
                waits += 1
                time.sleep(0.2)
            np.testing.assert_allclose(answer.json()["outputs"], reference.feed(inputs), atol=1e-5)
        assert waits >= 1  # it did have to load it
        versions = {v["version"]: v for v in http.get(f"{b}/v1/models/speech").json()["versions"]}
        assert versions[2]["state"] == "ready" and versions[2]["live_sessions"] == 1
        state = http.get(f"{b}/v1/sessions/{sid}/state").json()
        assert state["model"]["version"] == 2 and state["seq"] == 5


def test_a_session_of_a_version_the_repository_lost_is_409_and_left_alone(
    tmp_path, redis_url, redis_prefix
):
    first, second = tmp_path / "first", tmp_path / "second"
    save_version(first, "speech", 1, seed=91)
    save_version(first, "speech", 2, seed=92)
    save_version(second, "speech", 1, seed=91)
    shared = {
        "backend": "redis",
        "redis_url": redis_url,
        "redis_prefix": redis_prefix,
        "xla": False,
    }
    with (
        serve_in_thread(None, model_repository=str(first), **shared) as a,
        serve_in_thread(None, model_repository=str(second), **shared) as b,
        httpx.Client(timeout=30) as http,
    ):
        sid = http.post(f"{a}/v1/sessions", json={}).json()["session_id"]
        http.post(f"{a}/v1/sessions/{sid}/chunks", json={"inputs": [[0.5, 0.5]]})
        before = http.get(f"{a}/v1/sessions/{sid}/state").json()
        for answer in (
            http.post(f"{b}/v1/sessions/{sid}/chunks", json={"inputs": [[1.0, 1.0]]}),
            http.get(f"{b}/v1/sessions/{sid}/state"),
            http.post(f"{b}/v1/sessions/{sid}/reset"),
        ):
            assert answer.status_code == 409, answer.text
            assert "does not have" in answer.json()["detail"]
        assert http.get(f"{a}/v1/sessions/{sid}/state").json() == before
