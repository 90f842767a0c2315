"""Background jobs of the sessions layer (the expiry sweep, reading the model repository)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)


async def every(seconds: float, job: Callable[[], Awaitable[Any]], failing: str) -> None:
    """Run ``job`` every ``seconds`` until cancelled. A failure is logged as ``failing`` and the
    next run comes as usual: a store that is down now may be back by then."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await job()
        except Exception:
            log.warning(failing, exc_info=True)
