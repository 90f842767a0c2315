"""SIGTERM while chunks are in flight: the server finishes them, and no acknowledged chunk is lost;
a WebSocket stream is answered every chunk it had in flight, then closed with 1012."""

import signal
import threading
import time

import httpx
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from app.model.builtin import build_seed_model
from harness.servers import ServerProcess
from tests.support.reference import StatefulReference, state_rows

pytestmark = pytest.mark.process  # SIGTERM to server processes


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("backend", ["redis", "memory"])
def test_sigterm_under_load_loses_no_acknowledged_chunk(
    backend, workers, redis_url, redis_prefix, tmp_path
):
    args = ["--model", "seed", "--backend", backend, "--workers", str(workers)]
    args += (
        ["--redis-url", redis_url, "--redis-prefix", redis_prefix]
        if backend == "redis"
        else ["--snapshot", str(tmp_path / "s.npz")]
    )
    server = ServerProcess(*args).start().wait_ready()
    rng = np.random.default_rng(4)
    data = {i: rng.uniform(-3, 3, (400, 1)).astype(np.float32) for i in range(8)}
    ids = {i: httpx.post(f"{server.url}/v1/sessions").json()["session_id"] for i in data}
    acknowledged = dict.fromkeys(data, 0)
    started = threading.Barrier(len(data) + 1)

    def stream(i):
        started.wait()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for seq in range(1, 201):
                chunk = data[i][2 * (seq - 1) : 2 * seq]
                try:
                    answer = http.post(
                        f"/v1/sessions/{ids[i]}/chunks", json={"inputs": chunk.tolist(), "seq": seq}
                    )
                except httpx.TransportError:
                    return
                if answer.status_code != 200:
                    return
                acknowledged[i] = seq

    # Two of them over WebSocket instead: eight binary chunks in flight at a time, no seq.
    over_websocket = {i: ids[i] for i in list(data)[:2]}
    closed: dict[int, int | None] = {}

    def websocket(i):
        started.wait()
        url = f"{server.url.replace('http', 'ws')}/v1/sessions/{ids[i]}/stream"
        chunks = iter(data[i].reshape(-1, 2, 1))
        try:
            with connect(url) as ws:
                for _ in range(8):
                    ws.send(next(chunks).tobytes())
                sending = True
                while True:  # every answer, until the close that follows the last
                    ws.recv(timeout=30)
                    acknowledged[i] += 1
                    if sending and acknowledged[i] < 195:
                        try:
                            ws.send(next(chunks).tobytes())
                        except ConnectionClosed:  # closing: the answers before it still come
                            sending = False
                        time.sleep(0.005)
        except ConnectionClosed as exc:
            closed[i] = exc.rcvd.code if exc.rcvd else None

    threads = [
        threading.Thread(target=websocket if i in over_websocket else stream, args=(i,))
        for i in data
    ]
    for thread in threads:
        thread.start()
    started.wait()
    time.sleep(0.5)  # mid-load: each stream has 200 chunks, about two seconds' worth
    assert server.stop() in (0, -signal.SIGTERM)  # graceful, then exits by the signal
    for thread in threads:
        thread.join()
    assert all(0 < n < 200 for n in acknowledged.values()), acknowledged
    assert closed == dict.fromkeys(over_websocket, 1012), closed

    server = ServerProcess(*args, port=server.port).start().wait_ready()
    try:
        for i, sid in ids.items():
            state = httpx.get(f"{server.url}/v1/sessions/{sid}/state").json()
            # Everything acknowledged is there; a chunk applied as the server went down may be too
            # (over HTTP: a stream is answered each chunk it had in flight before it is closed).
            if i in over_websocket:
                assert state["seq"] == acknowledged[i], (state["seq"], acknowledged[i])
            assert state["seq"] >= acknowledged[i]
            reference = StatefulReference(build_seed_model())
            reference.feed(data[i][: 2 * state["seq"]])
            np.testing.assert_allclose(state_rows(state)[0], reference.states()[0], atol=1e-5)
    finally:
        server.stop()
