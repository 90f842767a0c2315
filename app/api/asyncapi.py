"""The WebSocket protocol of ``/v1/sessions/{session_id}/stream`` as an AsyncAPI 3.0 document,
served at ``/asyncapi.json`` beside the OpenAPI one (and linked from /docs).

The message schemas are the same pydantic models that describe the HTTP bodies (``ChunkRequest``,
``ChunkResponse``, ``StateDocument``, ``SessionInfo``), so a change to one shows in both; a test
checks the server's real replies against them. Written here: no maintained library generates
AsyncAPI from FastAPI's WebSocket routes.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.api.schemas import ChunkRequest, ChunkResponse, SessionInfo, StateDocument

REF = "#/components/schemas/{model}"


class Command(BaseModel):
    op: str = Field(
        description='"reset" (zero the state) or "state" (read it)', pattern="^(reset|state)$"
    )


class ResetAnswer(BaseModel):
    op: str = Field(pattern="^reset$")
    session: SessionInfo


class StreamError(BaseModel):
    model_config = ConfigDict(extra="allow")
    op: str = Field(pattern="^error$")
    status: int = Field(description="The HTTP status the same error has over HTTP")
    detail: str
    expected_seq: int | None = Field(
        None, description="With 409 for a seq out of order: the next to send"
    )


MESSAGES = {
    "chunk": (
        ChunkRequest,
        "application/json",
        "A chunk: T rows of F numbers, with seq for exactly-once",
    ),
    "command": (Command, "application/json", "A command, applied in line with the chunks"),
    "binaryChunk": (
        None,
        "application/octet-stream",
        "A chunk as raw float32 little-endian, T x F row-major (no seq: fastest)",
    ),
    "chunkAnswer": (
        ChunkResponse,
        "application/json",
        "The outputs of a JSON chunk (a replay: the same bytes)",
    ),
    "resetAnswer": (ResetAnswer, "application/json", "The session after a reset"),
    "stateAnswer": (
        StateDocument,
        "application/json",
        "The state document, as GET .../state gives it",
    ),
    "error": (StreamError, "application/json", "A message refused (the connection stays open)"),
    "binaryAnswer": (
        None,
        "application/octet-stream",
        "The outputs of a binary chunk, float32 little-endian",
    ),
}
SENT = ("chunk", "command", "binaryChunk")

CLOSE_CODES = (
    "The server closes the connection with 4401 (no or wrong key), 4404 (no such session), 1013 "
    "(its model version is loading here: try again), 1009 (a message over the size limit), or 1011."
)


@cache
def document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for name, (model, content_type, summary) in MESSAGES.items():
        message: dict[str, Any] = {"name": name, "contentType": content_type, "summary": summary}
        if model is None:
            message["payload"] = {"type": "string", "format": "binary"}
        else:
            schema = model.model_json_schema(ref_template=REF)
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema
            message["payload"] = {"$ref": REF.format(model=model.__name__)}
        messages[name] = message
    received = [name for name in MESSAGES if name not in SENT]
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "stateful-rnn streams",
            "version": "1",
            "description": "One WebSocket per session: each message is answered, in the order sent. "
            + CLOSE_CODES,
        },
        "channels": {
            "stream": {
                "address": "/v1/sessions/{session_id}/stream",
                "parameters": {"session_id": {"description": "The session's id"}},
                "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in MESSAGES},
                "bindings": {
                    "ws": {
                        "query": {
                            "type": "object",
                            "properties": {
                                "token": {
                                    "type": "string",
                                    "description": "The key, for browsers (which cannot send headers)",
                                }
                            },
                        }
                    }
                },
            }
        },
        "operations": {
            "send": {
                "action": "send",
                "channel": {"$ref": "#/channels/stream"},
                "messages": [{"$ref": f"#/channels/stream/messages/{n}"} for n in SENT],
            },
            "receive": {
                "action": "receive",
                "channel": {"$ref": "#/channels/stream"},
                "messages": [{"$ref": f"#/channels/stream/messages/{n}"} for n in received],
            },
        },
        "components": {"messages": messages, "schemas": schemas},
    }
