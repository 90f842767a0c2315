"""The console on a 360 px phone, an 820 px tablet and a 1920 px wall display, in a real headless
Chromium: it fits the screen, its charts have axes with units and leave gaps where there is no
data, a session has a link that opens it, and the sessions table keeps itself fresh."""

import re

import httpx
import pytest
from playwright.sync_api import Page, expect

from app.model.loader import load_model
from harness.keys import auth
from harness.servers import serve_in_thread
from tests.support.browser import unplug

pytestmark = pytest.mark.browser  # Chromium, through Playwright

ADMIN = "admin-key-console-screens"
TENANT = "tenant-key-console-screens"
# As long as the ids a call centre or a trading desk would use; on a phone the id gets a line.
STREAMS = [f"call-2026-11-30-desk-{i:02d}-0001234" for i in range(4)]
SCREENS = {
    "phone": {"width": 360, "height": 740},
    "tablet": {"width": 820, "height": 1180},
    "wall": {"width": 1920, "height": 1080},
}


@pytest.fixture(params=list(SCREENS))
def screen(request) -> str:
    return request.param


@pytest.fixture()
def viewport(screen) -> dict[str, int]:
    return SCREENS[screen]


@pytest.fixture(scope="module")
def url():
    with serve_in_thread(load_model("seed"), admin_keys=ADMIN, api_keys=f"desk:{TENANT}") as url:
        yield url


@pytest.fixture()
def http(url):
    """The streams, two chunks in each; deleted afterwards."""
    with httpx.Client(base_url=url, timeout=30, headers=auth(TENANT)) as client:
        for n, sid in enumerate(STREAMS):
            client.post("/v1/sessions", json={"session_id": sid})
            for seq in (1, 2):
                push(client, sid, seq, n)
        yield client
        for sid in STREAMS:
            client.delete(f"/v1/sessions/{sid}")


def push(client: httpx.Client, sid: str, seq: int, n: int = 0) -> None:
    answer = client.post(
        f"/v1/sessions/{sid}/chunks", json={"inputs": [n + 0.5, -seq, seq / 3], "seq": seq}
    )
    assert answer.status_code == 200, answer.text


def sign_in(page: Page, address: str) -> None:
    page.goto(address)
    page.fill("#key-input", ADMIN)
    page.click("#key-submit")
    expect(page.locator("#console")).to_be_visible()


def row(page: Page, sid: str):
    return page.locator(f"#session-table tbody tr[data-sid='{sid}']")


def chart(page: Page, box: str, what: str):
    return page.locator(box).evaluate(f"box => box.chart && {what}")


def test_the_console_fits_the_screen(page, url, http, screen, artifacts):
    # With the network unplugged: everything it needs, the chart library too, comes from the server.
    elsewhere = unplug(page, url)
    sign_in(page, f"{url}/ui")
    expect(row(page, STREAMS[1])).to_be_visible()
    row(page, STREAMS[1]).locator("a").click()
    expect(page.locator("#session-id")).to_have_text(STREAMS[1])
    expect(page.locator("#outputs-caption")).to_contain_text("up to chunk 2")
    expect(page.locator("#chunks-rate")).not_to_be_empty()

    width = SCREENS[screen]["width"]
    # Nothing wider than the screen: no sideways scrolling, every control within reach.
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    outside = page.evaluate(
        """width => [...document.querySelectorAll('button, a, input')]
             .filter(e => e.offsetParent !== null)
             .map(e => [e.id || e.textContent, e.getBoundingClientRect()])
             .filter(([, r]) => r.left < 0 || r.right > width + 0.5)
             .map(([name]) => name)""",
        width,
    )
    assert outside == []
    # An id reads on one line, not a letter a line.
    link = row(page, STREAMS[1]).locator("a")
    line = page.evaluate("parseFloat(getComputedStyle(document.body).fontSize) * 1.6")
    assert link.bounding_box()["height"] <= line

    # Every chart fills its box and has both axes labelled, with units.
    for box in ("#chunks-chart", "#latency-chart", "#outputs-chart"):
        drawn, room = page.locator(box).evaluate("b => [b.chart.width, b.clientWidth]")
        assert 0.9 * room <= drawn <= room, (box, drawn, room)
    assert chart(page, "#chunks-chart", "box.chart.axes.map(a => a.label)") == [
        "local time",
        "chunks/s",
    ]
    assert chart(page, "#latency-chart", "box.chart.axes.map(a => a.label)") == ["local time", "ms"]
    assert chart(page, "#outputs-chart", "box.chart.axes.map(a => a.label)") == [
        "chunk (seq)",
        "output",
    ]

    first, second = (page.locator(b).bounding_box() for b in ("#chunks-chart", "#latency-chart"))
    cells = page.locator("#session-table tbody tr").first.locator("td")
    if screen == "phone":
        # Charts one above the other; a table row is a card of labelled cells.
        assert second["y"] >= first["y"] + first["height"]
        assert cells.nth(1).evaluate("td => getComputedStyle(td).display") == "block"
        assert cells.nth(2).evaluate("td => getComputedStyle(td, '::before').content") == '"model"'
        assert cells.nth(3).evaluate("td => getComputedStyle(td, '::before').content") == '"seq"'
    else:
        assert cells.nth(1).evaluate("td => getComputedStyle(td).display") == "table-cell"
    if screen == "wall":
        # Side by side, and the type and the charts grown for a screen seen from across the room.
        assert second["y"] == first["y"] and second["x"] > first["x"] + first["width"]
        assert page.evaluate("parseFloat(getComputedStyle(document.documentElement).fontSize)") > 15
        assert page.locator("#chunks-chart").evaluate("b => b.chart.height") > 160
    page.screenshot(path=str(artifacts / f"console-{screen}.png"), full_page=True)
    assert elsewhere == []

    # The headings sort from the keyboard too.
    heading = page.locator("#session-table th[data-sort='steps']")
    heading.locator("button").focus()
    page.keyboard.press("Enter")
    expect(heading).to_have_attribute("aria-sort", "ascending")
    page.keyboard.press("Enter")
    expect(heading).to_have_attribute("aria-sort", "descending")


