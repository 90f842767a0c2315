"""An expired session is gone at once, to every call: no chunk brings it back before its store
removes it (the memory store's sweep, Redis's own expiry)."""

import asyncio
import time

import httpx
import numpy as np
import pytest

from app.errors import SessionNotFound
from app.model.loader import load_model
from app.sessions.service import SessionService
from app.store.memory import MemoryStore
from harness.servers import serve_in_thread
from tests.support.stores import start_engine


@pytest.fixture(scope="module")
def seed():
    return load_model("seed")


def test_a_chunk_for_an_expired_session_is_not_found_before_the_sweep_removes_it(seed):
    # The sweeper is not started: between expiry and the sweep, nothing may touch the session.
    async def main():
        engine, versions = await start_engine(
            seed, MemoryStore(4), max_batch=4, max_queue=16, warm=(4, 4)
        )
        sessions = SessionService(engine, versions, default_ttl_s=0)
        try:
            record = await sessions.create("brief", ttl_s=0.05)
            await sessions.submit("brief", np.ones((2, 1), np.float32))
            await asyncio.sleep(0.1)
            for attempt in (
                sessions.get("brief"),
                sessions.submit("brief", np.ones((2, 1), np.float32)),
                sessions.reset("brief"),
                sessions.state("brief"),
                sessions.get("brief"),
            ):
                with pytest.raises(SessionNotFound):
                    await attempt
            assert (record.seq, record.steps) == (1, 2)  # the late chunk changed nothing
            assert await sessions.sweep() == 1
        finally:
            await engine.stop()

    asyncio.run(main())


def test_over_http_an_expired_session_stays_404(seed):
    # The attack as seen: after the TTL a GET answered 404, then a chunk 200 and the GET 200 again.
    with serve_in_thread(seed) as url, httpx.Client(base_url=url) as http:
        for attempt in range(5):
            sid = http.post("/v1/sessions", json={"ttl_s": 0.2}).json()["session_id"]
            time.sleep(0.25)
            answers = [
                http.get(f"/v1/sessions/{sid}"),
                http.post(f"/v1/sessions/{sid}/chunks", json={"inputs": [1.0]}),
                http.get(f"/v1/sessions/{sid}"),
                http.get(f"/v1/sessions/{sid}/state"),
            ]
            assert [a.status_code for a in answers] == [404] * 4, (
                attempt,
                [a.text for a in answers],
            )
