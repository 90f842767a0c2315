"""The operations console in a real headless Chromium, against a live server with keys."""

import asyncio
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from playwright.sync_api import Page, expect

from app.model.loader import load_model
from app.store import snapshot
from app.store.memory import MemoryStore
from harness.keys import auth
from harness.redis import own_redis
from harness.servers import serve_in_thread

pytestmark = pytest.mark.browser  # Chromium, through Playwright

ADMIN = "admin-key-console-ui"
KEYS = {"alpha": "alpha-key-console", "beta": "beta-key-console"}
PUMPS = [f"pump-{i:02d}" for i in range(1, 7)]


@pytest.fixture(scope="module")
def seed():
    return load_model("seed")


@pytest.fixture(scope="module")
def url(seed):
    api_keys = ",".join(f"{tenant}:{key}" for tenant, key in KEYS.items())
    with serve_in_thread(seed, admin_keys=ADMIN, api_keys=api_keys) as url:
        yield url


@pytest.fixture()
def pumps(url):
    """Six sessions of two tenants, each a few chunks in; deleted afterwards."""
    with httpx.Client(base_url=url, timeout=30) as client:
        for i, sid in enumerate(PUMPS):
            tenant = "alpha" if i % 2 else "beta"
            client.post("/v1/sessions", json={"session_id": sid}, headers=auth(KEYS[tenant]))
            for seq in range(1, 4):
                client.post(
                    f"/v1/sessions/{sid}/chunks",
                    json={"inputs": [i + 0.5, -seq, 2.0], "seq": seq},
                    headers=auth(KEYS[tenant]),
                )
        yield client
        for sid in PUMPS:
            client.delete(f"/v1/sessions/{sid}", headers=auth(ADMIN))


def states(client: httpx.Client) -> dict[str, list]:
    found = {}
    for sid in PUMPS:
        answer = client.get(f"/v1/sessions/{sid}/state", headers=auth(ADMIN))
        if answer.status_code == 200:
            found[sid] = answer.json()["layers"]
    return found


def sign_in(page: Page, url: str) -> None:
    page.goto(f"{url}/ui")
    page.fill("#key-input", ADMIN)
    page.click("#key-submit")
    expect(page.locator("#console")).to_be_visible()


def open_session(page: Page, sid: str) -> None:
    page.fill("#filter", sid)
    rows = page.locator("#session-table tbody tr")
    expect(rows).to_have_count(1)
    page.click(f"#session-table tbody tr[data-sid='{sid}'] a")
    expect(page.locator("#session-id")).to_have_text(sid)
    expect(page.locator(".heatmap .cell").first).to_be_visible()


def cell_values(page: Page) -> list[float]:
    return [
        float(v)
        for v in page.locator(".heatmap .cell").evaluate_all(
            "cells => cells.map(c => c.dataset.value)"
        )
    ]


def test_find_a_session_and_reset_it(page, url, pumps, artifacts):
    before = states(pumps)
    sign_in(page, url)
    expect(page.locator("#model-name")).to_have_text("seed v1")
    expect(page.locator("#load-status")).to_contain_text("sessions")
    target = PUMPS[2]
    open_session(page, target)
    assert any(v != 0 for v in cell_values(page))  # three chunks in, the state is not zero
    expect(page.locator("#outputs-caption")).to_contain_text("up to chunk 3")
    page.screenshot(path=str(artifacts / "console-before-reset.png"), full_page=True)

    page.click("#reset-session")
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-text")).to_contain_text(target)
    page.click("#confirm-ok")
    expect(page.locator("#session-meta")).to_have_text("model seed version 1, seq 3, steps 0")
    assert cell_values(page) == [0.0] * 5
    expect(page.locator(".heatmap figcaption")).to_contain_text("max |value| = 0.000")
    page.screenshot(path=str(artifacts / "console-after-reset.png"), full_page=True)

    after = states(pumps)
    assert after[target] == [{"name": "rnn", "kind": "GRU", "states": [[0.0] * 5]}]
    assert {sid: layers for sid, layers in after.items() if sid != target} == {
        sid: layers for sid, layers in before.items() if sid != target
    }