def test_a_session_link_opens_it(page, url, http, screen, failures):
    failures.allow(r"^404 .*/v1/sessions/no-such-call/(state|outputs)$")
    sid = STREAMS[2]
    link = f"{url}/ui/#/sessions/{sid}"
    # Followed before signing in, it opens once the key is accepted.
    sign_in(page, link)
    expect(page.locator("#session")).to_be_visible()
    expect(page.locator("#session-id")).to_have_text(sid)
    expect(page).to_have_title(re.compile(f"^{sid} "))
    expect(page.locator("#session-meta")).to_have_text("model seed version 1, seq 2, steps 6")

    page.click("#close-session")
    expect(page.locator("#session")).to_be_hidden()
    assert page.url == f"{url}/ui/"
    page.go_back()  # the link again
    expect(page.locator("#session-id")).to_have_text(sid)

    # The table's ids are those links; one to a session that is not there says so.
    row(page, STREAMS[3]).locator("a").click()
    assert page.url == f"{url}/ui/#/sessions/{STREAMS[3]}"
    expect(page.locator("#session-id")).to_have_text(STREAMS[3])
    page.goto(f"{url}/ui/#/sessions/no-such-call")
    expect(page.locator("#session-error")).to_have_text(
        "this session no longer exists (deleted or expired)"
    )


def test_the_sessions_table_refreshes_while_open(page, url, http, screen):
    sign_in(page, f"{url}/ui")
    seq = row(page, STREAMS[0]).locator("td").nth(3)
    expect(seq).to_have_text("2")
    # Each session's model version, and when it was last active in local time (UTC on hover).
    expect(row(page, STREAMS[0]).locator("td").nth(2)).to_have_text("seed v1")
    last = row(page, STREAMS[0]).locator("td").nth(5)
    expect(last).not_to_contain_text("Z")
    assert last.get_attribute("title").endswith("Z")
    # Latencies in the unit that reads best: at most 3 significant digits (4.15 s, not 4146.67 ms).
    expect(page.locator("#p99")).to_have_text(
        re.compile(r"^(—|\d{1,3}(\.\d{1,2})? ms|\d+\.\d\d s)$")
    )
    for n in (3, 4, 5):
        push(http, STREAMS[0], n)
    http.post("/v1/sessions", json={"session_id": "call-late"})
    try:
        # No click: the listing is read again every 5 s.
        expect(seq).to_have_text("5", timeout=12_000)
        expect(row(page, "call-late")).to_be_visible()
        expect(page.locator("#read-at")).to_contain_text("read at")
    finally:
        http.delete("/v1/sessions/call-late")


def test_the_charts_leave_gaps_where_there_is_no_data(page, url, http, screen):
    sid = STREAMS[1]
    sign_in(page, f"{url}/ui/#/sessions/{sid}")
    expect(page.locator("#outputs-caption")).to_contain_text("up to chunk 2")
    # Three chunks inside one poll interval (2 s): the view never sees at least one of them.
    for n in (3, 4, 5):
        push(http, sid, n)
    expect(page.locator("#outputs-caption")).to_contain_text("up to chunk 5")
    xs, ys = chart(page, "#outputs-chart", "[box.chart.data[0], box.chart.data[1]]")
    gaps = [x for x, y in zip(xs, ys) if y is None]
    assert gaps and all(2 < x < 5 for x in gaps), (xs, ys)
    # The last point stands alone (a gap before it, nothing after): it is marked, or no line shows it.
    marked = chart(page, "#outputs-chart", "box.chart.series[1].points.filter(box.chart, 1, false)")
    assert len(xs) - 1 in marked, marked
    assert "gaps where chunks went unseen" in page.locator("#outputs-chart").get_attribute(
        "aria-label"
    )

    # The last minute had seconds with chunks and seconds without: no chunks is a rate of 0 but
    # no latency at all, so the latency line breaks there while the rate line goes on at 0.
    page.wait_for_function(
        "() => { const d = document.querySelector('#latency-chart').chart.data;"
        " return d[1].includes(null) && d[1].some(v => v !== null); }",
        timeout=15_000,
    )
    times, p99 = chart(page, "#latency-chart", "[box.chart.data[0], box.chart.data[1]]")
    rates = dict(zip(*chart(page, "#chunks-chart", "[box.chart.data[0], box.chart.data[1]]")))
    idle = [rates[t] for t, v in zip(times, p99) if v is None]
    # A second of no chunks is drawn as 0 chunks/s; only a second missing from both is a gap in both.
    assert 0 in idle and set(idle) <= {0, None}, idle
    assert "no data" in page.locator("#latency-chart").get_attribute("aria-label")
