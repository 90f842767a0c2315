"""Chaos: three replicas on one Redis, clients numbering their chunks and retrying across replicas,
while replicas are SIGKILLed and restarted and Redis is paused, restarted and killed. Every
acknowledged chunk's outputs and every session's final state must equal Keras ``stateful=True``
fed the same chunks: nothing lost, nothing doubled."""

import asyncio
import os
import shutil
import signal
import threading
import time

import httpx
import numpy as np
import pytest

from app.model.builtin import build_seed_model
from harness.redis import RedisServer
from harness.servers import ServerProcess
from tests.support.reference import outputs_at_every_step, state_rows, states_after

pytestmark = [
    pytest.mark.deploy,  # nginx, Redis Cluster, replicas or the deploy files
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]

SESSIONS, STEPS = 40, 240
RETRY = (502, 503, 504)


class Chaos:
    """The faults, on a schedule (seconds after the traffic starts), each logged with its time."""

    def __init__(self, redis: RedisServer, replicas: list[ServerProcess]):
        self.redis, self.replicas = redis, replicas
        self.done = threading.Event()
        self.events: list[str] = []
        self.counts = {"replica kills": 0, "Redis pauses": 0, "Redis restarts": 0, "Redis kills": 0}
        self.restarts: list[threading.Thread] = []

    def run(self) -> None:
        schedule = [
            (2, self.kill_replica, 0),
            (5, self.pause_redis, 2.0),
            (9, self.kill_replica, 1),
            (12, self.restart_redis, False),
            (17, self.kill_replica, 2),
            (20, self.pause_redis, 1.5),
            (24, self.restart_redis, True),
            (28, self.kill_replica, 0),
        ]
        started = time.monotonic()
        try:
            for at, fault, argument in schedule:
                time.sleep(max(0.0, at - (time.monotonic() - started)))
                fault(argument)
                self.events.append(
                    f"{time.monotonic() - started:5.1f} s {fault.__name__}({argument})"
                )
            time.sleep(3)
        finally:
            self.done.set()

    def kill_replica(self, index: int) -> None:
        replica = self.replicas[index]
        replica.kill()  # SIGKILL: whatever it had in flight is lost with it
        self.counts["replica kills"] += 1
        thread = threading.Thread(target=replica.start)  # back on its port once it has warmed up
        thread.start()
        self.restarts.append(thread)

    def pause_redis(self, seconds: float) -> None:
        os.kill(self.redis.process.pid, signal.SIGSTOP)  # replies stop; replicas time out (2 s)
        time.sleep(seconds)
        os.kill(self.redis.process.pid, signal.SIGCONT)
        self.counts["Redis pauses"] += 1

    def restart_redis(self, kill: bool) -> None:
        # appendfsync always: an acknowledged write is on disk before its reply, so even a killed
        # Redis keeps every acknowledged chunk. It comes back without the scripts loaded.
        self.redis.kill() if kill else self.redis.stop()
        self.counts["Redis kills" if kill else "Redis restarts"] += 1
        self.redis.start()


async def push_until_done(
    http: httpx.AsyncClient,
    replicas: list[ServerProcess],
    index: int,
    sequence: np.ndarray,
    cuts: np.ndarray,
    chaos: Chaos,
    tally: dict,
) -> list:
    """Send the session's chunks in order, each with its seq, to one replica, moving to the next
    on a failure and sending the same chunk again; stop when the chaos is over."""
    sid, answers, at = f"chaos-{index}", [], index
    for seq, chunk in enumerate(np.split(sequence, cuts), start=1):
        if chaos.done.is_set() and seq > 3:
            break
        for attempt in range(400):
            url = replicas[at % len(replicas)].url
            try:
                answer = await http.post(
                    f"{url}/v1/sessions/{sid}/chunks", json={"inputs": chunk.tolist(), "seq": seq}
                )
            except httpx.TransportError:
                answer = None
            if answer is not None and answer.status_code == 200:
                tally["replayed"] += answer.headers.get("x-replayed") == "true"
                break
            assert answer is None or answer.status_code in RETRY, answer.text  # never 404 or 409
            tally["retries"] += 1
            at += 1
            await asyncio.sleep(min(0.02 * (attempt + 1), 0.3))
        else:
            raise AssertionError(f"chunk {seq} of {sid} was never acknowledged")
        tally["acknowledged"] += 1
        answers.append((chunk, np.array(answer.json()["outputs"], np.float32)))
    return answers


