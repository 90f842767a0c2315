"""What the service knows about one session, whatever store keeps it."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import orjson


@dataclass(frozen=True)
class LastChunk:
    """The answer to a session's last chunk (number ``seq`` of its record), kept so that a retry of
    that chunk is answered the same, byte for byte: the API encodes an answer from these alone."""

    steps: int  # the session's steps once that chunk was applied
    outputs: bytes  # its outputs, float32 little-endian, in the model's output layout

    def pack(self) -> bytes:
        return struct.pack("<q", self.steps) + self.outputs

    @classmethod
    def unpack(cls, packed: bytes) -> LastChunk:
        return cls(struct.unpack_from("<q", packed)[0], packed[8:])

    @classmethod
    def from_response(cls, body: bytes) -> LastChunk:
        """From a response body as stored before answers were kept this way (a snapshot, or a
        Redis key, written by an earlier version)."""
        document = orjson.loads(body)
        return cls(int(document["steps"]), np.asarray(document["outputs"], "<f4").tobytes())


@dataclass(eq=False)
class SessionRecord:
    session_id: str
    created_at: float
    last_active_at: float
    ttl_s: float  # 0: never expires
    seq: int = 0  # number of the last chunk applied
    steps: int = 0  # time steps since creation or the last reset
    last_chunk: LastChunk | None = None  # the answer to chunk ``seq``, for its retries
    tenant: str | None = None
    fingerprint: str | None = None  # of the model whose state this is; None: this process's
    # The model version it runs, as a key, ``name/version``; None: written before versions.
    model_key: str | None = None
    # New with every change (shared stores): a commit applies only on the revision it read.
    revision: str = ""

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
