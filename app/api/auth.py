"""Who is calling: API keys and the tenants they belong to.

A session belongs to the tenant whose key created it. Tenants see only their own sessions (another
tenant's is 404, so that existence does not leak); admin keys see every session and the listing.
With no keys configured the service is open (dev mode) and every caller is an admin.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection

from app.config import Settings
from app.errors import Forbidden, StartupError, Unauthorized

TENANT = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class Caller:
    tenant: str | None
    admin: bool

    @property
    def scope(self) -> str | None:
        """The tenant whose sessions this caller may touch; None: all of them."""
        return None if self.admin else self.tenant

    def require_admin(self, doing: str) -> None:
        """Model control is for admins (403 otherwise), on every protocol."""
        if not self.admin:
            raise Forbidden(f"{doing} takes an admin key")


OPEN = Caller(tenant=None, admin=True)


class KeyRing:
    def __init__(self, tenant_keys: dict[str, str], admin_keys: list[str]):
        # Only digests are kept; ``identify`` compares a presented key with every one of them, in
        # constant time each, so neither a match nor its position shows in the timing.
        self._callers = [
            (_digest(key), Caller(tenant, admin=False)) for key, tenant in tenant_keys.items()
        ]
        self._callers += [(_digest(key), Caller(None, admin=True)) for key in admin_keys]
        # Whose share of the in-flight limit a request counts against, looked up by digest before
        # the request is let in. This is accounting, not the check that admits a caller; a lookup
        # by the digest of a guessed key tells the guesser nothing a 401 would not.
        self._parties = {
            digest: "admin" if caller.admin else f"tenant:{caller.tenant}"
            for digest, caller in self._callers
        }

    @property
    def open(self) -> bool:
        return not self._callers

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        entries = [e for e in settings.api_keys.split(",") if e.strip()]
        if settings.api_keys_file is not None:
            try:
                lines = Path(settings.api_keys_file).read_text().splitlines()
            except OSError as exc:
                raise StartupError(f"cannot read --api-keys-file: {exc}") from exc
            entries += [
                line for line in lines if line.strip() and not line.lstrip().startswith("#")
            ]
        tenant_keys: dict[str, str] = {}
        for number, entry in enumerate(entries, start=1):
            tenant, _, key = entry.strip().partition(":")
            if not TENANT.fullmatch(tenant) or len(key) < 8:
                # The message names the entry's position, never its text: it may hold a key.
                raise StartupError(
                    f"API key entry {number} is not TENANT:KEY (a tenant of 1 to 64 of A-Z a-z 0-9 . _ -, "
                    "a key of 8 or more characters)"
                )
            tenant_keys[key] = tenant
        admin = [k.strip() for k in settings.admin_keys.split(",") if k.strip()]
        if any(len(k) < 8 for k in admin):
            raise StartupError("admin keys must have 8 or more characters")
        return cls(tenant_keys, admin)

    def identify(self, key: str | None) -> Caller:
        if self.open:
            return OPEN
        if not key:
            raise Unauthorized()
        presented = _digest(key)
        found = None
        for digest, caller in self._callers:
            if hmac.compare_digest(digest, presented):
                found = caller
        if found is None:
            raise Unauthorized("the API key is not valid")
        return found

    def party(self, key: str | None) -> str | None:
        """``tenant:NAME`` or ``admin`` for a known key, for fair shares; None for no key or an unknown one."""
        return self._parties.get(_digest(key)) if key else None


def bearer_key(headers: Headers) -> str | None:
    scheme, _, key = headers.get("authorization", "").partition(" ")
    return (key.strip() or None) if scheme.lower() == "bearer" else None


def presented_key(connection: HTTPConnection, allow_query: bool = False) -> str | None:
    """The bearer key of a request; WebSockets from browsers may send ``?token=`` instead."""
    key = bearer_key(connection.headers)
    if key is None and allow_query:
        return connection.query_params.get("token") or None
    return key


def caller_of(connection: HTTPConnection, allow_query: bool = False) -> Caller:
    keys: KeyRing = connection.app.state.keys
    return keys.identify(presented_key(connection, allow_query))


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()
