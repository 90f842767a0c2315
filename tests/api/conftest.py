import httpx
import pytest

from harness.servers import serve_process
from tests.support.contract import LIMIT_FLAGS


@pytest.fixture(scope="session", params=[0, 2], ids=["one process", "2 workers"])
def seed_url(request):
    """``stateful-rnn serve --model seed`` as its own process, with small limits to test them: in
    one process, and as an engine process with two API workers (every test using it runs on both)."""
    with serve_process("--model", "seed", *LIMIT_FLAGS, "--workers", str(request.param)) as url:
        yield url


@pytest.fixture()
def client(seed_url):
    with httpx.Client(base_url=seed_url, timeout=30) as client:
        yield client
