"""What the operations console reads: /v1/stats, a session's last outputs, the listing's tenants,
and the page's own files with their security headers."""

import asyncio
import hashlib
import socket
import time

import httpx
import pytest

from app.api.routes.console import UI_DIR
from app.model.loader import load_model
from app.stats import RollingStats
from harness.keys import auth
from harness.redis import delete_prefix, new_prefix, own_redis
from harness.servers import serve_in_thread

ADMIN = "admin-key-console-1"
TENANT = "tenant-key-console"


@pytest.fixture(scope="module", params=["memory", "redis"])
def url(request, redis_url):
    prefix = new_prefix()
    options = {
        "backend": request.param,
        "redis_url": redis_url,
        "redis_prefix": prefix,
        "capacity": 16,
        "admin_keys": ADMIN,
        "api_keys": f"ops:{TENANT}",
    }
    with serve_in_thread(load_model("seed"), **options) as url:
        yield url
    delete_prefix(redis_url, prefix)


def test_stats_move_as_chunks_are_served(url):
    with httpx.Client(base_url=url, headers=auth(ADMIN), timeout=30) as admin:
        assert httpx.get(f"{url}/v1/stats").status_code == 401
        refused = httpx.get(f"{url}/v1/stats", headers=auth(TENANT))
        assert (
            refused.status_code == 403
            and refused.headers["content-type"] == "application/problem+json"
        )
        before = admin.get("/v1/stats").json()
        assert before["replica"] == f"{socket.gethostname()}:{url.rsplit(':', 1)[1]}"
        assert before["model"]["name"] == "seed" and before["model"]["fingerprint"].startswith(
            "sha256:"
        )
        assert before["sessions"]["capacity"] == 16
        sid = admin.post("/v1/sessions").json()["session_id"]
        for seq in range(1, 21):
            assert (
                admin.post(
                    f"/v1/sessions/{sid}/chunks", json={"inputs": [0.5, 1.0], "seq": seq}
                ).status_code
                == 200
            )
        after = admin.get("/v1/stats").json()
        assert after["window"]["chunks"] >= 20 and after["window"]["chunks_per_s"] > 0
        assert after["window"]["p99_ms"] is not None and after["window"]["p99_ms"] > 0
        assert after["sessions"]["total"] == before["sessions"]["total"] + 1
        assert after["sessions"]["hot"] >= 1
        # The sampler closes the intervals of those chunks within a second or two, unless this
        # machine is busy: wait for it with a deadline rather than a fixed sleep.
        deadline = time.monotonic() + 15
        while True:
            series = admin.get("/v1/stats").json()["series"]
            if sum(point["chunks"] for point in series) >= 20 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert sum(point["chunks"] for point in series) >= 20
        assert any(point["p99_ms"] for point in series)
        admin.delete(f"/v1/sessions/{sid}")


@pytest.mark.process
def test_stats_without_redis_still_serve_this_replicas_figures():
    with own_redis(appendonly=False) as redis_server:
        options = {
            "backend": "redis",
            "redis_url": redis_server.url,
            "capacity": 16,
            "admin_keys": ADMIN,
        }
        with (
            serve_in_thread(load_model("seed"), **options) as url,
            httpx.Client(base_url=url, headers=auth(ADMIN), timeout=30) as admin,
        ):
            assert admin.get("/v1/stats").json()["sessions"]["total"] == 0
            redis_server.stop()
            deadline = time.monotonic() + 20  # the cached count is at most 5 s old
            while True:
                down = admin.get("/v1/stats")
                assert down.status_code == 200, down.text
                stats = down.json()
                if stats["sessions"]["total"] is None or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert stats["sessions"] == {"capacity": 16, "hot": 0, "total": None}
            assert stats["model"]["name"] == "seed" and stats["backend"] == "redis"
            redis_server.start()  # the same port: the next count answers again
            assert admin.get("/v1/stats").json()["sessions"]["total"] == 0


