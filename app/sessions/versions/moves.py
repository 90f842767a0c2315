"""Where a retirement moves a version's sessions (``reset``, ``carry``), and the moves: each an
action in its session's line (:meth:`Engine.exclusive`), so every chunk before it ran on the old
version and every chunk after it runs on the new one."""

from __future__ import annotations

import asyncio

from app.engine import Engine
from app.errors import Conflict, Unavailable
from app.sessions.versions.entry import LOADING_RETRY_S, Version

MOVES_AT_ONCE = 256


def check_target(entry: Version, target: Version | None, mode: str) -> Version:
    """``target`` (the model's newest other ready version, None if there is none), if ``entry``'s
    sessions may move there: its streams look the same to clients and, to carry, its state rows
    are the same; else the Conflict (or 503 while ``entry`` is not loaded here) that says why."""
    if target is None:
        raise Conflict(
            f"model {entry.name!r} has no other ready version to move the sessions of "
            f"version {entry.version} to: load one first, or retire with drain"
        )
    newest = target.version
    if not entry.serving:
        raise Unavailable(
            f"version {entry.version} of {entry.name!r} is not loaded on this replica; retry once it is",
            retry_after=LOADING_RETRY_S,
        )
    if entry.spec.streams_like != target.spec.streams_like:
        raise Conflict(
            f"version {newest} of {entry.name!r} takes other inputs or gives other outputs than "
            f"version {entry.version}: its streams cannot move there; retire with drain"
        )
    if mode == "carry" and entry.spec.layout != target.spec.layout:
        raise Conflict(
            f"version {newest} of {entry.name!r} has another state layout than version "
            f"{entry.version}: a state cannot be carried over; retire with reset or drain"
        )
    return target


async def move_all(engine: Engine, source: Version, target: Version, keep_state: bool) -> int:
    """Move every session of ``source`` to ``target`` (on every replica's store: the ids are the
    store's), each in its turn in its line; how many moved."""
    store = engine.store

    async def move(session_id: str) -> bool | None:
        return await engine.exclusive(
            session_id,
            lambda: store.migrate(session_id, source.key, target.key, keep_state),
        )

    moved = 0
    ids = await store.sessions_of(source.key)
    for start in range(0, len(ids), MOVES_AT_ONCE):
        results = await asyncio.gather(*(move(i) for i in ids[start : start + MOVES_AT_ONCE]))
        moved += sum(1 for result in results if result)
    return moved
