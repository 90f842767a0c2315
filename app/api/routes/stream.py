"""Streaming over WebSocket: the same chunks as HTTP, without a request per chunk.

A binary message is one chunk (float32 little-endian, T x F row-major) answered by the outputs in
the same form; a text message is a JSON chunk or command answered in JSON. Messages are handled
concurrently (they join the engine's batches like HTTP chunks) but answered in the order they came.
A binary chunk goes straight into its session's line, its reply the engine's future, with no task
of its own (the hot path of live streams); a text message gets a task, and the binary frames after
it wait their turn in one too until that task has put its work in line, so that order holds.
At most ``ws_max_in_flight`` messages of one connection are in flight: beyond that the server stops
reading, so a fast sender is slowed down rather than queued without bound.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket
from starlette.responses import Response
from starlette.websockets import WebSocketDisconnect, WebSocketState

from app.api import asyncapi
from app.api.auth import caller_of
from app.api.deps import chunk_body, json_response
from app.api.documents import session_info, state_document
from app.api.parsing import ChunkLimits, chunk_from_document, load_json, parse_frame
from app.config import Settings
from app.errors import InvalidInput, ServiceError, SessionNotFound, TooLarge, Unauthorized
from app.sessions.service import ChunkResult, SessionService

log = logging.getLogger(__name__)
router = APIRouter(tags=["streaming"])

CLOSE_UNKNOWN_SESSION = 4404
CLOSE_UNAUTHORIZED = 4401
CLOSE_TRY_AGAIN = 1013

Reply = tuple[str, Any]  # ("bytes", payload) or ("text", payload)


@router.get("/asyncapi.json", include_in_schema=False)
async def asyncapi_document() -> Response:
    """The WebSocket protocol as an AsyncAPI document (linked from /docs)."""
    return json_response(asyncapi.document())


@router.websocket("/v1/sessions/{session_id}/stream")
async def stream(websocket: WebSocket, session_id: str) -> None:
    sessions: SessionService = websocket.app.state.sessions
    settings: Settings = websocket.app.state.settings
    limits: ChunkLimits = websocket.app.state.chunk_limits
    await websocket.accept()
    try:
        caller = caller_of(websocket, allow_query=True)
    except Unauthorized as exc:
        await websocket.close(CLOSE_UNAUTHORIZED, _reason(exc.detail))
        return
    try:
        spec = await sessions.session_model(session_id, caller.scope)
    except SessionNotFound as exc:
        await websocket.close(CLOSE_UNKNOWN_SESSION, _reason(exc.detail))
        return
    except ServiceError as exc:
        await websocket.close(CLOSE_TRY_AGAIN, _reason(exc.detail))
        return
    # Binary chunks are cut into rows of this version's features; a session moves only to versions
    # that take the same (see app.sessions.versions), and the engine checks each chunk again.
    connection = _Connection(
        websocket, sessions, settings, limits, session_id, caller.scope, spec.input_features
    )
    await connection.run()


class _Connection:
    def __init__(
        self,
        websocket: WebSocket,
        sessions: SessionService,
        settings: Settings,
        limits: ChunkLimits,
        session_id: str,
        scope: str | None,
        features: int,
    ):
        self.scope = scope
        self.features = features
        self.websocket = websocket
        self.sessions = sessions
        self.limits = limits
        self.session_id = session_id
        # In message order: a task (a text message: JSON chunk or command) or the engine's future
        # of a binary chunk.
        self.replies: asyncio.Queue[asyncio.Future | None] = asyncio.Queue(
            settings.ws_max_in_flight
        )
        self._unstarted = 0  # text tasks created whose work has not yet taken its place in line

    async def run(self) -> None:
        writer = asyncio.create_task(self._write())
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                frame = message.get("bytes")
                if frame is not None and not self._unstarted:
                    reply = self._binary(frame)
                else:
                    reply = asyncio.create_task(
                        self._binary_later(frame)
                        if frame is not None
                        else self._text(message.get("text") or "")
                    )
                    self._unstarted += 1
                # Blocks when the connection has too much in flight: backpressure.
                await self.replies.put(reply)
        except WebSocketDisconnect:
            pass
        finally:
            await self.replies.put(None)
            await writer

    async def _write(self) -> None:
        """Send replies in message order; after a disconnect, let the work finish unanswered
        (a chunk that was applied stays applied: the session is consistent either way)."""
        while (pending := await self.replies.get()) is not None:
            try:
                found = await pending
            except ServiceError as exc:  # a binary chunk the engine refused
                found = _error(exc)
            except (Exception, asyncio.CancelledError):
                log.exception("a WebSocket message of session %r failed", self.session_id)
                found = _error(ServiceError("the server failed to handle this message"))
            if self.websocket.application_state is not WebSocketState.CONNECTED:
                continue
            try:
                if isinstance(found, ChunkResult):  # a binary chunk's answer
                    await self.websocket.send_bytes(
                        found.outputs.astype("<f4", copy=False).tobytes()
                    )
                elif found[0] == "bytes":
                    await self.websocket.send_bytes(found[1])
                else:
                    await self.websocket.send_text(found[1])
            except (WebSocketDisconnect, RuntimeError):
                continue

    def _binary(self, frame: bytes) -> asyncio.Future:
        """A binary chunk into its session's line at once: no task, its reply the engine's future.
        (Only while no text message before it is still on its way into the line.)"""
        try:
            inputs = parse_frame(frame, self.features, self.limits.steps)
            return self.sessions.submit(
                self.session_id, inputs, scope=self.scope, transport="websocket"
            )
        except ServiceError as exc:
            refused = asyncio.get_running_loop().create_future()
            refused.set_result(_error(exc))
            return refused

    async def _binary_later(self, frame: bytes) -> Reply | ChunkResult:
        self._unstarted -= 1
        try:
            return await self._binary(frame)
        except ServiceError as exc:
            return _error(exc)

    async def _text(self, text: str) -> Reply:
        # Every branch below reaches the session's line before its first suspension: once this task
        # has started, binary frames after it may go straight in.
        self._unstarted -= 1
        try:
            limit = self.limits.json_bytes
            # Characters first: a text of more characters than the limit has more bytes too.
            if len(text) > limit or len(body := text.encode()) > limit:
                raise TooLarge(
                    f"the message is over {limit} bytes, the most a chunk of this model may take"
                )
            document = load_json(body)
            if isinstance(document, dict) and "op" in document:
                return "text", await self._command(document["op"])
            chunk = chunk_from_document(document, None, self.limits.steps, body)
            result = await self.sessions.push(
                self.session_id, chunk.inputs, chunk.seq, self.scope, transport="websocket"
            )
        except ServiceError as exc:
            return _error(exc)
        return "text", chunk_body(result).decode()

    async def _command(self, op: Any) -> str:
        if op == "reset":
            record = await self.sessions.reset(self.session_id, self.scope)
            return orjson.dumps({"op": "reset", "session": session_info(record)}).decode()
        if op == "state":
            state = state_document(*await self.sessions.state(self.session_id, self.scope))
            return orjson.dumps(state, option=orjson.OPT_SERIALIZE_NUMPY).decode()
        raise InvalidInput(f"unknown op {op!r}; the ops are 'reset' and 'state'")


def _reason(detail: str) -> str:
    """A close reason fits in 123 bytes of UTF-8 (a session id may be longer)."""
    return detail.encode()[:123].decode(errors="ignore")


def _error(exc: ServiceError) -> Reply:
    return "text", orjson.dumps(
        {"op": "error", "status": exc.status, "detail": exc.detail, **exc.extra}
    ).decode()
