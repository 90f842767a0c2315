"""Stores and engines as the service builds them, for tests that drive a layer directly."""

from __future__ import annotations

from app.engine import Engine
from app.model.repository import Repository
from app.sessions.rules import admission
from app.sessions.versions import Versions
from app.store.memory import MemoryStore

KEY = "m/1"  # the one model version of a store made here


def memory_store(capacity: int, state_units: list[int], **options) -> MemoryStore:
    """A memory store with one model version, ``KEY``."""
    store = MemoryStore(capacity, **options)
    store.add_model(KEY, "sha256:test", state_units)
    return store


async def start_engine(
    model, store, *, max_batch: int = 8, max_queue: int = 64, warm: tuple[int, int] = (8, 8)
) -> tuple[Engine, Versions]:
    """An engine serving ``model`` (warmed) from ``store``, with the session rules; stop it with
    ``engine.stop()``."""
    engine = Engine(store, max_batch=max_batch, max_queue=max_queue)
    versions = Versions(
        Repository(single=model.spec.name), engine, loader=None, warm_shapes=warm, poll_s=0
    )
    versions.preload([model])
    engine.admit = admission(versions)  # as SessionService sets them
    engine.start()
    await versions.start()
    return engine, versions


def only_model(store) -> str:
    """The key of the one model version ``store`` has a table for."""
    (key,) = store.tables
    return key
