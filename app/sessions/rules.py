"""The rules a chunk meets when its turn comes, against its session as the store has it then.

- The session must exist, be visible to the caller's tenant and not be expired (else 404).
- Its model version must be served here (else 503 while it loads, 409 if the repository does not
  have it or another model's state is under its name; see :meth:`Versions.problem`), of the model
  the request named if it named one (else 409), and the chunk must have that version's number of
  input features (else 422).
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
from app.errors import Conflict, InvalidInput, ServiceError, SessionNotFound
from app.model.spec import ModelSpec
from app.sessions.versions import Versions
from app.store.records import SessionRecord


def admission(versions: Versions) -> AdmitRule:
    def admit(
        work: Work, record: SessionRecord | None, now: float
    ) -> ChunkResult | ServiceError | None:
        if record is None or not record.visible_to(work.scope, now):
            return SessionNotFound(work.session_id)
        if (problem := versions.problem(record)) is not None:
            return problem
        spec = versions.entries[record.model_key].spec
        if work.model is not None and work.model != spec.name:
            return wrong_model(work.session_id, spec, work.model)
        if work.seq == record.seq and record.last_chunk is not None:
            metrics.REPLAYS.inc()
            return last_answer(record, spec, replayed=True)
        if work.seq is not None and work.seq != record.seq + 1:
            metrics.CONFLICTS.labels("seq").inc()
            return Conflict(
                f"chunk seq {work.seq} is out of order: the session's last applied chunk is "
                f"{record.seq}, so the next must be {record.seq + 1}",
                expected_seq=record.seq + 1,
            )
        if work.inputs.shape[1] != spec.input_features:
            return wrong_features(work.inputs.shape[1], spec)
        return None

    return admit


def wrong_model(session_id: str, spec: ModelSpec, named: str) -> Conflict:
    metrics.CONFLICTS.labels("model").inc()
    return Conflict(f"sequence {session_id!r} runs model {spec.name}, not {named}")


def wrong_features(features: int, spec: ModelSpec) -> InvalidInput:
    plural = "s" if spec.input_features != 1 else ""
    return InvalidInput(
        f'"inputs" has rows of {features} number(s); model {spec.name} version {spec.version} '
        f"takes rows of {spec.input_features} feature{plural}"
    )


def last_answer(record: SessionRecord, spec: ModelSpec, replayed: bool = False) -> ChunkResult:
    """The answer the session's last chunk got (its ``last_chunk`` must be there)."""
    last = record.last_chunk
    shape = (-1, spec.output_size) if spec.per_step else (spec.output_size,)
    outputs = np.frombuffer(last.outputs, "<f4").reshape(shape)
    return ChunkResult(
        record.session_id, record.seq, last.steps, outputs, replayed=replayed, version=spec.version
    )
