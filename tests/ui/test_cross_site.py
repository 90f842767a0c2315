"""The attack for real: a page of another site, in a real Chromium, tries to drive a server on
this machine in open dev mode with what a browser sends without asking (a text/plain or untyped
no-cors POST, a WebSocket). Nothing it sends changes anything."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from app.model.loader import load_model
from harness.servers import serve_in_thread

pytestmark = pytest.mark.browser  # Chromium, through Playwright

ATTACK = """<!doctype html><script>
const target = "%(target)s";
async function attack() {
  const send = (path, options) => fetch(target + path, {method: "POST", mode: "no-cors", ...options}).catch(() => null);
  await send("/v1/sessions", {headers: {"Content-Type": "text/plain"}, body: '{"session_id": "evil"}'});
  await send("/v1/sessions/victim/chunks", {body: new Blob(['{"inputs": [9.0, 9.0]}'])});
  await send("/v1/sessions/victim/reset", {});
  await new Promise((done) => {
    const ws = new WebSocket(target.replace("http", "ws") + "/v1/sessions/victim/stream");
    ws.onopen = () => { ws.send('{"op": "reset"}'); setTimeout(done, 300); };
    ws.onerror = ws.onclose = () => done();
  });
  document.title = "done";
}
attack();
</script>"""


@pytest.fixture()
def attacker_page():
    """Another site: a page served from localhost on a port of its own (the server is 127.0.0.1)."""
    pages = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = pages["attack"].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield pages, f"http://localhost:{server.server_address[1]}/"
    server.shutdown()


def test_a_page_of_another_site_changes_nothing(page, failures, attacker_page):
    failures.allow(r"WebSocket connection to .* failed")
    failures.allow(r"Failed to load resource")
    pages, attacker = attacker_page
    with serve_in_thread(load_model("seed")) as url, httpx.Client(base_url=url) as http:
        http.post("/v1/sessions", json={"session_id": "victim"})
        http.post("/v1/sessions/victim/chunks", json={"inputs": [1.0, 2.0]})
        pages["attack"] = ATTACK % {"target": url}
        page.goto(attacker)
        page.wait_for_function("document.title === 'done'", timeout=15_000)
        victim = http.get("/v1/sessions/victim").json()
        assert (victim["seq"], victim["steps"]) == (1, 2)
        assert http.get("/v1/sessions/evil").status_code == 404
