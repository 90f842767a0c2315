"""Floods are shed, not queued; logs carry no input data and no keys."""

import asyncio
import json
import re
import shutil
import statistics
import time

import httpx
import numpy as np
import pytest
import websockets

from app.model.loader import load_model
from harness.flood import create_flood_sessions, flooding, stalled
from harness.keys import auth
from harness.metrics import metric
from harness.servers import ServerProcess, serve_in_thread, serve_process, wait_for

needs_wrk = pytest.mark.skipif(
    shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk)"
)


def probe(client, sid, count):
    results = []
    for _ in range(count):
        started = time.perf_counter()
        answer = client.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [0.5] * 10})
        results.append((answer, time.perf_counter() - started))
    return results


def assert_shed_properly(answers):
    for answer in answers:
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert answer.headers["content-type"] == "application/problem+json"


@pytest.mark.process
@pytest.mark.serial
@needs_wrk
def test_a_tenants_flood_is_shed_while_other_tenants_keep_their_latency():
    # The flood is the issue's: far more connections than the flooding tenant's share, each sending
    # again the moment it is answered. The other tenant's latency is compared with its latency
    # beside the flooding tenant's admitted share (the load the server is there to carry): the
    # excess beyond the share must add nothing to it. (How the share itself slows a neighbour is
    # in the README's Security section.)
    keys = {"flood": "flood-key-0001", "other": "other-key-0001"}
    args = (
        "--model",
        "default",
        "--api-keys",
        ",".join(f"{t}:{k}" for t, k in keys.items()),
        "--max-in-flight",
        "64",
        "--max-in-flight-per-tenant",
        "16",
    )
    with (
        serve_process(*args) as url,
        httpx.Client(base_url=url, timeout=60, headers=auth(keys["other"])) as other,
        httpx.Client(base_url=url, timeout=60, headers=auth(keys["flood"])) as flooder,
    ):
        create_flood_sessions(url, 50, keys["flood"])
        mine = other.post("/v1/sessions").json()["session_id"]
        times = {16: [], 200: []}
        tries = []

        def idle():
            return metric(url, "srnn_requests_in_flight") == 0

        for connections in (16, 200, 16, 200):  # interleaved: the machine's own noise hits both
            wait_for(idle, url, 30)  # what the last flood left in progress is done first
            with flooding(
                url, sessions=50, connections=connections, seconds=5, key=keys["flood"]
            ) as wrk:
                time.sleep(1.0)
                times[connections] += probe(other, mine, 60)
                if connections == 200:
                    tries += [
                        flooder.post("/v1/sessions/flood-0/chunks", json={"inputs": [0.5] * 10})
                        for _ in range(5)
                    ]
                report = wrk.communicate(timeout=60)[0]
            assert ("Non-2xx or 3xx responses" in report) == (connections == 200), report
        wait_for(idle, url, 30)
        recovered = flooder.post("/v1/sessions/flood-0/chunks", json={"inputs": [0.5] * 10})
        metrics = httpx.get(f"{url}/metrics").text
    assert all(a.status_code == 200 for a, _ in times[16] + times[200]), "the other tenant was shed"
    beside, under = (statistics.median(t for _, t in times[c]) for c in (16, 200))
    # Measured with python -m bench.flood: 6.5 ms beside the share, 7.4 ms under the flood; with
    # --shed-delay 0 and no shares, next to none of the other tenant's requests is let in.
    assert under < 2 * beside, (beside, under)
    shed = [a for a in tries if a.status_code != 200]
    assert shed, "the flooding tenant was let in every time: the flood did not reach its share"
    assert_shed_properly(shed)
    assert "your share" in shed[0].json()["detail"]
    assert recovered.status_code == 200
    assert 'srnn_shed_total{reason="share"}' in metrics
    assert re.search(r"^srnn_requests_in_flight 0\.0$", metrics, re.M), "a slot leaked"


