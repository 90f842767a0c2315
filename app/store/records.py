"""What the service knows about one session, whatever store keeps it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(eq=False)
class SessionRecord:
    session_id: str
    created_at: float
    last_active_at: float
    ttl_s: float  # 0: never expires
    seq: int = 0  # number of the last chunk applied
    steps: int = 0  # time steps since creation or the last reset
    # The exact bytes answered for chunk ``seq``, kept so a retry of that chunk gets them again.
    last_response: bytes | None = None
    tenant: str | None = None
    fingerprint: str | None = None  # of the model whose state this is; None: this process's
    version: str = ""  # new with every change (shared stores); a commit applies only on the one it read

    @property
    def expires_at(self) -> float | None:
        return self.last_active_at + self.ttl_s if self.ttl_s > 0 else None

    def expired(self, now: float) -> bool:
        expires = self.expires_at
        return expires is not None and now >= expires

    def visible_to(self, scope: str | None, now: float) -> bool:
        """Whether a caller acting for tenant ``scope`` (None: any tenant) may touch this session
        at ``now``. An expired session is gone to its clients at once, whenever its store gets round
        to removing it; another tenant's session is "not found" too, so that its existence does not
        leak. Every read and every chunk asks this, so an expired session never comes back."""
        return not self.expired(now) and (scope is None or self.tenant == scope)
