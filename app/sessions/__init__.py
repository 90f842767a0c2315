"""The session layer: ids, tenants, seq, TTL, model versions, and the rules a chunk meets.

The types the API layer needs from the layers below are named here too, so that the API imports
this layer and nothing under it."""

from app.engine.tally import Duration, Tally
from app.model.spec import ModelSpec, TensorSpec, parse_version, split_key
from app.store.records import SessionRecord

__all__ = [
    "Duration",
    "ModelSpec",
    "SessionRecord",
    "Tally",
    "TensorSpec",
    "parse_version",
    "split_key",
]
