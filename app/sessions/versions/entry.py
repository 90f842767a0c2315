"""A model version as this replica knows it: its state, its model while loaded, its spec, and
why it failed if it did."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from app.errors import ServiceError, Unavailable
from app.model.spec import ModelSpec, model_key

MODES = ("drain", "reset", "carry")  # what a retirement does with the version's sessions
STATES = ("loading", "ready", "retiring", "failed", "unloaded", "retired")
LOADING_RETRY_S = 2  # the Retry-After of a session whose version is still loading here


@dataclass(eq=False)
class Version:
    name: str
    version: int
    state: str = "unloaded"
    model: Any = None  # the StreamingModel, while loaded
    spec: ModelSpec | None = None  # kept after unloading, to describe it
    error: str | None = None
    failed_stamp: tuple[int, int] | None = None  # the file that failed; tried again once it changes
    loading: asyncio.Task | None = None

    @property
    def key(self) -> str:
        return model_key(self.name, self.version)

    @property
    def serving(self) -> bool:
        return self.model is not None


def unavailable(entry: Version) -> ServiceError:
    """The 503 for a session of a version that is loading on this replica, or failed to."""
    if entry.state == "failed":
        return Unavailable(
            f"model {entry.name} version {entry.version} failed to load on this replica: {entry.error}",
            retry_after=30,
        )
    return Unavailable(
        f"model {entry.name} version {entry.version} is loading on this replica; retry",
        retry_after=LOADING_RETRY_S,
    )
