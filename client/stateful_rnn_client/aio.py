"""The asynchronous client: sessions, chunks and streams, with NumPy arrays in and out.

Every chunk carries a ``seq`` that the client numbers itself, so a chunk whose answer was lost (a
dropped connection, a replica that died, a 503) is simply sent again: the server applies it once and
answers a repeat with the stored response.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import orjson
import websockets
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from stateful_rnn_client.errors import (
    ClientError,
    ConnectionFailed,
    SeqConflict,
    ServerError,
    SessionGone,
)

log = logging.getLogger("stateful_rnn_client")


class AsyncClient:
    """A connection to one stateful-rnn server (or a load balancer in front of replicas).

    A call that meets a connection error or a 503 is tried again, with exponential backoff
    (honouring ``Retry-After``) from ``backoff`` up to ``max_backoff`` seconds, at most ``retries``
    times and never past ``timeout`` seconds from its start: ``timeout`` bounds the whole call,
    retries included. Each retry is logged (logger ``stateful_rnn_client``, level INFO).
    """

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
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.retries, self.backoff, self.max_backoff = retries, backoff, max_backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout)
        self._model: dict[str, Any] | None = None
        self._versions: dict[tuple[str, int], dict[str, Any]] = {}

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def model(self) -> dict[str, Any]:
        """The model version new sessions get by default (a server of one model): features,
        output, recurrent layers, limits (asked once)."""
        if self._model is None:
            self._model = (await self.request("GET", "/v1/model")).json()
        return self._model

    async def models(self) -> list[dict[str, Any]]:
        """Every model the server serves, with its versions, their states and live sessions."""
        return (await self.request("GET", "/v1/models")).json()["models"]

    async def version(self, name: str, version: int) -> dict[str, Any]:
        """One model version's layout: features, output, recurrent layers (asked once)."""
        if (name, version) not in self._versions:
            document = (await self.request("GET", f"/v1/models/{name}")).json()
            for found in document["versions"]:
                if found["fingerprint"] is not None:
                    self._versions[(name, found["version"])] = found
        return self._versions[(name, version)]

    async def create_session(
        self,
        session_id: str | None = None,
        ttl_s: float | None = None,
        model: str | None = None,
        version: int | None = None,
    ) -> AsyncSession:
        """A new session (a random id unless ``session_id`` is given), running ``model``'s
        ``version`` (default: the server's only model, its newest version)."""
        # The id is chosen here, so that a retry after a lost answer cannot make a second session:
        # a 409 after an uncertain attempt is the session that attempt made.
        chosen = session_id or secrets.token_urlsafe(16)
        options = (("session_id", chosen), ("ttl_s", ttl_s), ("model", model), ("version", version))
        body = {k: v for k, v in options if v is not None}
        attempt = Attempt()
        try:
            info = (await self.request("POST", "/v1/sessions", attempt, json=body)).json()
        except ServerError as exc:
            if exc.status != 409 or not attempt.uncertain or session_id is not None:
                raise
            info = (await self.request("GET", f"/v1/sessions/{chosen}")).json()
        return AsyncSession(self, info)

    async def session(self, session_id: str) -> AsyncSession:
        """An existing session, continuing from its last applied chunk."""
        return AsyncSession(self, (await self.request("GET", f"/v1/sessions/{session_id}")).json())

    async def request(
        self, method: str, path: str, attempt: Attempt | None = None, **kwargs: Any
    ) -> httpx.Response:
        """One API call, retried on connection errors and 503 within the deadline; other errors
        raise ServerError. ``attempt`` learns whether a try may have reached the server and been
        lost on the way back."""
        attempt = attempt or Attempt()
        retrying = self.retrying(f"{method} {path}")
        while True:
            try:
                response = await self._http.request(method, path, timeout=retrying.left(), **kwargs)
            except httpx.TransportError as exc:
                if not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
                    attempt.uncertain = True  # sent, perhaps applied, answer lost
                if not await retrying.again(_reason(exc)):
                    raise ConnectionFailed(self.url, _reason(exc)) from exc
                continue
            if response.status_code == 503:
                problem = _problem(response)
                if await retrying.again(
                    f"503 {problem.get('detail', '')}", response.headers.get("retry-after")
                ):
                    continue
            if response.status_code >= 400:
                raise ServerError.from_problem(response.status_code, _problem(response))
            return response

    def retrying(self, what: str) -> Retrying:
        """The retry budget of one call: ``retries`` tries more, within ``timeout`` seconds."""
        return Retrying(self, what, asyncio.get_running_loop().time() + self.timeout)

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        wait = min(self.max_backoff, self.backoff * 2**attempt) * (0.5 + random.random() / 2)
        if retry_after and retry_after.isascii() and retry_after.isdigit():
            wait = max(wait, min(float(retry_after), self.max_backoff))
        return wait

    def ws_url(self, path: str) -> str:
        return "ws" + self.url[len("http") :] + path


