"""Slots: a full table answers 503 with Retry-After; delete and idle expiry free slots."""

import time

import httpx
import pytest

from app.model.loader import load_model
from harness.servers import serve_in_thread
from tests.support.reference import state_rows

CAPACITY = 4


@pytest.fixture(scope="module")
def client():
    with serve_in_thread(load_model("seed"), capacity=CAPACITY, session_ttl=0) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client


def active(client) -> int:
    return client.get("/v1/sessions").json()["active"]


def test_full_table_is_503_until_a_delete_frees_a_slot(client):
    ids = [client.post("/v1/sessions").json()["session_id"] for _ in range(CAPACITY)]
    client.post(f"/v1/sessions/{ids[0]}/chunks", json={"inputs": [3.0, 1.0]})
    full = client.post("/v1/sessions")
    assert full.status_code == 503
    assert full.headers["content-type"] == "application/problem+json"
    assert int(full.headers["retry-after"]) >= 1
    assert active(client) == CAPACITY

    assert client.delete(f"/v1/sessions/{ids[0]}").status_code == 204
    assert client.get(f"/v1/sessions/{ids[0]}").status_code == 404
    fresh = client.post("/v1/sessions")
    assert fresh.status_code == 201
    # The freed slot held a state; the new session must not inherit it.
    state = client.get(f"/v1/sessions/{fresh.json()['session_id']}/state").json()
    assert all(not row.any() for row in state_rows(state))
    for sid in ids[1:] + [fresh.json()["session_id"]]:
        client.delete(f"/v1/sessions/{sid}")
    assert active(client) == 0


@pytest.mark.slow
def test_idle_session_expires_after_its_ttl_and_frees_its_slot(client):
    short = client.post("/v1/sessions", json={"ttl_s": 2}).json()
    forever = client.post("/v1/sessions", json={"ttl_s": 0}).json()
    assert short["expires_at"] is not None and forever["expires_at"] is None
    # Use keeps a session alive: its expiry moves on with each chunk.
    for _ in range(3):
        time.sleep(0.5)
        assert (
            client.post(
                f"/v1/sessions/{short['session_id']}/chunks", json={"inputs": [1.0]}
            ).status_code
            == 200
        )
    time.sleep(1.0)
    assert client.get(f"/v1/sessions/{short['session_id']}").status_code == 200  # used 1 s ago
    time.sleep(2.5)
    assert client.get(f"/v1/sessions/{short['session_id']}").status_code == 404
    assert client.get(f"/v1/sessions/{forever['session_id']}").status_code == 200
    assert active(client) == 1
    # The expired session's slot is free again: the table can be filled to capacity.
    created = [client.post("/v1/sessions") for _ in range(CAPACITY - 1)]
    assert all(r.status_code == 201 for r in created)
    for r in created:
        client.delete(f"/v1/sessions/{r.json()['session_id']}")
    client.delete(f"/v1/sessions/{forever['session_id']}")


@pytest.mark.slow
def test_server_default_ttl_applies_when_a_session_asks_for_none():
    with serve_in_thread(load_model("seed"), session_ttl=1) as url:
        sid = httpx.post(f"{url}/v1/sessions").json()["session_id"]
        assert httpx.get(f"{url}/v1/sessions/{sid}").status_code == 200
        time.sleep(2.5)
        assert httpx.get(f"{url}/v1/sessions/{sid}").status_code == 404


def test_listing_pages_through_every_session(client):
    ids = sorted(client.post("/v1/sessions").json()["session_id"] for _ in range(CAPACITY))
    seen, cursor = [], None
    while True:
        page = client.get(
            "/v1/sessions", params={"limit": 3, **({"cursor": cursor} if cursor else {})}
        ).json()
        assert page["capacity"] == CAPACITY and page["active"] == CAPACITY
        seen += [s["session_id"] for s in page["sessions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    assert client.get("/v1/sessions", params={"cursor": "%%%"}).status_code == 422
    for sid in ids:
        client.delete(f"/v1/sessions/{sid}")


@pytest.mark.parametrize("sid", [".", ".."])
def test_ids_that_urls_collapse_are_refused_at_create(client, sid):
    # /v1/sessions/.. reaches the server as /v1/ (clients collapse path steps): such a session
    # could never be read or deleted, so it is not made.
    answer = client.post("/v1/sessions", json={"session_id": sid})
    assert answer.status_code == 422 and "path step" in answer.json()["detail"], answer.text
    assert client.post("/v1/sessions", json={"session_id": "..."}).status_code == 201
    assert client.delete("/v1/sessions/...").status_code == 204
