"""Make docs/console.png (a 1920 px wall display) and docs/console-phone.png (a 360 px phone):
the operations console over a server under a little load.

    .venv/bin/python scripts/console_screenshot.py [--out-dir docs]

Needs Chromium at /usr/bin/chromium (or SRNN_TEST_CHROMIUM). Serves the default model with keys,
streams chunks into 60 sessions, pauses the load for a few seconds (the latency chart shows the
gap), opens one session by its link and takes the pictures.
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


def load(url: str, ids: list[tuple[str, str]], stop: threading.Event, run: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        tick = 0
        while not stop.is_set():
            run.wait()
            for n, (sid, key) in enumerate(ids):
                inputs = [math.sin(0.3 * (tick + k) + n) + 0.05 * n for k in range(10)]
                client.post(
                    f"/v1/sessions/{sid}/chunks",
                    json={"inputs": inputs},
                    headers={"Authorization": f"Bearer {key}"},
                )
            tick += 10


SCREENS = {"console.png": (1920, 1080), "console-phone.png": (360, 740)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=str(ROOT / "docs"))
    out = Path(parser.parse_args().out_dir)
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
        stop, run = threading.Event(), threading.Event()
        run.set()
        workers = [
            threading.Thread(target=load, args=(url, ids[i::3], stop, run)) for i in range(3)
        ]
        for worker in workers:
            worker.start()
        try:
            time.sleep(8)
            run.clear()  # a quiet spell: no chunks, no latency
            time.sleep(6)
            run.set()
            time.sleep(10)
            with sync_playwright() as playwright:
                chromium = os.environ.get("SRNN_TEST_CHROMIUM", "/usr/bin/chromium")
                browser = playwright.chromium.launch(executable_path=chromium, headless=True)
                for name, (width, height) in SCREENS.items():
                    page = browser.new_page(viewport={"width": width, "height": height})
                    page.goto(f"{url}/ui/#/sessions/desk-b-stream-04")
                    page.fill("#key-input", ADMIN)
                    page.click("#key-submit")
                    expect(page.locator("#load-status")).to_contain_text("60 sessions")
                    page.fill("#filter", "desk-b")
                    time.sleep(7)  # outputs gather
                    page.screenshot(path=str(out / name), full_page=True)
                    page.close()
                browser.close()
        finally:
            stop.set()
            run.set()
            for worker in workers:
                worker.join()
    print(f"wrote {', '.join(str(out / name) for name in SCREENS)}")


if __name__ == "__main__":
    main()