def test_delete_asks_first_and_cancel_changes_nothing(page, failures, url, pumps):
    before = states(pumps)
    sign_in(page, url)
    target = PUMPS[4]
    # A read of the open view sent just before the DELETE may be answered after it, with 404;
    # the view drops that reply. Only the deleted session may answer 404.
    failures.allow(rf"^404 {re.escape(url)}/v1/sessions/{target}/(state|outputs)$")
    open_session(page, target)

    page.click("#delete-session")
    expect(page.locator("#confirm-text")).to_contain_text(f"Delete session {target}")
    page.click("#confirm-cancel")
    expect(page.locator("#confirm")).to_be_hidden()
    assert states(pumps) == before  # nothing deleted, nothing reset
    expect(page.locator("#session")).to_be_visible()

    page.click("#delete-session")
    page.click("#confirm-ok")
    expect(page.locator("#session")).to_be_hidden()
    expect(page.locator("#session-table tbody tr")).to_have_count(0)  # the filter still names it
    assert pumps.get(f"/v1/sessions/{target}", headers=auth(ADMIN)).status_code == 404
    after = states(pumps)
    assert target not in after and after == {sid: v for sid, v in before.items() if sid != target}


def test_the_overview_names_its_replica_and_survives_redis_going_down(page, failures):
    # The sessions table reads the listing again every few seconds: while Redis is down it cannot.
    failures.allow(r"^503 .*/v1/sessions\?limit=")
    with (
        own_redis() as redis_server,
        serve_in_thread(
            load_model("seed"),
            backend="redis",
            redis_url=redis_server.url,
            capacity=8,
            admin_keys=ADMIN,
        ) as url,
    ):
        httpx.post(f"{url}/v1/sessions", json={"session_id": "r-1"}, headers=auth(ADMIN))
        sign_in(page, url)
        expect(page.locator("#replica")).to_have_text(
            f"{socket.gethostname()}:{url.rsplit(':', 1)[1]}"
        )
        expect(page.locator("#sessions-total")).to_have_text("1")
        expect(page.locator("#total-label")).to_have_text("sessions in Redis")
        expect(page.locator("#capacity-text")).to_have_text("0 hot of 8 slots on this replica")
        redis_server.stop()
        # The other figures stay; the total is unknown until Redis answers again (once the cached
        # count, at most 5 s old, is due again).
        expect(page.locator("#sessions-total")).to_have_text(re.compile("^unknown"), timeout=20_000)
        expect(page.locator("#model-name")).to_have_text("seed v1")
        expect(page.locator("#banner")).to_be_hidden()
        # The table keeps the rows it read and says why it has no newer ones.
        expect(page.locator("#load-status")).to_contain_text("failed", timeout=15_000)
        expect(page.locator("#session-table tbody tr[data-sid='r-1']")).to_be_visible()
        redis_server.start()
        expect(page.locator("#sessions-total")).to_have_text("1")
        expect(page.locator("#load-status")).to_have_text("1 sessions", timeout=15_000)


def test_an_unreachable_server_shows_a_banner_and_is_tried_again(page, failures, url):
    # The network fails under the page (the server itself is fine): the first reads of the stats fail.
    failures.allow("net::ERR_FAILED")
    page.route("**/v1/stats", lambda route: route.abort())
    page.goto(f"{url}/ui")
    expect(page.locator("#banner")).to_contain_text("trying again in 2 s")
    expect(page.locator("#banner")).to_contain_text("trying again in 4 s", timeout=5000)
    expect(page.locator("#login")).to_be_hidden()
    page.unroute("**/v1/stats")
    expect(page.locator("#login")).to_be_visible(timeout=10_000)  # this server has keys
    expect(page.locator("#banner")).to_be_hidden()


def test_nothing_polls_behind_the_login_screen(page, url, pumps):
    sign_in(page, url)
    open_session(page, PUMPS[1])
    api_calls: list[str] = []
    page.on("request", lambda r: api_calls.append(r.url) if "/v1/" in r.url else None)
    page.evaluate(
        "sessionStorage.setItem('srnn-admin-key', 'revoked-key')"
    )  # as if the key was revoked
    expect(page.locator("#login")).to_be_visible(timeout=10_000)
    expect(page.locator("#login-error")).to_contain_text("refused")
    expect(page.locator("#session")).to_be_hidden()
    seen = len(api_calls)
    page.wait_for_timeout(4500)  # two stats and two session polling intervals
    assert api_calls[seen:] == []


def test_a_tenant_key_is_turned_away(page, url):
    page.goto(f"{url}/ui")
    page.fill("#key-input", KEYS["alpha"])
    page.click("#key-submit")
    expect(page.locator("#login-error")).to_contain_text("admin key")
    expect(page.locator("#console")).to_be_hidden()