class AsyncSession:
    """One stream's session. ``seq`` is the number of the last chunk applied."""

    def __init__(self, client: AsyncClient, info: dict[str, Any]):
        self.client = client
        self.id: str = info["session_id"]
        self.info = info
        # The seq of a chunk sent whose answer was lost: a replay of it is ours.
        self.uncertain_seq: int | None = None

    @property
    def seq(self) -> int:
        return self.info["seq"]

    async def model(self) -> dict[str, Any]:
        """The layout of the model version this session runs (as its last info says)."""
        ref = self.info.get("model")
        if ref is None:  # a server from before versions
            return await self.client.model()
        return await self.client.version(ref["name"], ref["version"])

    async def push(self, chunk: np.ndarray) -> np.ndarray:
        """Apply ``chunk`` ([T, F], or [T] for one feature) and return the model's outputs for it:
        [T, size] for a per-step model, else [size]. Safe to call again after any failure."""
        seq = self.seq + 1
        body = orjson.dumps(
            {"inputs": _floats(chunk), "seq": seq}, option=orjson.OPT_SERIALIZE_NUMPY
        )
        attempt = Attempt(uncertain=self.uncertain_seq == seq)
        try:
            response = await self.client.request(
                "POST",
                f"/v1/sessions/{self.id}/chunks",
                attempt,
                content=body,
                headers={"Content-Type": "application/json"},
            )
        except ClientError:
            if attempt.uncertain:
                self.uncertain_seq = seq  # a later push of this chunk may meet its own replay
            raise
        self.uncertain_seq = None
        if response.headers.get("x-replayed") == "true" and not attempt.uncertain:
            # A replay of a seq no attempt of ours can have applied: another writer took it.
            raise SeqConflict(
                409,
                {"detail": f"chunk {seq} was applied by another writer", "expected_seq": seq + 1},
            )
        answer = response.json()
        self.info.update(seq=answer["seq"], steps=answer["steps"])
        return np.asarray(answer["outputs"], np.float32)

    async def reset(self) -> dict[str, Any]:
        """Zero the state (as Keras ``reset_states()``); ``seq`` goes on counting."""
        self.info = (await self.client.request("POST", f"/v1/sessions/{self.id}/reset")).json()
        return self.info

    async def refresh(self) -> dict[str, Any]:
        self.info = (await self.client.request("GET", f"/v1/sessions/{self.id}")).json()
        return self.info

    async def state(self) -> dict[str, Any]:
        """The state document: per recurrent layer, its row of ``layer.states``."""
        return (await self.client.request("GET", f"/v1/sessions/{self.id}/state")).json()

    async def set_state(self, document: dict[str, Any]) -> dict[str, Any]:
        """Set the state from a document of ``state()``'s shape (for example another session's)."""
        self.info = (
            await self.client.request("PUT", f"/v1/sessions/{self.id}/state", json=document)
        ).json()
        return self.info

    async def delete(self) -> None:
        attempt = Attempt()
        try:
            await self.client.request("DELETE", f"/v1/sessions/{self.id}", attempt)
        except SessionGone:
            if not attempt.uncertain:  # else an earlier try deleted it and the answer was lost
                raise

    def stream(self, binary: bool = False) -> AsyncStream:
        """A WebSocket stream of this session: ``async with session.stream() as s: await s.send(x)``.

        JSON messages carry ``seq``: a dropped connection is reopened and the chunk in flight sent
        again, applied once. ``binary=True`` sends raw float32 frames (fastest, no ``seq``): a
        dropped connection then raises, since whether the chunk in flight was applied is unknown.
        """
        return AsyncStream(self, binary)


