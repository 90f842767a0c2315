"""Loading a version off the hot path: the file read, the step built and warmed on a thread of its
own (never the model thread, so serving goes on meanwhile), a failure kept with its reason."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.model.repository import Source
from app.sessions.versions.entry import Version

log = logging.getLogger("app.sessions.versions")


async def load(
    entry: Version, source: Source, loader: Callable[[Source], Any], warm_shapes: tuple[int, int]
) -> Any | None:
    """The model of ``source``, built and warmed; None if it failed (``entry`` then says why, as
    the repository names the file, and remembers which file failed: it is tried again once it
    changes)."""
    started = time.perf_counter()
    try:
        model = await asyncio.to_thread(_build, source, loader, warm_shapes)
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        # Callers see the file by its place in the repository; the log has the server's path.
        shown = (
            message.replace(str(Path(source.location)), in_repository(source))
            if Path(source.location).suffix == ".keras"  # a file, not a built-in's name
            else message
        )
        entry.state, entry.error, entry.failed_stamp = "failed", shown, source.stamp
        log.error(
            "model %s version %d failed to load, and is not served: %s",
            entry.name,
            entry.version,
            message,
        )
        return None
    log.info(
        "model %s version %d loaded, compiled and warmed in %.1f s",
        entry.name,
        entry.version,
        time.perf_counter() - started,
    )
    return model


def _build(source: Source, loader: Callable[[Source], Any], warm_shapes: tuple[int, int]) -> Any:
    """On a thread of its own: read the file, build the step, warm it."""
    model = loader(source)
    model.warm(*warm_shapes)
    return model


def in_repository(source: Source) -> str:
    """A version's file as the repository names it (``lstm/2/model.keras``), not as a server path."""
    return f"{source.name}/{source.version}/{Path(source.location).name}"
