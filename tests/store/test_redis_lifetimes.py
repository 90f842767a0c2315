"""What a tenant holds on Redis: the quota counts every live session, however its creates were
refused, and every session with a TTL expires, however short the TTL."""

import time

import httpx
import pytest
import redis

from app.model.loader import load_model
from harness.keys import auth
from harness.servers import serve_in_thread

KEY = "quota-key-0001"


@pytest.fixture(scope="module")
def seed():
    return load_model("seed")


@pytest.fixture()
def server(seed, redis_url, redis_prefix):
    options = {
        "backend": "redis",
        "redis_url": redis_url,
        "redis_prefix": redis_prefix,
        "api_keys": f"quota:{KEY}",
        "admin_keys": "admin-key-0001",
        "max_sessions_per_tenant": 2,
    }
    with (
        serve_in_thread(seed, **options) as url,
        httpx.Client(base_url=url, headers=auth(KEY)) as http,
    ):
        yield http


def tenant_set(redis_url: str, prefix: str) -> set[bytes]:
    return redis.Redis.from_url(redis_url).zrange(f"{prefix}:tenant:{{quota}}", 0, -1)


def test_a_create_refused_because_the_id_is_taken_keeps_the_quota(server, redis_url, redis_prefix):
    # The attack: each id created twice. The second create's 409 took the live session out of the
    # tenant's count, so ten ids gave ten sessions against a quota of two.
    answers = []
    for n in range(10):
        answers += [
            server.post("/v1/sessions", json={"session_id": f"q{n}"}).status_code for _ in range(2)
        ]
    assert answers == [201, 409, 201, 409] + [429, 429] * 8
    assert sorted(tenant_set(redis_url, redis_prefix)) == [b"q0", b"q1"]
    assert server.post("/v1/sessions").status_code == 429
    assert server.delete("/v1/sessions/q0").status_code == 204
    assert server.post("/v1/sessions", json={"session_id": "q9"}).status_code == 201
    assert sorted(tenant_set(redis_url, redis_prefix)) == [b"q1", b"q9"]


def test_a_ttl_below_a_millisecond_still_expires(server, redis_url, redis_prefix):
    # The attack: ttl_s 0.0004 was rounded down to PEXPIRE 0 ms, so none was set: an immortal key
    # that GET and DELETE called gone while chunks still applied, and that held the quota forever.
    for ttl in (0.0004, 0.0015):
        assert (
            server.post("/v1/sessions", json={"session_id": "brief", "ttl_s": ttl}).status_code
            == 201
        )
        key = f"{redis_prefix}:{{brief}}"
        assert redis.Redis.from_url(redis_url).pttl(key) != -1  # an expiry is set, or it is gone
        time.sleep(0.05)
        assert not redis.Redis.from_url(redis_url).exists(key)
        assert server.post("/v1/sessions/brief/chunks", json={"inputs": [1.0]}).status_code == 404
        assert server.get("/v1/sessions/brief").status_code == 404
    # Neither holds the quota: two more sessions fit.
    assert [server.post("/v1/sessions").status_code for _ in range(2)] == [201, 201]


def test_a_reset_keeps_a_sub_millisecond_ttl_an_expiry(server, redis_url, redis_prefix):
    # A reset or a state write sets the expiry again from the stored TTL, in the script: rounded
    # down, PEXPIRE 0 would delete the key at once instead of in a millisecond.
    sid = server.post("/v1/sessions", json={"ttl_s": 0.9}).json()["session_id"]
    assert server.post(f"/v1/sessions/{sid}/reset").status_code == 200
    assert 0 < redis.Redis.from_url(redis_url).pttl(f"{redis_prefix}:{{{sid}}}") <= 900
