"""Errors every layer may raise, each knowing how the API reports it.

The API turns any :class:`ServiceError` into an RFC 9457 problem document, so the layer that finds a
problem names it once, here, and nobody keeps a second table of statuses.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status: int = 500
    title: str = "Internal error"
    slug: str = "internal"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra

    def __reduce__(self) -> tuple:
        # Pickled as it is, whatever its class's __init__ takes: errors cross from the engine
        # process to the API workers (app.sessions.remote).
        return _rebuild, (type(self), self.detail, self.headers, self.extra)


def _rebuild(
    cls: type[ServiceError], detail: str, headers: dict[str, str], extra: dict[str, Any]
) -> ServiceError:
    error = cls.__new__(cls)
    Exception.__init__(error, detail)
    error.detail, error.headers, error.extra = detail, headers, extra
    return error


class BadRequest(ServiceError):
    status, title, slug = 400, "Bad request", "bad-request"


class InvalidInput(ServiceError):
    status, title, slug = 422, "Invalid input", "invalid-input"


class RequestTimeout(ServiceError):
    status, title, slug = 408, "Request timeout", "request-timeout"


class TooLarge(ServiceError):
    status, title, slug = 413, "Too large", "too-large"


class HeadersTooLarge(ServiceError):
    status, title, slug = 431, "Request header fields too large", "headers-too-large"


class UnsupportedMediaType(ServiceError):
    status, title, slug = 415, "Unsupported media type", "unsupported-media-type"


class NotFound(ServiceError):
    status, title, slug = 404, "Not found", "not-found"


class ModelNotFound(NotFound):
    """No such model, or no such version of it. Worded as Triton words it: Triton's own client
    programs recognise the error by its beginning."""

    def __init__(self, name: str, version: int | None = None, hint: str = ""):
        what = repr(name) if version is None else f"{name!r} version {version}"
        super().__init__(
            f"Request for unknown model: {what} is not found" + (f"; {hint}" if hint else "")
        )


class SessionNotFound(NotFound):
    def __init__(self, session_id: str):
        super().__init__(f"session {session_id!r} does not exist (or has expired)")


class Unauthorized(ServiceError):
    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str = "a valid API key is needed: Authorization: Bearer <key>"):
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ServiceError):
    status, title, slug = 403, "Forbidden", "forbidden"


class RetryLater(ServiceError):
    """The request may succeed later: the client should wait ``retry_after`` seconds and retry."""

    retry_after = 1

    def __init__(self, detail: str, *, retry_after: int | None = None, **extra: Any):
        wait = self.retry_after if retry_after is None else retry_after
        super().__init__(detail, headers={"Retry-After": str(wait)}, **extra)


class TooManyRequests(RetryLater):
    status, title, slug, retry_after = 429, "Too many requests", "too-many-requests", 30


class Conflict(ServiceError):
    status, title, slug = 409, "Conflict", "conflict"


class ModelMismatch(Conflict):
    """A session holds the state of another model than the one this server runs: it is never run,
    reset or overwritten here."""

    def __init__(self, session_id: str, theirs: str | None, ours: str):
        super().__init__(
            f"session {session_id!r} holds state of a different model ({theirs or 'another'}); this server runs {ours}",
            fingerprint=ours,
        )


class Unavailable(RetryLater):
    status, title, slug = 503, "Service unavailable", "unavailable"


class StartupError(Exception):
    """The service cannot start as configured; raised at start-up, never per request."""


class ModelError(StartupError):
    """The model cannot be loaded or cannot be streamed."""
