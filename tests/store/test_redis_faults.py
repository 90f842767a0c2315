"""Redis going away and coming back; a session stored by another model; a small cache of slots."""

import asyncio
import time

import httpx
import numpy as np
import pytest

from app.model.builtin import build_seed_model
from app.model.loader import load_model
from app.model.step import StreamingModel
from harness.redis import own_redis
from harness.servers import ServerProcess, serve_in_thread
from tests.support.models import Architecture
from tests.support.reference import StatefulReference, state_rows


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.process
def test_redis_stopped_mid_run_gives_503_then_the_same_sessions_continue_exactly():
    data = np.random.default_rng(5).uniform(-3, 3, (24, 1)).astype(np.float32)
    chunks = np.split(data, range(3, 24, 3))
    with own_redis(appendonly=True) as redis_server:
        server = ServerProcess(
            "--model", "seed", "--backend", "redis", "--redis-url", redis_server.url
        )
        server.start().wait_ready()
        try:
            with httpx.Client(base_url=server.url, timeout=30) as http:
                sid = http.post("/v1/sessions").json()["session_id"]
                for seq, chunk in enumerate(chunks[:4], start=1):
                    assert (
                        http.post(
                            f"/v1/sessions/{sid}/chunks",
                            json={"inputs": chunk.tolist(), "seq": seq},
                        ).status_code
                        == 200
                    )
                before = http.get(f"/v1/sessions/{sid}/state").json()

                redis_server.stop()
                down = http.post(
                    f"/v1/sessions/{sid}/chunks", json={"inputs": chunks[4].tolist(), "seq": 5}
                )
                assert down.status_code == 503 and int(down.headers["retry-after"]) >= 1
                assert down.headers["content-type"] == "application/problem+json"
                for answer in (
                    http.get("/readyz"),
                    http.get(f"/v1/sessions/{sid}/state"),
                    http.post("/v1/sessions"),
                    http.post(f"/v1/sessions/{sid}/reset"),
                ):
                    assert answer.status_code == 503, answer.text
                assert http.get("/healthz").status_code == 200

                redis_server.start()  # same port, same append-only file
                wait_for(lambda: http.get("/readyz").status_code == 200)
                assert http.get(f"/v1/sessions/{sid}/state").json() == before
                for seq, chunk in enumerate(chunks[4:], start=5):
                    answer = http.post(
                        f"/v1/sessions/{sid}/chunks", json={"inputs": chunk.tolist(), "seq": seq}
                    )
                    assert answer.status_code == 200, answer.text
                reference = StatefulReference(build_seed_model())
                reference.feed(data)
                state = http.get(f"/v1/sessions/{sid}/state").json()
                assert (state["seq"], state["steps"]) == (8, 24)
                np.testing.assert_allclose(state_rows(state)[0], reference.states()[0], atol=1e-5)
        finally:
            server.stop()


def test_a_session_stored_by_another_model_is_refused(redis_url, redis_prefix):
    options = {"backend": "redis", "redis_url": redis_url, "redis_prefix": redis_prefix}
    with serve_in_thread(load_model("seed"), **options) as url:
        sid = httpx.post(f"{url}/v1/sessions").json()["session_id"]
        httpx.post(f"{url}/v1/sessions/{sid}/chunks", json={"inputs": [1.0, 2.0]})
        document = httpx.get(f"{url}/v1/sessions/{sid}/state").json()
    # Same name and shapes (GRU(5) over one feature), other weights: a different function.
    other = StreamingModel(Architecture(1, (("GRU", 5, True),), False, 0, seed=99).build(), "seed")
    with serve_in_thread(other, **options) as url:
        for answer in (
            httpx.post(f"{url}/v1/sessions/{sid}/chunks", json={"inputs": [3.0]}),
            httpx.get(f"{url}/v1/sessions/{sid}/state"),
            httpx.put(f"{url}/v1/sessions/{sid}/state", json={"layers": document["layers"]}),
        ):
            assert answer.status_code == 409, answer.text
            assert answer.json()["fingerprint"] == other.spec.fingerprint
    with serve_in_thread(load_model("seed"), **options) as url:
        assert httpx.get(f"{url}/v1/sessions/{sid}/state").json() == document


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_put_state_forks_a_session_on_both_backends(backend, redis_url, redis_prefix):
    options = {"backend": backend, "redis_url": redis_url, "redis_prefix": redis_prefix}
    with (
        serve_in_thread(load_model("default"), **options) as url,
        httpx.Client(base_url=url) as http,
    ):
        source = http.post("/v1/sessions").json()["session_id"]
        http.post(f"/v1/sessions/{source}/chunks", json={"inputs": [0.1, 0.4, 0.2, 0.9]})
        fork = http.post("/v1/sessions").json()["session_id"]
        assert (
            http.put(
                f"/v1/sessions/{fork}/state", json=http.get(f"/v1/sessions/{source}/state").json()
            ).status_code
            == 200
        )
        a = http.post(f"/v1/sessions/{source}/chunks", json={"inputs": [1.0, 1.1]})
        b = http.post(f"/v1/sessions/{fork}/chunks", json={"inputs": [1.0, 1.1]})
        assert a.json()["outputs"] == b.json()["outputs"]


@pytest.mark.slow
def test_capacity_8_serves_100_live_sessions_by_evicting_and_reloading(redis_url, redis_prefix):
    rng = np.random.default_rng(8)
    sequences = [rng.uniform(-3, 3, (12, 1)).astype(np.float32) for _ in range(100)]

    async def run(url):
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            ids = [(await http.post("/v1/sessions")).json()["session_id"] for _ in sequences]
            outputs = [[] for _ in sequences]
            for part in range(4):  # every session, four times round: each pass evicts the rest

                async def push(i, part=part):
                    chunk = sequences[i][part * 3 : part * 3 + 3]
                    answer = await http.post(
                        f"/v1/sessions/{ids[i]}/chunks",
                        json={"inputs": chunk.tolist(), "seq": part + 1},
                    )
                    assert answer.status_code == 200, answer.text
                    outputs[i].append(answer.json()["outputs"])

                await asyncio.gather(*(push(i) for i in range(len(ids))))
            states = [(await http.get(f"/v1/sessions/{sid}/state")).json() for sid in ids]
            return outputs, states

    options = {
        "backend": "redis",
        "redis_url": redis_url,
        "redis_prefix": redis_prefix,
        "capacity": 8,
    }
    with serve_in_thread(load_model("seed"), **options) as url:
        outputs, states = asyncio.run(run(url))
    for sequence, got, state in zip(sequences, outputs, states):
        reference = StatefulReference(build_seed_model())
        for part, answer in enumerate(got):
            np.testing.assert_allclose(
                answer, reference.feed(sequence[part * 3 : part * 3 + 3]), atol=1e-5
            )
        np.testing.assert_allclose(state_rows(state)[0], reference.states()[0], atol=1e-5)