@pytest.mark.process
@pytest.mark.serial
@needs_wrk
def test_one_session_flooded_is_shed_while_other_sessions_keep_their_latency():
    with (
        serve_process("--model", "default", "--max-session-queue", "8") as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        client.post("/v1/sessions", json={"session_id": "flood-0"})
        mine = client.post("/v1/sessions").json()["session_id"]
        baseline = probe(client, mine, 40)
        with flooding(url, sessions=1, connections=100, seconds=5) as wrk:
            time.sleep(1.0)
            during = probe(client, mine, 40)
            report = wrk.communicate(timeout=60)[0]
        assert "Non-2xx or 3xx responses" in report, report  # the hot session's excess was shed
    # Never starved, never shed.
    assert all(a.status_code == 200 for a, _ in baseline + during), [
        a.text[:100] for a, _ in during
    ]
    # It never waits behind the hot session's backlog (bounded at --max-session-queue), and the hot
    # session's excess, answered 503 after --shed-delay, costs the event loop little: measured
    # 1.8 to 3.3 ms alone, 2.6 to 5 ms under the flood (about 130 ms before refusals were held).
    alone, flooded = (statistics.median(t for _, t in probes) for probes in (baseline, during))
    assert flooded < max(3 * alone, alone + 0.02), (alone, flooded)


@pytest.mark.serial
@needs_wrk
def test_a_flood_beyond_the_in_flight_limit_is_shed_and_the_service_recovers():
    with (
        serve_in_thread(load_model("default"), max_in_flight=8) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        create_flood_sessions(url, 50)
        mine = client.post("/v1/sessions").json()["session_id"]
        baseline = probe(client, mine, 40)
        with flooding(url, sessions=50, connections=100, seconds=4) as wrk:
            time.sleep(1.0)
            during = probe(client, mine, 40)
            health = client.get("/healthz")
            report = wrk.communicate(timeout=60)[0]
        time.sleep(1.0)  # what the flood had in progress when it stopped finishes
        after = probe(client, mine, 40)
    assert "Non-2xx or 3xx responses" in report, report
    shed = [a for a, _ in during if a.status_code != 200]
    assert shed, "the probe was never shed: the flood did not reach the limit"
    assert_shed_properly(shed)
    assert health.status_code == 200  # probes are never shed
    # The flood is over: all is served again.
    assert all(a.status_code == 200 for a, _ in after), [
        (a.status_code, a.text[:200]) for a, _ in after
    ]
    typical = statistics.median(t for _, t in baseline)
    assert statistics.median(t for _, t in after) < max(0.02, 5 * typical)


@pytest.mark.process
@pytest.mark.parametrize("level", ["info", "debug"])
def test_log_lines_carry_session_status_and_latency_but_no_inputs_and_no_keys(tmp_path, level):
    # At debug, the WebSocket library's own trace used to log every handshake header (the key in
    # "authorization: Bearer ...") and every frame's payload.
    key, secret_value = "tenant-key-do-not-log-1", 123.456789
    log_file = tmp_path / "server.log"
    with open(log_file, "wb") as sink:
        server = ServerProcess(
            "--model",
            "seed",
            "--log-format",
            "json",
            "--api-keys",
            f"t:{key}",
            log_level=level,
            output=sink,
        ).start()
        url = server.url
        try:
            server.wait_ready()
            headers = {"Authorization": f"Bearer {key}"}
            sid = httpx.post(f"{url}/v1/sessions", headers=headers).json()["session_id"]
            httpx.post(
                f"{url}/v1/sessions/{sid}/chunks", json={"inputs": [secret_value]}, headers=headers
            )
            httpx.post(
                f"{url}/v1/sessions/{sid}/chunks",
                json={"inputs": [secret_value, "x"]},
                headers=headers,
            )
            httpx.get(
                f"{url}/v1/sessions/{sid}",
                headers={"Authorization": "Bearer wrong-key-also-secret"},
            )

            async def stream():
                stream_url = url.replace("http", "ws") + f"/v1/sessions/{sid}/stream"
                async with websockets.connect(f"{stream_url}?token={key}") as ws:
                    await ws.send(np.array([secret_value], "<f4").tobytes())
                    await ws.recv()
                async with websockets.connect(stream_url, additional_headers=headers) as ws:
                    await ws.send(json.dumps({"inputs": [secret_value]}))
                    await ws.recv()

            asyncio.run(stream())
        finally:
            server.stop()
    text = log_file.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line["logger"] == "app.access"]
    chunks = [line for line in requests if line["path"].endswith("/chunks")]
    assert [c["status"] for c in chunks] == [200, 422]
    assert all(c["session_id"] == sid and c["latency_ms"] > 0 for c in chunks)
    assert all(c["tenant"] == "t" for c in chunks)  # whose requests they were
    assert any(line["path"].endswith("/stream") for line in requests)
    assert any(line["status"] == 401 for line in requests)
    frame = np.array([secret_value], "<f4").tobytes()
    for secret in (key, "wrong-key-also-secret", "123.45", frame.hex(), frame.hex(" ")):
        assert secret not in text, secret


@pytest.mark.slow
def test_a_stalled_body_is_answered_408_and_frees_its_slot():
    with serve_in_thread(load_model("seed"), max_in_flight=1) as url:
        sid = httpx.post(f"{url}/v1/sessions").json()["session_id"]
        with stalled(url, sid=sid) as sock:
            assert httpx.get(f"{url}/v1/sessions/{sid}").status_code == 503  # its slot is taken
            sock.settimeout(30)
            answer = sock.recv(4096).decode()
        assert answer.startswith("HTTP/1.1 408") and "application/problem+json" in answer
        assert httpx.get(f"{url}/v1/sessions/{sid}").status_code == 200
