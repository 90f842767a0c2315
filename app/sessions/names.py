"""What names and lifetimes look like, each defined once: for the rules of this layer and for the
API's schemas and path parameters (which show them in the OpenAPI document)."""

from __future__ import annotations

import hashlib
import re
import secrets

from app.model.repository import MODEL_NAME

SESSION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# URLs take "." and ".." for path steps: browsers, curl and httpx collapse /v1/sessions/.. before
# sending, so a session so named could never be reached.
PATH_STEPS = (".", "..")
SEQUENCE_NAME = re.compile(r"[A-Za-z0-9._:-]{1,96}")  # a string sequence id kept as it is
# Sessions of Open Inference Protocol sequences are named "seq.<tenant digest>.<id>"; a plain create
# may not take a name there, so no tenant can squat on (or probe for) another's sequence.
SEQUENCE_PREFIX = "seq."
MAX_TTL_S = 10 * 365 * 86400.0

__all__ = [
    "MAX_TTL_S",
    "MODEL_NAME",
    "PATH_STEPS",
    "SEQUENCE_NAME",
    "SEQUENCE_PREFIX",
    "SESSION_ID",
    "anchored",
    "new_session_id",
    "sequence_session_id",
]


def sequence_session_id(tenant: str | None, sequence_id: int | str) -> str:
    """The session of a tenant's Open Inference Protocol sequence. Clients pick small ids (1000),
    so the tenant is part of the name (two tenants' sequence 1000 are two sessions); an id that is
    not a valid session id itself is hashed."""
    owner = hashlib.sha256((tenant or "").encode()).hexdigest()[:12]
    name = str(sequence_id)
    if not SEQUENCE_NAME.fullmatch(name):
        name = "h" + hashlib.sha256(name.encode()).hexdigest()[:40]
    return f"{SEQUENCE_PREFIX}{owner}.{name}"


def new_session_id() -> str:
    """128 random bits in URL-safe text (22 characters)."""
    return secrets.token_urlsafe(16)


def anchored(pattern: re.Pattern[str]) -> str:
    """``pattern`` as a JSON Schema ``pattern`` (which matches anywhere unless anchored)."""
    return f"^{pattern.pattern}$"
