"""The fast tier: the app in this process, called through Starlette's TestClient (httpx over ASGI,
no socket), for route contracts, errors and schemas. ``make test-fast`` runs this folder alone; the
same tests run again against real server processes in tests/api/test_contracts_served.py."""

import pytest
from starlette.testclient import TestClient

from app.config import Settings
from app.main import create_app
from harness.waiting import wait_for
from tests.support.contract import LIMITS


@pytest.fixture(scope="session")
def app():
    return create_app(Settings(model="seed", xla=False, **LIMITS))


@pytest.fixture(scope="session")
def client(app):
    with TestClient(app, raise_server_exceptions=False) as client:  # lifespan: the engine starts
        wait_for(
            lambda: client.get("/readyz").status_code == 200, "the model's warm-up", 60, errors=()
        )
        yield client
