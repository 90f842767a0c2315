import httpx
import pytest

from tests.support.servers import serve_process

SEED_LIMITS = ("--max-chunk-steps", "64", "--max-body-bytes", "8192")


@pytest.fixture(scope="session")
def seed_url():
    """``stateful-rnn serve --model seed`` as its own process, with small limits to test them."""
    with serve_process("--model", "seed", *SEED_LIMITS) as url:
        yield url


@pytest.fixture()
def client(seed_url):
    with httpx.Client(base_url=seed_url, timeout=30) as client:
        yield client
