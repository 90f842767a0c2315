"""The rules a chunk meets when its turn comes, against its session as the store has it then.

- The session must exist, be visible to the caller's tenant and not be expired (else 404).
- It must hold the state of the model this server runs (else 409, and it is left alone).
- A chunk may carry ``seq``: ``last + 1`` is applied; ``last`` is a retry of the chunk already
  applied, answered with what that chunk was answered (nothing is applied); anything else is 409
  with ``expected_seq``. Without ``seq`` a chunk is applied and numbered ``last + 1``.

The engine asks them for every chunk (:func:`admission` is its ``admit``), written once here.
"""

from __future__ import annotations

import numpy as np

from app import metrics
from app.engine.core import AdmitRule, ChunkResult
from app.engine.lines import Work
from app.errors import Conflict, ModelMismatch, ServiceError, SessionNotFound
from app.model.spec import ModelSpec
from app.store.records import SessionRecord


def admission(spec: ModelSpec) -> AdmitRule:
    def admit(work: Work, record: SessionRecord | None, now: float) -> ChunkResult | ServiceError | None:
        if record is None or not record.visible_to(work.scope, now):
            return SessionNotFound(work.session_id)
        if (mismatch := model_mismatch(record, spec)) is not None:
            metrics.CONFLICTS.labels("model").inc()
            return mismatch
        if work.seq is None or work.seq == record.seq + 1:
            return None
        if work.seq == record.seq and record.last_chunk is not None:
            metrics.REPLAYS.inc()
            return last_answer(record, spec, replayed=True)
        metrics.CONFLICTS.labels("seq").inc()
        return Conflict(f"chunk seq {work.seq} is out of order: the session's last applied chunk is "
                        f"{record.seq}, so the next must be {record.seq + 1}", expected_seq=record.seq + 1)

    return admit


def model_mismatch(record: SessionRecord, spec: ModelSpec) -> ModelMismatch | None:
    """The error for a session that holds another model's state, or None. A session made before
    fingerprints were kept (None) is taken for this model's."""
    if record.fingerprint is not None and record.fingerprint != spec.fingerprint:
        return ModelMismatch(record.session_id, record.fingerprint, spec.fingerprint)
    return None


def last_answer(record: SessionRecord, spec: ModelSpec, replayed: bool = False) -> ChunkResult:
    """The answer the session's last chunk got (its ``last_chunk`` must be there)."""
    last = record.last_chunk
    shape = (-1, spec.output_size) if spec.per_step else (spec.output_size,)
    outputs = np.frombuffer(last.outputs, "<f4").reshape(shape)
    return ChunkResult(record.session_id, record.seq, last.steps, outputs, replayed=replayed)
