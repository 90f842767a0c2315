"""The session layer: ids, tenants, seq, TTL, model versions, and the rules a chunk meets.

The API reaches this layer through one contract, :class:`Sessions` (app/sessions/contract.py: where
a chunk enters, ``Sessions.submit``). The types the API layer needs from the layers below are named
here too, so that the API imports this layer and nothing under it."""

from app.engine import ChunkResult, Reply
from app.engine.tally import Duration, Tally
from app.model.spec import ModelSpec, TensorSpec, parse_version, split_key
from app.sessions.contract import Sessions
from app.store.records import SessionRecord

__all__ = [
    "ChunkResult",
    "Duration",
    "ModelSpec",
    "Reply",
    "SessionRecord",
    "Sessions",
    "Tally",
    "TensorSpec",
    "parse_version",
    "split_key",
]