def many_sessions(seed, count: int, path) -> float:
    """A snapshot of ``count`` sessions, written straight through a memory store; seconds taken."""
    started = time.perf_counter()
    store = MemoryStore(count + 16)
    store.add_model(seed.spec.key, seed.spec.fingerprint, seed.spec.state_units)
    rng = np.random.default_rng(7)

    async def fill() -> None:
        now = time.time()
        for i in range(count):
            record = await store.create(
                f"stream-{i:05d}", 0.0, now - i, tenant=f"t{i % 7}", model_key=seed.spec.key
            )
            record.seq = record.steps = int(rng.integers(0, 1000))

    # Playwright's sync API runs an event loop in this thread: fill the store in another.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, fill()).result()
    snapshot.write(path, snapshot.capture(store, {seed.spec.key: seed.spec.fingerprint}))
    return time.perf_counter() - started


def test_ten_thousand_sessions_show_within_two_seconds(page, seed, tmp_path):
    count = 10_000
    made_s = many_sessions(seed, count, tmp_path / "sessions.snapshot")
    with serve_in_thread(
        seed,
        admin_keys=ADMIN,
        capacity=count + 16,
        snapshot=tmp_path / "sessions.snapshot",
        snapshot_interval=3600,
    ) as url:
        # A first full load warms the browser, the page's files and the server's listing.
        sign_in(page, url)
        expect(page.locator("#load-status")).to_have_text(f"{count:,} sessions")
        page.reload()  # the key is kept in the tab: straight to the table
        # Timed in the page, from the navigation's start to the first rows drawn: the browser's
        # work and the two requests it needs (stats, the first listing page), nothing else.
        shown_ms = page.wait_for_function(
            "() => document.querySelector(\"#session-table tbody tr[data-sid='stream-00000']\") && performance.now()",
            polling="raf",
        ).json_value()
        expect(page.locator("#session-table tbody tr")).to_have_count(50)
        expect(page.locator("#load-status")).to_have_text(f"{count:,} sessions")
        print(
            f"\n{count} sessions: made in {made_s:.2f} s; first page of rows shown {shown_ms:.0f} ms after navigation"
        )
        assert shown_ms < 2000

        page.click("th[data-sort='seq']")
        page.click("th[data-sort='seq']")  # descending
        seqs = [
            int(t)
            for t in page.locator("#session-table tbody tr td:nth-child(4)").all_text_contents()
        ]
        assert seqs == sorted(seqs, reverse=True) and len(seqs) == 50
        page.fill("#filter", "stream-09999")
        expect(page.locator("#session-table tbody tr")).to_have_count(1)
        expect(page.locator("#page-info")).to_contain_text(f"1 shown of {count:,}")


def test_open_dev_mode_needs_no_key(page, seed):
    with serve_in_thread(seed) as url:
        httpx.post(f"{url}/v1/sessions", json={"session_id": "dev-1"})
        page.goto(f"{url}/ui")
        expect(page.locator("#session-table tbody tr[data-sid='dev-1']")).to_be_visible()
        expect(page.locator("#login")).to_be_hidden()
        expect(page.locator("#forget-key")).to_be_hidden()


def test_models_and_versions_are_shown_and_a_version_is_retired_from_the_console(page, tmp_path):
    from tests.support.repository import save_version

    repo = tmp_path / "models"
    save_version(repo, "speech", 1, seed=71)
    with (
        serve_in_thread(
            None, model_repository=str(repo), repository_poll_s=0.2, xla=False, admin_keys=ADMIN
        ) as url,
        httpx.Client(base_url=url, headers=auth(ADMIN)) as http,
    ):
        sid = http.post("/v1/sessions", json={}).json()["session_id"]
        save_version(repo, "speech", 2, seed=72)
        sign_in(page, url)
        rows = page.locator("#model-table tbody tr")
        expect(rows).to_have_count(2)
        version1 = page.locator("#model-table tbody tr[data-version='1']")
        expect(page.locator("#model-table tbody tr[data-version='2']")).to_contain_text(
            "ready (new sessions)"
        )
        expect(version1).to_contain_text("ready")
        version1.get_by_role("button", name="carry").click()
        expect(page.locator("#confirm-text")).to_contain_text("Retire version 1 of speech (carry)?")
        page.click("#confirm-cancel")
        assert (
            http.get(f"/v1/sessions/{sid}").json()["model"]["version"] == 1
        )  # cancelled: nothing moved
        version1.get_by_role("button", name="carry").click()
        page.click("#confirm-ok")
        expect(page.locator("#models-status")).to_have_text(
            "version 1 of speech: 1 sessions moved to version 2"
        )
        expect(version1).to_contain_text("retired", timeout=10_000)
        assert http.get(f"/v1/sessions/{sid}").json()["model"]["version"] == 2