class AsyncStream:
    def __init__(self, session: AsyncSession, binary: bool):
        self.session = session
        self.binary = binary
        self._socket: Any = None
        self._lock = asyncio.Lock()  # one message in flight: replies must pair with their sends
        # A chunk message whose send was cancelled: it may have been applied. The next send
        # settles it first (it is then applied exactly once; its outputs are lost).
        self._unsettled: str | None = None

    async def __aenter__(self) -> AsyncStream:
        await self._connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._socket is not None:
            await self._socket.close()
            self._socket = None

    async def _connect(self, retrying: Retrying | None = None) -> None:
        client = self.client
        headers = {"Authorization": f"Bearer {client.api_key}"} if client.api_key else None
        url = client.ws_url(f"/v1/sessions/{self.session.id}/stream")
        retrying = retrying or client.retrying(f"WebSocket {url}")
        while True:
            try:
                self._socket = await connect(
                    url, additional_headers=headers, max_size=None, open_timeout=retrying.left()
                )
                return
            except (OSError, websockets.InvalidHandshake, asyncio.TimeoutError) as exc:
                if not await retrying.again(_reason(exc)):
                    if isinstance(exc, websockets.InvalidHandshake):  # refused: classified as such
                        raise
                    raise ConnectionFailed(url, _reason(exc)) from exc

    @property
    def client(self) -> AsyncClient:
        return self.session.client

    async def send(self, chunk: np.ndarray) -> np.ndarray:
        """Apply ``chunk`` and return its outputs, as :meth:`AsyncSession.push` does."""
        array = _floats(chunk)
        if self.binary:
            output = (await self.session.model())["output"]
            reply = await self._exchange(array.astype("<f4").tobytes(), resend=False)
            if isinstance(reply, bytes):
                self.session.info["seq"] += 1  # binary frames carry no seq: counted, not checked
                values = np.frombuffer(reply, "<f4").copy()
                return values.reshape(-1, output["size"]) if output["per_step"] else values
            _raise(orjson.loads(reply))
        if self._unsettled is not None:
            settled = orjson.loads(await self._exchange(self._unsettled, resend=True))
            self._unsettled = None
            if settled.get("op") == "error":
                _raise(settled)
            self.session.info.update(seq=settled["seq"], steps=settled["steps"])
        seq = self.session.seq + 1
        message = orjson.dumps(
            {"inputs": array, "seq": seq}, option=orjson.OPT_SERIALIZE_NUMPY
        ).decode()
        try:
            answer = orjson.loads(await self._exchange(message, resend=True))
        except asyncio.CancelledError:
            self._unsettled = message
            raise
        if answer.get("op") == "error":
            _raise(answer)
        if answer["seq"] != seq:
            raise SeqConflict(
                409,
                {
                    "detail": f"sent chunk {seq}, got the answer of {answer['seq']}",
                    "expected_seq": answer["seq"] + 1,
                },
            )
        self.session.info.update(seq=answer["seq"], steps=answer["steps"])
        return np.asarray(answer["outputs"], np.float32)

    async def command(self, op: str) -> dict[str, Any]:
        """``reset`` or ``state`` over the stream."""
        answer = orjson.loads(await self._exchange(orjson.dumps({"op": op}).decode(), resend=True))
        if answer.get("op") == "error":
            _raise(answer)
        if op == "reset":
            self.session.info = answer["session"]
        return answer

    async def _exchange(self, message: str | bytes, resend: bool) -> str | bytes:
        """Send one message and take its reply. A dropped connection is reopened and, if
        ``resend`` (the message carries a seq), the message sent again; a 503 is always retried
        (nothing was applied)."""
        async with self._lock:
            return await self._exchange_locked(message, resend)

    async def _exchange_locked(self, message: str | bytes, resend: bool) -> str | bytes:
        retrying = self.client.retrying(f"WebSocket session {self.session.id}")
        while True:
            try:
                if self._socket is None:
                    await self._connect(retrying)
                await self._socket.send(message)
                reply = await self._socket.recv()
            except BaseException as exc:
                # Whatever broke between send and reply (a drop, a cancellation, a timeout), the
                # reply may still come: this socket is no longer in step, so it is dropped.
                socket, self._socket = self._socket, None
                if socket is not None and not isinstance(exc, ConnectionClosed):
                    await asyncio.shield(socket.close())
                if not isinstance(exc, ConnectionClosed):
                    raise
                closed = exc
                code = closed.rcvd.code if closed.rcvd else None
                if code == 4404:
                    raise SessionGone(404, {"detail": closed.rcvd.reason}) from None
                if code == 4401:
                    raise ServerError(401, {"detail": closed.rcvd.reason}) from None
                if not resend:  # a binary chunk carries no seq: sent again, it could apply twice
                    raise ConnectionFailed(
                        self.client.url, "the connection closed with a binary chunk unanswered"
                    ) from exc
                if not await retrying.again("the connection closed"):
                    raise ConnectionFailed(self.client.url, "the connection kept closing") from exc
                continue
            if isinstance(reply, str) and '"status":503' in reply and await retrying.again("503"):
                continue
            return reply


class Retrying:
    """One call's retries: how long is left of its deadline, and whether to try again (after a
    pause, logged) or give up."""

    def __init__(self, client: AsyncClient, what: str, deadline: float):
        self.client, self.what, self.deadline = client, what, deadline
        self.tries = 0

    def left(self) -> float:
        return max(0.001, self.deadline - asyncio.get_running_loop().time())

    async def again(self, reason: str, retry_after: str | None = None) -> bool:
        pause = self.client.delay(self.tries, retry_after)
        if (
            self.tries >= self.client.retries
            or asyncio.get_running_loop().time() + pause >= self.deadline
        ):
            return False
        self.tries += 1
        log.info("%s: %s; retry %d in %.1f s", self.what, reason, self.tries, pause)
        await asyncio.sleep(pause)
        return True


@dataclass
class Attempt:
    uncertain: bool = False  # a try was sent and its answer lost: it may have been applied


def _floats(chunk: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(chunk, np.float32)  # orjson writes C-ordered arrays only
    if not np.isfinite(array).all():  # orjson would send NaN and infinity as null
        raise ValueError("the chunk holds NaN or infinity: a model's inputs are finite numbers")
    return array


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    return body if isinstance(body, dict) else {"detail": response.text[:500]}


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _raise(error: dict[str, Any]) -> None:
    raise ServerError.from_problem(error.get("status", 500), error)
