"""Every error leaves as an RFC 9457 problem document (on the Open Inference Protocol's ``/v2``, as
its ``{"error": "..."}``); never HTML, never a stack trace."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from app.api.parsing import invalid_fields
from app.errors import ServiceError

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"


def problem_document(
    status: int, detail: str, slug: str | None = None, title: str | None = None, **extra: Any
) -> dict[str, Any]:
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    return {
        "type": f"/problems/{slug}" if slug else "about:blank",
        "title": title or phrase,
        "status": status,
        "detail": detail,
        **extra,
    }


def problem(
    status: int,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    slug: str | None = None,
    title: str | None = None,
    path: str = "",
    **extra: Any,
) -> Response:
    """The error document for a request to ``path``: KServe v2's on ``/v2``, else a problem."""
    if path == "/v2" or path.startswith("/v2/"):
        if status == 422:  # the protocol has one status for a request it cannot take, as Triton
            status = 400
        return Response(
            orjson.dumps({"error": detail}), status, headers=headers, media_type="application/json"
        )
    body = problem_document(status, detail, slug, title, **extra)
    return Response(orjson.dumps(body), status, headers=headers, media_type=PROBLEM_JSON)


def service_error_response(exc: ServiceError, path: str = "") -> Response:
    return problem(
        exc.status,
        exc.detail,
        headers=exc.headers,
        slug=exc.slug,
        title=exc.title,
        path=path,
        **exc.extra,
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def on_service_error(request: Request, exc: ServiceError) -> Response:
        if exc.status >= 500 and exc.status != 503:
            log.error("%s %s failed: %s", request.method, request.url.path, exc.detail)
        return service_error_response(exc, request.url.path)

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, exc: HTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path}"
        return problem(
            exc.status_code, detail, headers=getattr(exc, "headers", None), path=request.url.path
        )

    @app.exception_handler(RequestValidationError)
    async def on_invalid_request(request: Request, exc: RequestValidationError) -> Response:
        if any(error.get("type") == "json_invalid" for error in exc.errors()):
            return problem(
                400, "the body is not valid JSON", slug="bad-request", path=request.url.path
            )
        error = invalid_fields("invalid request", list(exc.errors()))
        return service_error_response(error, request.url.path)

    @app.exception_handler(ClientDisconnect)
    async def on_disconnect(request: Request, exc: ClientDisconnect) -> Response:
        # The client left while sending its body: nobody reads this answer, and nothing changed.
        return Response(status_code=400)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return problem(
            500,
            "the server failed to handle this request; it has been logged",
            slug="internal",
            path=request.url.path,
        )
