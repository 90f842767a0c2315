"""/docs and /redoc in a real headless Chromium with every request outside the server refused: they
render from the package's own files, offline, and list the operations."""

import pytest

from app.model.loader import load_model
from harness.servers import serve_in_thread
from tests.support.browser import unplug

pytestmark = pytest.mark.browser  # Chromium, through Playwright


@pytest.fixture(scope="module")
def url():
    with serve_in_thread(load_model("seed")) as url:
        yield url


@pytest.mark.parametrize(
    "page_path, operation", [("/docs", ".opblock"), ("/redoc", "[data-section-id]")]
)
def test_the_api_docs_render_with_the_network_unplugged(browser, url, page_path, operation):
    context = browser.new_context()
    page = context.new_page()
    outside = unplug(page, url)
    page.goto(url + page_path)
    page.wait_for_selector(operation, timeout=20_000)
    shown = page.locator(operation).count()
    context.close()
    assert shown >= 20, f"{page_path} lists {shown} operations"
    # Nothing the page needs comes from outside; ReDoc's sidebar asks for its maker's logo (an
    # image; refused, the page is whole without it).
    assert [u for u in outside if u != "https://cdn.redoc.ly/redoc/logo-mini.svg"] == [], outside
