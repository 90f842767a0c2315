"""Keys and tenants: only its owner touches a session; admins see all; the rest is 401."""

import asyncio
import json

import httpx
import numpy as np
import pytest
import websockets

from app.model.loader import load_model
from harness.keys import auth
from harness.servers import serve_in_thread

KEYS = {"alpha": "alpha-key-0001", "beta": "beta-key-00002"}
ADMIN = "admin-key-000003"


@pytest.fixture(scope="module", params=["memory", "redis"])
def url(request, redis_url):
    from harness.redis import delete_prefix, new_prefix

    prefix = new_prefix()
    options = {
        "backend": request.param,
        "redis_url": redis_url,
        "redis_prefix": prefix,
        "api_keys": ",".join(f"{t}:{k}" for t, k in KEYS.items()),
        "admin_keys": ADMIN,
        "max_sessions_per_tenant": 3,
    }
    with serve_in_thread(load_model("seed"), **options) as url:
        yield url
    delete_prefix(redis_url, prefix)


def as_tenant(url: str, tenant: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers=auth(KEYS[tenant]), timeout=30)


def test_another_tenants_session_is_not_found_for_every_operation(url):
    with as_tenant(url, "beta") as beta, as_tenant(url, "alpha") as alpha:
        sid = beta.post("/v1/sessions").json()["session_id"]
        beta.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [1.0, 2.0]})
        before = beta.get(f"/v1/sessions/{sid}/state").json()
        attempts = [
            alpha.get(f"/v1/sessions/{sid}"),
            alpha.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [5.0]}),
            alpha.post(f"/v1/sessions/{sid}/reset"),
            alpha.get(f"/v1/sessions/{sid}/state"),
            alpha.put(f"/v1/sessions/{sid}/state", json=before),
            alpha.delete(f"/v1/sessions/{sid}"),
        ]
        for answer in attempts:
            assert answer.status_code == 404, answer.text
            assert "does not exist" in answer.json()["detail"]

        async def stream():
            ws_url = url.replace("http", "ws") + f"/v1/sessions/{sid}/stream?token={KEYS['alpha']}"
            async with websockets.connect(ws_url) as socket:
                await socket.recv()

        with pytest.raises(websockets.ConnectionClosed) as closed:
            asyncio.run(stream())
        assert closed.value.rcvd.code == 4404
        assert beta.get(f"/v1/sessions/{sid}/state").json() == before
        beta.delete(f"/v1/sessions/{sid}")


def test_admin_reads_resets_lists_and_deletes_any_session(url):
    with as_tenant(url, "beta") as beta, httpx.Client(base_url=url, headers=auth(ADMIN)) as admin:
        sid = beta.post("/v1/sessions").json()["session_id"]
        beta.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [1.0]})
        assert admin.get(f"/v1/sessions/{sid}/state").json()["seq"] == 1
        listed = admin.get("/v1/sessions", params={"limit": 1000}).json()["sessions"]
        assert sid in [s["session_id"] for s in listed]
        assert admin.post(f"/v1/sessions/{sid}/reset").json()["steps"] == 0
        assert beta.get("/v1/sessions").status_code == 403
        assert admin.delete(f"/v1/sessions/{sid}").status_code == 204
        assert beta.get(f"/v1/sessions/{sid}").status_code == 404


@pytest.mark.parametrize("key", [None, "wrong-key-999999", KEYS["alpha"] + "x"])
def test_no_key_or_a_wrong_key_is_401_everywhere(url, key):
    with as_tenant(url, "alpha") as alpha:
        sid = alpha.post("/v1/sessions").json()["session_id"]
    with httpx.Client(base_url=url, headers=auth(key)) as stranger:
        for answer in (
            stranger.post("/v1/sessions"),
            stranger.get(f"/v1/sessions/{sid}"),
            stranger.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [1.0]}),
            stranger.get("/v1/sessions"),
            stranger.get("/v1/model"),
        ):
            assert answer.status_code == 401, answer.text
            assert answer.headers["www-authenticate"] == "Bearer"
            assert answer.headers["content-type"] == "application/problem+json"
        assert stranger.get("/healthz").status_code == 200

    async def stream():
        suffix = f"?token={key}" if key else ""
        async with websockets.connect(
            url.replace("http", "ws") + f"/v1/sessions/{sid}/stream{suffix}"
        ) as socket:
            await socket.recv()

    with pytest.raises(websockets.ConnectionClosed) as closed:
        asyncio.run(stream())
    assert closed.value.rcvd.code == 4401
    with as_tenant(url, "alpha") as alpha:
        alpha.delete(f"/v1/sessions/{sid}")


def test_the_owner_streams_with_a_header_or_a_token(url):
    with as_tenant(url, "alpha") as alpha:
        sid = alpha.post("/v1/sessions").json()["session_id"]

        async def stream():
            base = url.replace("http", "ws") + f"/v1/sessions/{sid}/stream"
            async with websockets.connect(base, additional_headers=auth(KEYS["alpha"])) as socket:
                await socket.send(np.array([1.0], "<f4").tobytes())
                await socket.recv()
            async with websockets.connect(base + f"?token={KEYS['alpha']}") as socket:
                await socket.send(json.dumps({"op": "state"}))
                return json.loads(await socket.recv())

        assert asyncio.run(stream())["seq"] == 1
        alpha.delete(f"/v1/sessions/{sid}")


def test_over_quota_is_429_until_a_session_is_deleted(url):
    with as_tenant(url, "alpha") as alpha, as_tenant(url, "beta") as beta:
        ids = [alpha.post("/v1/sessions").json()["session_id"] for _ in range(3)]
        over = alpha.post("/v1/sessions")
        assert over.status_code == 429 and int(over.headers["retry-after"]) > 0
        assert over.headers["content-type"] == "application/problem+json"
        assert beta.post("/v1/sessions").status_code == 201  # quotas are per tenant
        alpha.delete(f"/v1/sessions/{ids[0]}")
        assert alpha.post("/v1/sessions").status_code == 201
