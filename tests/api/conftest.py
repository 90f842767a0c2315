import httpx
import pytest

from tests.support.servers import serve_process

SEED_LIMITS = ("--max-chunk-steps", "64", "--max-body-bytes", "8192")


@pytest.fixture(scope="session", params=[0, 2], ids=["one process", "2 workers"])
def seed_url(request):
    """``stateful-rnn serve --model seed`` as its own process, with small limits to test them: in
    one process, and as an engine process with two API workers (every test using it runs on both)."""
    with serve_process("--model", "seed", *SEED_LIMITS, "--workers", str(request.param)) as url:
        yield url


@pytest.fixture()
def client(seed_url):
    with httpx.Client(base_url=seed_url, timeout=30) as client:
        yield client