def read_state(replica: ServerProcess, sid: str) -> dict:
    for _ in range(50):
        answer = httpx.get(f"{replica.url}/v1/sessions/{sid}/state")
        if answer.status_code not in RETRY:
            break
        time.sleep(0.1)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_replica_kills_and_redis_pauses_restarts_and_kills_lose_and_double_nothing():
    rng = np.random.default_rng(13)
    sequences = rng.uniform(-3, 3, (SESSIONS, STEPS, 1)).astype(np.float32)
    cuts = [np.cumsum(rng.integers(1, 5, STEPS))[:-1] for _ in range(SESSIONS)]
    cuts = [c[c < STEPS] for c in cuts]
    redis = RedisServer(appendonly=True)
    redis.start()
    replicas = [
        ServerProcess(
            "--model", "seed", "--backend", "redis", "--redis-url", redis.url, "--capacity", "16"
        )
        for _ in range(3)
    ]  # a small cache: rows are evicted and read back
    chaos = Chaos(redis, replicas)
    tally = {"acknowledged": 0, "retries": 0, "replayed": 0}
    try:
        for replica in replicas:
            replica.start()
        for replica in replicas:
            replica.wait_ready()
        for i in range(SESSIONS):
            assert (
                httpx.post(
                    f"{replicas[i % 3].url}/v1/sessions", json={"session_id": f"chaos-{i}"}
                ).status_code
                == 201
            )

        async def traffic():
            async with httpx.AsyncClient(
                timeout=10, limits=httpx.Limits(max_connections=SESSIONS)
            ) as http:
                return await asyncio.gather(
                    *(
                        push_until_done(http, replicas, i, sequences[i], cuts[i], chaos, tally)
                        for i in range(SESSIONS)
                    )
                )

        faults = threading.Thread(target=chaos.run)
        started = time.monotonic()
        faults.start()
        sent = asyncio.run(traffic())
        faults.join()
        elapsed = time.monotonic() - started
        for thread in chaos.restarts:
            thread.join()
        for replica in replicas:
            replica.wait_ready()
        states = [read_state(replicas[i % 3], f"chaos-{i}") for i in range(SESSIONS)]
    finally:
        for replica in replicas:
            replica.stop()
        redis.close()

    lost = doubled = 0
    model = build_seed_model()
    fed = [sum(len(chunk) for chunk, _ in answers) for answers in sent]
    every_step = outputs_at_every_step(model, sequences)
    final = states_after(model, sequences, fed)  # Keras stateful=True, fed what was acknowledged
    for answers, state, steps, want, length in zip(sent, states, every_step, final, fed):
        lost += max(0, length - state["steps"])
        doubled += max(0, state["steps"] - length)
        ends = np.cumsum([len(chunk) for chunk, _ in answers]) - 1
        np.testing.assert_allclose([outputs for _, outputs in answers], steps[ends], atol=1e-5)
        assert state["seq"] == len(answers)
        np.testing.assert_allclose(state_rows(state)[0], want[0], atol=1e-5)
    print(
        f"\nchaos over {elapsed:.0f} s: {tally}, {chaos.counts}, lost {lost}, doubled {doubled}\n"
        + "\n".join(chaos.events)
    )
    assert (lost, doubled) == (0, 0)
    assert chaos.counts == {
        "replica kills": 4,
        "Redis pauses": 2,
        "Redis restarts": 1,
        "Redis kills": 1,
    }
    assert tally["retries"] > 0, "no fault reached a client: the test saw no chaos"
    # Traffic flowed through the chaos (a floor, not a throughput claim): each of the four replica
    # restarts imports TensorFlow on the same two cores as the load, and since the server requires
    # the full `tensorflow` build (issue 17: one TensorFlow) an import costs about 1.3 s more CPU;
    # runs here acknowledged 644 to over 800 chunks, against over 800 with tensorflow-cpu.
    assert tally["acknowledged"] >= SESSIONS * 10
