"""Which pages may drive the server: requests a browser sends from another site are refused before
any route runs, bodies must be JSON, and origins an operator allows get CORS."""

import asyncio
import json

import httpx
import pytest
import websockets

from app.model.loader import load_model
from harness.keys import auth
from harness.servers import serve_in_thread

EVIL = "http://evil.example"
KEY = "tenant-key-origins"


@pytest.fixture(scope="module")
def seed():
    return load_model("seed")


@pytest.fixture(scope="module")
def open_url(seed):
    with serve_in_thread(seed) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_url(seed):
    with serve_in_thread(
        seed,
        api_keys=f"t:{KEY}",
        admin_keys="admin-key-origins",
        allowed_origins="https://app.example, http://localhost:5173",
    ) as url:
        yield url


def sessions_of(url: str, key: str | None = None) -> set[str]:
    listing = httpx.get(f"{url}/v1/sessions", headers=auth(key)).json()
    return {s["session_id"] for s in listing["sessions"]}


def stream(url: str, sid: str, **options) -> str:
    """Open the stream and reset the session through it; what happened."""

    async def attempt():
        try:
            async with websockets.connect(
                f"{url.replace('http', 'ws')}/v1/sessions/{sid}/stream", **options
            ) as ws:
                await ws.send(json.dumps({"op": "reset"}))
                return json.loads(await ws.recv())["op"]
        except websockets.InvalidStatus as exc:
            return f"refused {exc.response.status_code}"

    return asyncio.run(attempt())


def test_a_page_of_another_site_cannot_create_push_or_reset(open_url):
    # The attack, in open dev mode: a text/plain POST from evil.example created a session (201) and
    # pushed a chunk (200), and a WebSocket opened from it reset a session.
    httpx.post(f"{open_url}/v1/sessions", json={"session_id": "victim"})
    httpx.post(f"{open_url}/v1/sessions/victim/chunks", json={"inputs": [1.0, 2.0]})
    plain = {"Origin": EVIL, "Content-Type": "text/plain"}
    attempts = [
        httpx.post(f"{open_url}/v1/sessions", content='{"session_id": "evil"}', headers=plain),
        httpx.post(
            f"{open_url}/v1/sessions/victim/chunks", content='{"inputs": [9.0]}', headers=plain
        ),
        httpx.post(f"{open_url}/v1/sessions/victim/reset", headers={"Origin": EVIL}),
        httpx.delete(f"{open_url}/v1/sessions/victim", headers={"Origin": EVIL}),
        httpx.get(f"{open_url}/v1/sessions/victim/state", headers={"Origin": EVIL}),
    ]
    for answer in attempts:
        assert answer.status_code == 403, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert (
            "evil.example" in answer.json()["detail"]
            and "--allowed-origins" in answer.json()["detail"]
        )
        assert "access-control-allow-origin" not in answer.headers
    assert stream(open_url, "victim", origin=EVIL) == "refused 403"
    victim = httpx.get(f"{open_url}/v1/sessions/victim").json()
    assert (victim["seq"], victim["steps"]) == (1, 2)
    assert "evil" not in sessions_of(open_url)
    httpx.delete(f"{open_url}/v1/sessions/victim")


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
    ],
)
def test_a_body_that_does_not_say_json_is_415_and_changes_nothing(open_url, content_type):
    # What a cross-site form or a no-cors fetch can send without a preflight: never taken as JSON.
    sid = httpx.post(f"{open_url}/v1/sessions").json()["session_id"]
    headers = {"Content-Type": content_type} if content_type else {}
    before = sessions_of(open_url)
    for method, path, body in (
        ("POST", "/v1/sessions", '{"session_id": "typed"}'),
        ("POST", f"/v1/sessions/{sid}/chunks", '{"inputs": [1.0]}'),
        ("PUT", f"/v1/sessions/{sid}/state", "{}"),
    ):
        answer = httpx.request(method, open_url + path, content=body.encode(), headers=headers)
        assert answer.status_code == 415, answer.text
        assert answer.json()["type"] == "/problems/unsupported-media-type"
        assert "application/json" in answer.json()["detail"]
    assert sessions_of(open_url) == before
    assert httpx.get(f"{open_url}/v1/sessions/{sid}").json()["seq"] == 0
    json_with_charset = {"Content-Type": "application/json; charset=utf-8"}
    answer = httpx.post(
        f"{open_url}/v1/sessions/{sid}/chunks",
        content=b'{"inputs": [1.0]}',
        headers=json_with_charset,
    )
    assert answer.status_code == 200
    assert (
        httpx.post(f"{open_url}/v1/sessions", headers=headers).status_code == 201
    )  # no body: nothing to type


def test_the_servers_own_pages_and_programs_without_an_origin_pass(open_url):
    own = open_url  # the console's origin: the server's own
    sid = httpx.post(f"{open_url}/v1/sessions", headers={"Origin": own}).json()["session_id"]
    assert (
        httpx.post(f"{open_url}/v1/sessions/{sid}/reset", headers={"Origin": own}).status_code
        == 200
    )
    assert stream(open_url, sid, origin=own) == "reset"
    assert stream(open_url, sid) == "reset"  # a program: no Origin at all
    # Another port of the same host is another site (a dev server of someone else's, say).
    other_port = open_url.rsplit(":", 1)[0] + ":1"
    assert (
        httpx.post(
            f"{open_url}/v1/sessions/{sid}/reset", headers={"Origin": other_port}
        ).status_code
        == 403
    )
    assert (
        httpx.post(f"{open_url}/v1/sessions/{sid}/reset", headers={"Origin": "null"}).status_code
        == 403
    )


def test_with_keys_too_and_allowed_origins_get_cors(keyed_url):
    # No key protects against a page that holds one (a browser app on another origin): the check
    # runs with keys as without.
    headers = {**auth(KEY), "Origin": EVIL}
    assert httpx.post(f"{keyed_url}/v1/sessions", headers=headers).status_code == 403
    assert stream(keyed_url, "x", origin=EVIL, additional_headers=auth(KEY)) == "refused 403"

    app = "https://app.example"
    preflight = httpx.options(
        f"{keyed_url}/v1/sessions",
        headers={
            "Origin": app,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == app
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    created = httpx.post(f"{keyed_url}/v1/sessions", headers={**auth(KEY), "Origin": app})
    assert created.status_code == 201 and created.headers["access-control-allow-origin"] == app
    assert "Location" in created.headers["access-control-expose-headers"]
    sid = created.json()["session_id"]
    assert (
        stream(keyed_url, sid, origin="http://localhost:5173", additional_headers=auth(KEY))
        == "reset"
    )
    refused = httpx.options(
        f"{keyed_url}/v1/sessions",
        headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"},
    )
    assert refused.status_code == 403 and "access-control-allow-origin" not in refused.headers


def test_an_origin_setting_that_is_not_an_origin_stops_the_start():
    from pydantic import ValidationError

    from app.config import Settings

    for bad in ("evil.example", "https://app.example/path", "ftp://x", "https://"):
        with pytest.raises(ValidationError, match="not an origin"):
            Settings(allowed_origins=bad)
    assert Settings(allowed_origins="*, https://a.example:8443/").allowed_origin_list == [
        "*",
        "https://a.example:8443",
    ]
