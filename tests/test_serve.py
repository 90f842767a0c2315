"""An engine process with API workers (--workers N): sessions spread over the workers stay exact and
in order, metrics and stats add up over the processes, a worker that dies comes back, and the
workers never load TensorFlow. (tests/api runs its seed-model tests on one process and on two
workers; tests/store/test_graceful_shutdown.py stops both kinds under load.)"""

import asyncio
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import websockets

from app.model.builtin import build_seed_model
from harness.metrics import metric
from harness.servers import ServerProcess, running, wait_for
from tests.support.reference import StatefulReference, state_rows

pytestmark = pytest.mark.process  # --workers: the engine process and its API workers

CUTS = [2, 5, 6, 9]


def workers_of(server: ServerProcess) -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process(server.process.pid).children()
        if "app.worker" in " ".join(p.cmdline())
    ]


@pytest.fixture(scope="module", params=["memory", "redis"])
def server(request, redis_url):
    args = ["--model", "seed", "--workers", "2"]
    if request.param == "redis":
        args += [
            "--backend",
            "redis",
            "--redis-url",
            redis_url,
            "--redis-prefix",
            f"test-serve-{os.getpid()}",
        ]
    with running([ServerProcess(*args)]) as (server,):
        yield server


def test_sessions_over_both_workers_and_both_transports_equal_keras_stateful(server):
    data = np.random.default_rng(11).uniform(-3, 3, (40, 12, 1)).astype(np.float32)

    async def one(i, sequence):
        chunks = np.split(sequence, CUTS)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:  # a connection each
            sid = (await http.post("/v1/sessions")).json()["session_id"]
            outputs = []
            if i % 2:
                for seq, chunk in enumerate(chunks, start=1):
                    answer = await http.post(
                        f"/v1/sessions/{sid}/chunks", json={"inputs": chunk.tolist(), "seq": seq}
                    )
                    assert answer.status_code == 200, answer.text
                    outputs.append(np.array(answer.json()["outputs"], np.float32))
            else:
                async with websockets.connect(
                    f"{server.url.replace('http', 'ws')}/v1/sessions/{sid}/stream"
                ) as ws:
                    for chunk in chunks:  # all sent before any reply is read: order must hold
                        await ws.send(chunk.astype("<f4").tobytes())
                    outputs = [np.frombuffer(await ws.recv(), "<f4") for _ in chunks]
            state = (await http.get(f"/v1/sessions/{sid}/state")).json()
            await http.delete(f"/v1/sessions/{sid}")
            return outputs, state

    async def run():
        return await asyncio.gather(*(one(i, s) for i, s in enumerate(data)))

    before = metric(server.url, "srnn_chunks_total")
    results = asyncio.run(run())
    reference = StatefulReference(build_seed_model())
    for sequence, (outputs, state) in zip(data, results):
        reference.reset()
        for got, chunk in zip(outputs, np.split(sequence, CUTS), strict=True):
            np.testing.assert_allclose(got, reference.feed(chunk), atol=1e-5)
        assert (state["seq"], state["steps"]) == (len(CUTS) + 1, 12)
        np.testing.assert_allclose(state_rows(state)[0], reference.states()[0], atol=1e-5)
    # Counted once each, whichever worker took them: /metrics sums the processes.
    assert metric(server.url, "srnn_chunks_total") - before == 40 * (len(CUTS) + 1)


def test_stats_and_metrics_come_from_every_process(server):
    stats = httpx.get(f"{server.url}/v1/stats").json()
    assert stats["backend"] in ("memory", "redis") and stats["sessions"]["capacity"] == 1024
    assert len(workers_of(server)) == 2
    text = httpx.get(f"{server.url}/metrics").text
    for name in ("srnn_request_seconds_count", "srnn_chunk_seconds_bucket", "srnn_capacity 1024.0"):
        assert name in text, name
    (info,) = [line for line in text.splitlines() if line.startswith("srnn_build_info{")]
    assert 'model="seed"' in info and 'version="1"' in info and info.endswith(" 1.0")


def test_the_workers_never_load_tensorflow(server):
    for worker in workers_of(server):
        maps = Path(f"/proc/{worker.pid}/maps")
        if maps.exists():
            assert "tensorflow" not in maps.read_text()
        assert worker.memory_info().rss < 250 * 2**20


