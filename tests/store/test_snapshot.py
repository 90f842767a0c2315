"""The embedded server's sessions survive a restart: SIGTERM writes a snapshot, the next start loads it."""

import signal

import httpx
import numpy as np
import pytest

from app.model.builtin import build_seed_model
from harness.servers import ServerProcess
from tests.support.reference import StatefulReference, state_rows

pytestmark = pytest.mark.process  # a server process stopped and started again


def test_sigterm_then_restart_with_the_same_snapshot_continues_every_session_exactly(tmp_path):
    path = tmp_path / "sessions.npz"
    args = ("--model", "seed", "--snapshot", str(path), "--snapshot-interval", "3600")
    rng = np.random.default_rng(3)
    data = {i: rng.uniform(-3, 3, (10, 1)).astype(np.float32) for i in range(5)}

    server = ServerProcess(*args).start().wait_ready()
    try:
        ids = {
            i: httpx.post(f"{server.url}/v1/sessions", json={"ttl_s": 0}).json()["session_id"]
            for i in data
        }
        last = {}
        for i, sequence in data.items():
            for seq, chunk in enumerate(np.split(sequence[:6], 2), start=1):
                last[i] = httpx.post(
                    f"{server.url}/v1/sessions/{ids[i]}/chunks",
                    json={"inputs": chunk.tolist(), "seq": seq},
                )
        before = {
            i: httpx.get(f"{server.url}/v1/sessions/{sid}/state").json() for i, sid in ids.items()
        }
    finally:
        # SIGTERM; uvicorn shuts down gracefully, then exits by the signal it caught.
        assert server.stop() in (0, -signal.SIGTERM)
    assert path.exists()

    server = ServerProcess(*args, port=server.port).start().wait_ready()
    try:
        for i, sid in ids.items():
            assert httpx.get(f"{server.url}/v1/sessions/{sid}/state").json() == before[i]
            replay = httpx.post(
                f"{server.url}/v1/sessions/{sid}/chunks",
                json={"inputs": data[i][3:6].tolist(), "seq": 2},
            )
            assert replay.headers.get("x-replayed") == "true" and replay.content == last[i].content
            answer = httpx.post(
                f"{server.url}/v1/sessions/{sid}/chunks",
                json={"inputs": data[i][6:].tolist(), "seq": 3},
            )
            reference = StatefulReference(build_seed_model())
            reference.feed(data[i][:6])
            np.testing.assert_allclose(
                answer.json()["outputs"], reference.feed(data[i][6:]), atol=1e-5
            )
            state = httpx.get(f"{server.url}/v1/sessions/{sid}/state").json()
            np.testing.assert_allclose(state_rows(state)[0], reference.states()[0], atol=1e-5)
    finally:
        server.stop()


def test_a_snapshot_of_another_model_is_refused_at_start(tmp_path):
    path = tmp_path / "seed.npz"
    server = ServerProcess("--model", "seed", "--snapshot", str(path)).start().wait_ready()
    httpx.post(f"{server.url}/v1/sessions")
    server.stop()
    other = ServerProcess("--model", "default", "--snapshot", str(path)).start()
    assert other.process.wait(120) == 2
