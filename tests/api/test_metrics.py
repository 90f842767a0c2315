"""/metrics moves as requests are served."""

import re
import shutil
import subprocess
import time

import httpx
import numpy as np
import pytest

from app.model.loader import load_model
from harness.metrics import scrape
from harness.servers import serve_in_thread, serve_process


def test_metrics_count_what_was_served(redis_url, redis_prefix):
    options = {
        "backend": "redis",
        "redis_url": redis_url,
        "redis_prefix": redis_prefix,
        "capacity": 2,
    }
    with (
        serve_in_thread(load_model("seed"), **options) as url,
        httpx.Client(base_url=url) as client,
    ):
        before = scrape(url)
        ids = [client.post("/v1/sessions").json()["session_id"] for _ in range(3)]
        for sid in ids:  # three sessions through two slots: one eviction at least
            client.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [1.0, 2.0, 3.0], "seq": 1})
        client.post(
            f"/v1/sessions/{ids[0]}/chunks", json={"inputs": [1.0, 2.0, 3.0], "seq": 1}
        )  # replay
        client.post(f"/v1/sessions/{ids[0]}/chunks", json={"inputs": [1.0], "seq": 7})  # 409
        after = scrape(url)
        # Levels (slots in use, connections) are sampled once a second.
        deadline = time.monotonic() + 10
        while (
            after.get("srnn_hot_sessions") != 2 or after.get("srnn_connections", 0) < 1
        ) and time.monotonic() < deadline:
            time.sleep(0.1)
            after = scrape(url)

    def moved(name):
        return after.get(name, 0.0) - before.get(name, 0.0)

    route = 'route="/v1/sessions/{session_id}/chunks"'
    assert moved("srnn_chunks_total") == 3 and moved("srnn_time_steps_total") == 9
    assert moved("srnn_replays_total") == 1
    assert moved('srnn_conflicts_total{reason="seq"}') == 1
    assert moved(f'srnn_request_seconds_count{{{route},status="200",transport="http"}}') == 4
    assert moved(f'srnn_request_seconds_count{{{route},status="409",transport="http"}}') == 1
    assert moved("srnn_batch_size_count") >= 3 and moved("srnn_model_call_seconds_count") >= 3
    assert moved("srnn_evictions_total") >= 1
    assert moved("srnn_redis_round_trip_seconds_count") >= 6
    assert after["srnn_capacity"] == 2 and after["srnn_hot_sessions"] == 2
    assert any(re.match(r"srnn_queue_depth", name) for name in after)
    chunk = 'phase="{}",transport="http"'
    assert moved(f"srnn_chunk_seconds_count{{{chunk.format('total')}}}") == 3
    assert moved(f"srnn_chunk_seconds_count{{{chunk.format('queue')}}}") == 3
    assert after["srnn_connections"] >= 1


@pytest.mark.process
@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_the_exposition_is_clean_for_promtool_and_has_only_its_backends_series(
    backend, redis_url, redis_prefix
):
    from app import __version__

    args = ["--model", "seed", "--backend", backend]
    if backend == "redis":
        args += ["--redis-url", redis_url, "--redis-prefix", redis_prefix]
    with serve_process(*args) as url:
        session = httpx.post(f"{url}/v1/sessions").json()["session_id"]
        httpx.post(f"{url}/v1/sessions/{session}/chunks", json={"inputs": [1.0]})
        time.sleep(1.2)  # the sampled gauges
        text = httpx.get(f"{url}/metrics").text
        fingerprint = httpx.get(f"{url}/v1/model").json()["fingerprint"]
    names = {
        line.split("{")[0].split(" ")[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert not [name for name in names if name.endswith("_created")]
    redis_series = {"srnn_redis_round_trip_seconds_count", "srnn_evictions_total"}
    if backend == "memory":
        assert not names & redis_series and "srnn_sessions" in names
    else:
        assert redis_series <= names and "srnn_sessions" not in names
    info = (
        f'srnn_build_info{{fingerprint="{fingerprint}",model="seed",'
        f'server_version="{__version__}",version="1"}} 1.0'
    )
    assert info in text.splitlines()
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian's prometheus package) is not installed")
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_observing_a_batch_at_once_counts_as_observing_each():
    """The engine observes a batch's latencies in one call (app.metrics.observe_many, which reaches
    into prometheus-client's value objects): the exposition must be what one observe per value
    gives, bucket edges included."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from app import metrics

    bounds = (0.001, 0.01, 0.1, 1.0)
    values = np.array([0.0, 0.0005, 0.001, 0.0010001, 0.05, 0.1, 0.7, 1.0, 3.0, 3.0])
    registries = [CollectorRegistry(), CollectorRegistry()]
    each, many = (
        Histogram("latency_seconds", "test", ["phase"], buckets=bounds, registry=r).labels("x")
        for r in registries
    )
    for value in values:
        each.observe(value)
    metrics.observe_many(many, values)
    metrics.observe_many(many, np.array([]))
    assert generate_latest(registries[0]) == generate_latest(registries[1])