def test_stopping_the_sampler_waits_for_it():
    # Not awaited, a cancelled task is still pending when the loop closes at shutdown.
    async def start_and_stop() -> tuple[list[str], int]:
        rolling = RollingStats(every_s=0.01)
        rolling.start()
        await asyncio.sleep(0.05)
        await rolling.stop()
        return [task.get_name() for task in asyncio.all_tasks()], len(rolling.readings)

    pending, readings = asyncio.run(start_and_stop())
    assert "stats-sampler" not in pending and readings >= 2


def test_last_outputs_are_the_last_chunks_response(url):
    with httpx.Client(base_url=url, headers=auth(TENANT), timeout=30) as tenant:
        sid = tenant.post("/v1/sessions").json()["session_id"]
        assert tenant.get(f"/v1/sessions/{sid}/outputs").json() == {
            "session_id": sid,
            "seq": 0,
            "steps": 0,
            "outputs": None,
        }
        tenant.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [1.0, 2.0]})
        answer = tenant.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [3.0]}).json()
        last = tenant.get(f"/v1/sessions/{sid}/outputs").json()
        assert last == {"session_id": sid, "seq": 2, "steps": 3, "outputs": answer["outputs"]}
        assert httpx.get(f"{url}/v1/sessions/{sid}/outputs").status_code == 401
        assert httpx.get(f"{url}/v1/sessions/{sid}/outputs", headers=auth(ADMIN)).json() == last
        assert tenant.get("/v1/sessions/nobody/outputs").status_code == 404
        tenant.delete(f"/v1/sessions/{sid}")


def test_the_listing_names_each_sessions_tenant(url):
    with httpx.Client(base_url=url, headers=auth(ADMIN), timeout=30) as admin:
        mine = admin.post("/v1/sessions").json()["session_id"]
        theirs = httpx.post(f"{url}/v1/sessions", headers=auth(TENANT)).json()["session_id"]
        listed = {
            s["session_id"]: s
            for s in admin.get("/v1/sessions", params={"limit": 1000}).json()["sessions"]
        }
        assert listed[mine]["tenant"] is None and listed[theirs]["tenant"] == "ops"
        # A tenant's own view of a session is unchanged: SessionInfo, no tenant member.
        assert "tenant" not in httpx.get(f"{url}/v1/sessions/{theirs}", headers=auth(TENANT)).json()
        for sid in (mine, theirs):
            admin.delete(f"/v1/sessions/{sid}")


def test_the_console_page_is_served_with_strict_headers(url):
    page = httpx.get(f"{url}/ui", follow_redirects=True)
    assert page.status_code == 200 and str(page.url).endswith("/ui/")
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in page.text and 'type="module" src="main.js"' in page.text
    script = httpx.get(f"{url}/ui/main.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith(
        "text/javascript"
    )
    for name in ("../main.py", "nope.js", "%2e%2e%2fconsole.py", "vendor%2f..%2f..%2fmain.py"):
        assert httpx.get(f"{url}/ui/{name}").status_code == 404


def test_the_vendored_chart_library_is_served_unmodified(url):
    # uPlot comes from the package (the console works offline), byte for byte what
    # scripts/vendor_uplot.sh took from the npm registry.
    vendor = UI_DIR / "vendor"
    sums = [
        line.split()
        for line in (vendor / "SHA256SUMS").read_text().splitlines()
        if not line.startswith("#")
    ]
    assert {name for _, name in sums} == {"uPlot.esm.js", "uPlot.min.css", "uPlot.LICENSE"}
    for digest, name in sums:
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    script = httpx.get(f"{url}/ui/vendor/uPlot.esm.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith(
        "text/javascript"
    )
    assert script.content == (vendor / "uPlot.esm.js").read_bytes()
    assert "default-src 'self'" in script.headers["content-security-policy"]
    assert (
        httpx.get(f"{url}/ui/vendor/uPlot.min.css").headers["content-type"].startswith("text/css")
    )
