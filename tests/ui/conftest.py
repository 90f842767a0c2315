"""A real headless Chromium (the system's, driven by Playwright: no browser download)."""

import os
import re
import shutil
from pathlib import Path

import pytest

from harness.servers import ROOT

CHROMIUM = os.environ.get("SRNN_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="package")
def browser():
    # Package scope: Playwright's sync API keeps an event loop running in this thread while it is
    # open, and any later test's asyncio.run would fail; it closes when tests/ui is done.
    if not Path(CHROMIUM).exists():
        pytest.skip("needs Chromium (apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


class Failures:
    """What went wrong in a page: script errors, Content-Security-Policy refusals and failed
    responses. Refused keys (401, 403) are expected everywhere; a test names any other failure it
    provokes on purpose with ``allow``."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.allowed = [re.compile(r"^40[13] ")]

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [text for text in self.seen if not any(p.search(text) for p in self.allowed)]


@pytest.fixture()
def failures() -> Failures:
    return Failures()


@pytest.fixture()
def viewport() -> dict[str, int]:
    """The screen the page is shown on; a test module overrides it to try others."""
    return {"width": 1280, "height": 900}


@pytest.fixture()
def page(browser, failures, viewport):
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    seen = failures.seen
    page.on("pageerror", lambda exc: seen.append(str(exc)))
    # A failed response is logged twice: as a response (checked here, with its URL) and on the console.
    page.on(
        "console",
        lambda m: seen.append(m.text) if m.type == "error" and "status of" not in m.text else None,
    )
    page.on("response", lambda r: seen.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    yield page
    context.close()
    # A script error or a Content-Security-Policy refusal shows here.
    assert not failures.unexpected(), failures.unexpected()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
