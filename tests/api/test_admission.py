"""Who is let in when the server is busy: tenants' shares, the admins' reserve, held refusals.

A request whose body never finishes arriving holds its slot until the body times out, which makes a
full server, or a tenant at its share, without any race.
"""

import asyncio
import threading
import time
from contextlib import ExitStack

import httpx
import pytest

from app.api.auth import KeyRing
from app.api.middleware import Admission
from app.api.shares import Shares
from app.model.loader import load_model
from harness.flood import stalled
from harness.keys import auth
from harness.metrics import metric
from harness.servers import serve_in_thread
from harness.waiting import wait_for

KEYS = {"a": "key-a-0001", "b": "key-b-0001", "c": "key-c-0001", "d": "key-d-0001"}
ADMIN = "admin-key-0001"
CHUNK = {"inputs": [0.5]}


def until(condition, url: str) -> None:
    wait_for(condition, url, 20, errors=(), every_s=0.02)


def timed(method: str, url: str, key: str | None, **kwargs) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    answer = httpx.request(method, url, headers=auth(key), timeout=30, **kwargs)
    return answer, time.perf_counter() - started


def settings(**overrides):
    return {
        "api_keys": ",".join(f"{t}:{k}" for t, k in KEYS.items()),
        "admin_keys": ADMIN,
        "max_in_flight": 3,
        "max_in_flight_per_tenant": 1,
        "shed_delay": 0.3,
        **overrides,
    }


def test_a_tenant_at_its_share_is_refused_while_the_others_are_let_in_and_the_admins_always_are():
    with serve_in_thread(load_model("seed"), **settings()) as url:
        for tenant in ("a", "b", "d"):
            httpx.post(
                f"{url}/v1/sessions", json={"session_id": tenant}, headers=auth(KEYS[tenant])
            )
        with ExitStack() as stack:
            stack.enter_context(stalled(url, KEYS["a"]))
            over_share, waited = timed("POST", f"{url}/v1/sessions/a/chunks", KEYS["a"], json=CHUNK)
            other, _ = timed("POST", f"{url}/v1/sessions/b/chunks", KEYS["b"], json=CHUNK)
            wrong_key, waited_401 = timed("GET", f"{url}/v1/sessions/b", "not-a-key-0001")
            stack.enter_context(stalled(url, KEYS["b"]))
            stack.enter_context(stalled(url, KEYS["c"]))
            full = metric(url, "srnn_requests_in_flight")
            server_full, _ = timed("POST", f"{url}/v1/sessions/d/chunks", KEYS["d"], json=CHUNK)
            admin, _ = timed("GET", f"{url}/v1/sessions/b", ADMIN)
        until(
            lambda: metric(url, "srnn_requests_in_flight") == 0, url
        )  # the stalled requests end: no leak
        after, _ = timed("POST", f"{url}/v1/sessions/a/chunks", KEYS["a"], json=CHUNK)
    assert over_share.status_code == 503 and over_share.headers["retry-after"] == "1"
    assert "your share" in over_share.json()["detail"]
    assert waited >= 0.3  # held for --shed-delay
    assert other.status_code == 200
    assert wrong_key.status_code == 401 and waited_401 >= 0.3
    assert full == 3
    assert server_full.status_code == 503 and "server's limit" in server_full.json()["detail"]
    assert admin.status_code == 200  # beyond the limit: the admins' own share
    assert after.status_code == 200


def test_in_open_mode_there_are_no_shares():
    with serve_in_thread(load_model("seed"), max_in_flight=3, max_in_flight_per_tenant=1) as url:
        httpx.post(f"{url}/v1/sessions", json={"session_id": "s2"})
        with stalled(url, None):
            answer, _ = timed("POST", f"{url}/v1/sessions/s2/chunks", None, json=CHUNK)
    assert answer.status_code == 200


def test_beyond_the_held_limit_refusals_go_at_once_and_close_their_connection():
    # --max-in-flight 1 holds at most four answers: the fifth refusal may not wait.
    with (
        serve_in_thread(load_model("seed"), max_in_flight=1, shed_delay=1.0) as url,
        stalled(url, None),
    ):
        first: list = []
        holders = [
            threading.Thread(target=lambda: first.append(timed("GET", f"{url}/v1/sessions", None)))
            for _ in range(4)
        ]
        shed = 'srnn_shed_total{reason="server"}'
        before = metric(url, shed)
        for holder in holders:
            holder.start()
        until(lambda: metric(url, shed) == before + 4, url)  # all four refused, and held
        fifth, waited = timed("GET", f"{url}/v1/sessions", None)
        for holder in holders:
            holder.join()
    assert len(first) == 4
    for held, held_for in first:
        assert (
            held.status_code == 503
            and held_for >= 1.0
            and held.headers.get("connection") != "close"
        )
    assert fifth.status_code == 503 and waited < 1.0 and fifth.headers["connection"] == "close"


def test_a_refusal_begun_before_an_error_is_still_sent():
    # No route of ours fails after starting a 503, so a stand-in app does; the middleware is ours.
    async def failing(scope, receive, send):
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b"later"})
        raise RuntimeError("after the answer")

    admission = Admission(
        failing, Shares(KeyRing({}, []), max_in_flight=4, share=4, shed_delay=0.05)
    )
    sent = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "path": "/v1/sessions",
        "method": "GET",
        "headers": [],
        "client": ("t", 1),
    }
    with pytest.raises(RuntimeError):
        asyncio.run(admission(scope, None, send))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert admission.shares.in_flight == 0
