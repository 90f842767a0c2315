"""Make docs/console.png: the operations console over a server under a little load.

    .venv/bin/python scripts/console_screenshot.py [--out docs/console.png]

Needs Chromium at /usr/bin/chromium (or SRNN_TEST_CHROMIUM). Serves the default model with keys,
streams chunks into 60 sessions for a few seconds, opens one session and takes the picture.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.model.loader import load_model  # noqa: E402
from harness.servers import ROOT, serve_in_thread  # noqa: E402

ADMIN = "admin-key-screenshot"
TENANTS = {"desk-a": "desk-a-key-0001", "desk-b": "desk-b-key-0002", "fleet": "fleet-key-00003"}


def load(url: str, ids: list[tuple[str, str]], stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        tick = 0
        while not stop.is_set():
            for n, (sid, key) in enumerate(ids):
                inputs = [math.sin(0.3 * (tick + k) + n) + 0.05 * n for k in range(10)]
                client.post(
                    f"/v1/sessions/{sid}/chunks",
                    json={"inputs": inputs},
                    headers={"Authorization": f"Bearer {key}"},
                )
            tick += 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "console.png"))
    out = Path(parser.parse_args().out)
    from playwright.sync_api import expect, sync_playwright

    api_keys = ",".join(f"{t}:{k}" for t, k in TENANTS.items())
    with serve_in_thread(
        load_model("default"), admin_keys=ADMIN, api_keys=api_keys, capacity=256
    ) as url:
        ids = []
        for i in range(60):
            tenant, key = list(TENANTS.items())[i % 3]
            sid = f"{tenant}-stream-{i:02d}"
            httpx.post(
                f"{url}/v1/sessions",
                json={"session_id": sid},
                headers={"Authorization": f"Bearer {key}"},
            )
            ids.append((sid, key))
        stop = threading.Event()
        workers = [threading.Thread(target=load, args=(url, ids[i::3], stop)) for i in range(3)]
        for worker in workers:
            worker.start()
        try:
            with sync_playwright() as playwright:
                chromium = os.environ.get("SRNN_TEST_CHROMIUM", "/usr/bin/chromium")
                browser = playwright.chromium.launch(executable_path=chromium, headless=True)
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.goto(f"{url}/ui")
                page.fill("#key-input", ADMIN)
                page.click("#key-submit")
                expect(page.locator("#load-status")).to_contain_text("60 sessions")
                page.click("#session-table tbody tr[data-sid='desk-b-stream-04'] button")
                time.sleep(14)  # sparklines fill, outputs gather
                page.click("#refresh")
                page.fill("#filter", "desk-b")
                time.sleep(1)
                out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(out), full_page=True)
                browser.close()
        finally:
            stop.set()
            for worker in workers:
                worker.join()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