def test_a_worker_that_dies_is_started_again_and_nothing_is_lost(server):
    sid = httpx.post(f"{server.url}/v1/sessions").json()["session_id"]
    victim = workers_of(server)[0]
    victim.send_signal(signal.SIGKILL)
    for seq in range(
        1, 21
    ):  # the other worker serves meanwhile; a retry may meet the dead one's socket
        for _ in range(50):
            try:
                answer = httpx.post(
                    f"{server.url}/v1/sessions/{sid}/chunks", json={"inputs": [0.5], "seq": seq}
                )
                if answer.status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        assert answer.status_code == 200
    wait_for(
        lambda: (
            len(workers_of(server)) == 2 and victim.pid not in {p.pid for p in workers_of(server)}
        ),
        "a new worker",
        30,
        errors=(psutil.Error,),
    )
    state = httpx.get(f"{server.url}/v1/sessions/{sid}/state").json()
    assert (state["seq"], state["steps"]) == (20, 20)


def test_a_stream_keeps_its_order_through_a_worker():
    with running([ServerProcess("--model", "seed", "--workers", "1")]) as (server,):
        sid = httpx.post(f"{server.url}/v1/sessions").json()["session_id"]
        frame = np.array([0.5, -0.5], "<f4").tobytes()
        script = [frame, json.dumps({"op": "reset"}), frame, frame, json.dumps({"op": "state"})]

        async def run():
            async with websockets.connect(
                f"{server.url.replace('http', 'ws')}/v1/sessions/{sid}/stream"
            ) as ws:
                for message in script * 10:
                    await ws.send(message)
                return [await ws.recv() for _ in range(len(script) * 10)]

        replies = asyncio.run(run())
        states = [
            json.loads(r) for r in replies if isinstance(r, str) and "layers" in json.loads(r)
        ]
        assert [s["steps"] for s in states] == [4] * 10


def test_a_dead_engine_process_answers_503_at_once_and_takes_the_server_down():
    """Its own server: the test kills the engine process (SIGKILL, as the out-of-memory killer
    would). Requests in flight then are answered 503 within a moment, not after a timeout, and the
    workers stop listening and exit, removing the engine's private folder, so that a supervisor
    can restart the server whole."""
    server = ServerProcess("--model", "seed", "--workers", "2").start()
    try:
        server.wait_ready()
        engine = psutil.Process(server.process.pid)
        workers = workers_of(server)
        command = workers[0].cmdline()
        folder = Path(command[command.index("--engine") + 1].removeprefix("ipc://")).parent
        assert folder.name.startswith("srnn-engine-") and folder.exists()
        sid = httpx.post(f"{server.url}/v1/sessions").json()["session_id"]
        engine.suspend()  # requests now wait in the workers for an answer that cannot come

        def push():
            return httpx.post(
                f"{server.url}/v1/sessions/{sid}/chunks", json={"inputs": [0.5]}, timeout=30
            )

        with ThreadPoolExecutor(4) as pool:
            pending = [pool.submit(push) for _ in range(4)]
            time.sleep(1.0)
            assert not any(future.done() for future in pending)
            killed = time.monotonic()
            engine.kill()
            answers = [future.result() for future in pending]
        assert [a.status_code for a in answers] == [503] * 4, [a.text for a in answers]
        assert time.monotonic() - killed < 3
        assert "engine process has stopped" in answers[0].json()["detail"]
        try:  # readiness fails (or nobody listens any more); it never hangs
            assert httpx.get(f"{server.url}/readyz", timeout=3).status_code == 503
        except httpx.TransportError:
            pass
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/healthz", timeout=3)
        assert not folder.exists()
    finally:
        server.kill()


class _Forged:
    """What a forged message would make an unpickler call: a file written, if it ran."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (self.path, "ran"))


def test_a_message_on_the_engine_socket_that_is_no_call_is_dropped_and_runs_nothing(
    server, tmp_path
):
    # The attack (same OS user): one malformed message on the engine's IPC socket hung every
    # engine-backed call while /healthz said 200, and the IPC unpickled whatever it received.
    import pickle

    import zmq

    command = workers_of(server)[0].cmdline()
    address = command[command.index("--engine") + 1]
    marker = tmp_path / "ran"
    forged = [
        b"not a pickle",
        pickle.dumps([(1, "count", ())])[:-3],  # cut short
        pickle.dumps([(1, "count", (_Forged(marker),))]),
        pickle.dumps("no list of calls"),
    ]
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        socket.connect(address)
        for message in forged:
            socket.send(message)
        time.sleep(0.5)
    finally:
        socket.close()
    assert not marker.exists()
    sid = httpx.post(f"{server.url}/v1/sessions").json()["session_id"]
    answer = httpx.post(f"{server.url}/v1/sessions/{sid}/chunks", json={"inputs": [0.5]}, timeout=5)
    assert answer.status_code == 200, answer.text
