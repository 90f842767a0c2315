"""Replicas sharing one Redis, as real processes: any replica serves any session, a killed replica
loses nothing, racing replicas neither lose nor double an update."""

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from app.model.builtin import build_seed_model
from harness.redis import delete_prefix, new_prefix
from harness.servers import serve_processes
from tests.support.reference import StatefulReference, state_rows

pytestmark = pytest.mark.process  # replica processes, one killed


def redis_args(url: str, prefix: str, *extra: str) -> tuple[str, ...]:
    return (
        "--model",
        "seed",
        "--backend",
        "redis",
        "--redis-url",
        url,
        "--redis-prefix",
        prefix,
        *extra,
    )


@pytest.fixture(scope="module")
def replicas(redis_url):
    prefix = new_prefix()
    with serve_processes(3, *redis_args(redis_url, prefix)) as servers:
        yield [s.url for s in servers]
    delete_prefix(redis_url, prefix)


def sequence(seed: int, length: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-3, 3, (length, 1)).astype(np.float32)


def test_round_robin_over_three_replicas_equals_one_process(replicas):
    data = sequence(1, 30)
    reference = StatefulReference(build_seed_model())
    sid = httpx.post(f"{replicas[0]}/v1/sessions").json()["session_id"]
    for i, chunk in enumerate(np.split(data, [4, 5, 11, 12, 20, 27])):
        url = replicas[i % 3]
        answer = httpx.post(
            f"{url}/v1/sessions/{sid}/chunks", json={"inputs": chunk.tolist(), "seq": i + 1}
        )
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(answer.json()["outputs"], reference.feed(chunk), atol=1e-5)
    for url in replicas:  # every replica sees the same state
        state = httpx.get(f"{url}/v1/sessions/{sid}/state").json()
        assert (state["seq"], state["steps"]) == (7, 30)
        np.testing.assert_allclose(state_rows(state)[0], reference.states()[0], atol=1e-5)


def test_many_clients_hammering_one_session_through_replicas_lose_and_double_nothing(replicas):
    sid = httpx.post(f"{replicas[1]}/v1/sessions").json()["session_id"]
    applied: dict[int, float] = {}
    lock = threading.Lock()

    def client(index: int) -> None:
        rng = np.random.default_rng(100 + index)
        with httpx.Client(base_url=replicas[index % 3], timeout=60) as http:
            for _ in range(12):
                value = float(np.float32(rng.uniform(-2, 2)))
                answer = http.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [value]})
                assert answer.status_code == 200, answer.text
                with lock:
                    assert answer.json()["seq"] not in applied, "a seq was handed out twice"
                    applied[answer.json()["seq"]] = value

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(client, range(6)))
    state = httpx.get(f"{replicas[2]}/v1/sessions/{sid}/state").json()
    assert state["steps"] == len(applied) == 72 and state["seq"] == 72
    assert sorted(applied) == list(range(1, 73))
    reference = StatefulReference(build_seed_model())
    reference.feed(np.array([applied[s] for s in sorted(applied)], np.float32)[:, None])
    np.testing.assert_allclose(state_rows(state)[0], reference.states()[0], atol=1e-5)


def test_exactly_once_across_replicas(replicas):
    sid = httpx.post(f"{replicas[0]}/v1/sessions").json()["session_id"]
    first = httpx.post(
        f"{replicas[0]}/v1/sessions/{sid}/chunks", json={"inputs": [1.0, 2.0], "seq": 1}
    )
    before = httpx.get(f"{replicas[0]}/v1/sessions/{sid}/state").json()
    again = httpx.post(
        f"{replicas[1]}/v1/sessions/{sid}/chunks", json={"inputs": [1.0, 2.0], "seq": 1}
    )
    assert again.headers["x-replayed"] == "true" and again.content == first.content
    for seq, url in ((0, replicas[2]), (3, replicas[1])):
        conflict = httpx.post(f"{url}/v1/sessions/{sid}/chunks", json={"inputs": [9.0], "seq": seq})
        assert conflict.status_code == 409 and conflict.json()["expected_seq"] == 2
    assert httpx.get(f"{replicas[2]}/v1/sessions/{sid}/state").json() == before


def test_kill_9_of_a_replica_mid_stream_loses_and_doubles_nothing(redis_url, redis_prefix):
    streams = {i: sequence(10 + i, 40) for i in range(6)}
    chunks = {i: np.split(s, range(2, 40, 2)) for i, s in streams.items()}
    with serve_processes(2, *redis_args(redis_url, redis_prefix)) as (doomed, survivor):
        ids = {i: httpx.post(f"{survivor.url}/v1/sessions").json()["session_id"] for i in streams}
        killed = threading.Event()

        def stream(i: int) -> int:
            retried = 0
            for seq, chunk in enumerate(chunks[i], start=1):
                body = {"inputs": chunk.tolist(), "seq": seq}
                url = survivor.url if killed.is_set() else doomed.url
                try:
                    answer = httpx.post(f"{url}/v1/sessions/{ids[i]}/chunks", json=body, timeout=30)
                except httpx.TransportError:
                    # The replica died with the chunk in flight: the same seq, elsewhere.
                    retried += 1
                    answer = httpx.post(
                        f"{survivor.url}/v1/sessions/{ids[i]}/chunks", json=body, timeout=30
                    )
                assert answer.status_code == 200, answer.text
                if seq == 8 and i == 0:
                    doomed.kill()
                    killed.set()
            return retried

        with ThreadPoolExecutor(len(streams)) as pool:
            retried = sum(pool.map(stream, streams))
        assert killed.is_set()
        for i, data in streams.items():
            reference = StatefulReference(build_seed_model())
            reference.feed(data)
            state = httpx.get(f"{survivor.url}/v1/sessions/{ids[i]}/state").json()
            assert (state["seq"], state["steps"]) == (20, 40)
            np.testing.assert_allclose(state_rows(state)[0], reference.states()[0], atol=1e-5)
    assert retried >= 1, "the kill hit no request in flight"
