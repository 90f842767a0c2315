"""The stream's AsyncAPI document. The stream itself (``WS /v1/sessions/{session_id}/stream``) is
served by picows, not by a route: see :mod:`app.api.streaming`."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from app.api import asyncapi
from app.api.deps import json_response

router = APIRouter(tags=["streaming"])


@router.get("/asyncapi.json", include_in_schema=False)
async def asyncapi_document() -> Response:
    """The WebSocket protocol as an AsyncAPI document (linked from /docs)."""
    return json_response(asyncapi.document())
