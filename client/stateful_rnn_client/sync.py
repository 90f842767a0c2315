"""The synchronous client: the asynchronous one, run on an event loop of its own in a thread, so
that both behave the same (numbering, retries, reconnects) with one implementation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import numpy as np

from stateful_rnn_client.aio import AsyncClient, AsyncSession, AsyncStream

T = TypeVar("T")


class _Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="stateful-rnn-client", daemon=True
        )
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class Client:
    """A connection to one stateful-rnn server; see :class:`AsyncClient` for the options."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 10,
        backoff: float = 0.05,
        max_backoff: float = 5.0,
    ):
        options = {
            "timeout": timeout,
            "retries": retries,
            "backoff": backoff,
            "max_backoff": max_backoff,
        }
        self._loop = _Loop()
        self._async = self._loop.run(_make(url, api_key, options))
        self._closed = False

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.run(self._async.aclose())
        self._loop.stop()

    def model(self) -> dict[str, Any]:
        """The served model: features, output, recurrent layers, limits."""
        return self._loop.run(self._async.model())

    def models(self) -> list[dict[str, Any]]:
        """Every model the server serves, with its versions, their states and live sessions."""
        return self._loop.run(self._async.models())

    def create_session(
        self,
        session_id: str | None = None,
        ttl_s: float | None = None,
        model: str | None = None,
        version: int | None = None,
    ) -> Session:
        """A new session (random id unless ``session_id`` is given)."""
        return Session(
            self._loop,
            self._loop.run(self._async.create_session(session_id, ttl_s, model, version)),
        )

    def session(self, session_id: str) -> Session:
        """An existing session, continuing from its last applied chunk."""
        return Session(self._loop, self._loop.run(self._async.session(session_id)))


class Session:
    """One stream's session; see :class:`AsyncSession`."""

    def __init__(self, loop: _Loop, session: AsyncSession):
        self._loop, self._async = loop, session

    @property
    def id(self) -> str:
        return self._async.id

    @property
    def seq(self) -> int:
        return self._async.seq

    @property
    def info(self) -> dict[str, Any]:
        return self._async.info

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Apply ``chunk`` and return its outputs; numbered, retried, applied once."""
        return self._loop.run(self._async.push(chunk))

    def reset(self) -> dict[str, Any]:
        return self._loop.run(self._async.reset())

    def refresh(self) -> dict[str, Any]:
        return self._loop.run(self._async.refresh())

    def state(self) -> dict[str, Any]:
        return self._loop.run(self._async.state())

    def set_state(self, document: dict[str, Any]) -> dict[str, Any]:
        return self._loop.run(self._async.set_state(document))

    def delete(self) -> None:
        self._loop.run(self._async.delete())

    def stream(self, binary: bool = False) -> Stream:
        """A WebSocket stream: ``with session.stream() as s: s.send(chunk)``."""
        return Stream(self._loop, self._async.stream(binary))


class Stream:
    """A WebSocket stream; see :class:`AsyncStream`."""

    def __init__(self, loop: _Loop, stream: AsyncStream):
        self._loop, self._async = loop, stream

    def __enter__(self) -> Stream:
        self._loop.run(self._async.__aenter__())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._loop.run(self._async.close())

    def send(self, chunk: np.ndarray) -> np.ndarray:
        return self._loop.run(self._async.send(chunk))

    def command(self, op: str) -> dict[str, Any]:
        return self._loop.run(self._async.command(op))


async def _make(url: str, api_key: str | None, options: dict[str, Any]) -> AsyncClient:
    return AsyncClient(url, api_key, **options)  # httpx binds to the loop that creates it
