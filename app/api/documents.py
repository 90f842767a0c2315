"""The response documents, each built in one place: a session's info, its state, a model version's
layout, a model with its versions, the console's stats. The layers below hand over records and
specs; how they read on the wire (field names, RFC 3339 times, nulls for admins-only figures) is
decided here."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
import orjson

from app.sessions import ChunkResult, ModelSpec, SessionRecord, TensorSpec, split_key


def rfc3339(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def model_ref(key: str | None) -> dict[str, Any] | None:
    """A version as session documents name it."""
    if key is None:
        return None
    name, version = split_key(key)
    return {"name": name, "version": version}


def session_info(record: SessionRecord, with_tenant: bool = False) -> dict[str, Any]:
    """SessionInfo; ``with_tenant`` adds the owner (for admins: tenants never see each other)."""
    info = {
        "session_id": record.session_id,
        "seq": record.seq,
        "steps": record.steps,
        "created_at": rfc3339(record.created_at),
        "last_active_at": rfc3339(record.last_active_at),
        "expires_at": rfc3339(record.expires_at),
        "model": model_ref(record.model_key),
    }
    if with_tenant:
        info["tenant"] = record.tenant
    return info


def state_document(
    record: SessionRecord, spec: ModelSpec, values: list[np.ndarray]
) -> dict[str, Any]:
    """The session's row of every recurrent layer's ``layer.states``, as Keras shows it (float32
    arrays, written in float32's shortest form, which reads back bit for bit)."""
    rows = iter(values)
    layers = [
        {
            "name": layer.name,
            "kind": layer.kind,
            "states": np.stack([next(rows) for _ in range(layer.state_tensors)]),
        }
        for layer in spec.recurrent
    ]
    return {
        "session_id": record.session_id,
        "seq": record.seq,
        "steps": record.steps,
        "model": {"name": spec.name, "version": spec.version, "fingerprint": spec.fingerprint},
        "layers": layers,
    }


def tensor(found: TensorSpec) -> dict[str, Any]:
    return {"name": found.name, "dtype": found.dtype, "width": found.width}


def layout(spec: ModelSpec | None) -> dict[str, Any]:
    """What a version takes and gives; nulls for a version never loaded here."""
    if spec is None:
        return {
            "fingerprint": None,
            "runtime": None,
            "input_features": None,
            "output": None,
            "inputs": None,
            "outputs": None,
            "recurrent_layers": None,
        }
    return {
        "fingerprint": spec.fingerprint,
        "runtime": spec.runtime,
        "input_features": spec.input_features,
        "output": {"per_step": spec.per_step, "size": spec.output_size},
        "inputs": [tensor(t) for t in spec.inputs],
        "outputs": [tensor(t) for t in spec.outputs],
        "recurrent_layers": [
            {"name": r.name, "kind": r.kind, "units": r.units, "state_tensors": r.state_tensors}
            for r in spec.recurrent
        ],
    }


def model_document(found: dict[str, Any], admin: bool) -> dict[str, Any]:
    """A model and its versions as the session layer describes them (each with its ``spec``); the
    live session counts are every tenant's, so for admins only."""
    versions = []
    for version in found["versions"]:
        described = {k: v for k, v in version.items() if k != "spec"}
        if not admin:
            described["live_sessions"] = None
        versions.append({**described, **layout(version["spec"])})
    return {**found, "versions": versions}


def retirement_document(found: dict[str, Any]) -> dict[str, Any]:
    """RetireResult: what a retirement did (the version's state now, the sessions it moved and
    where, the sessions still on it)."""
    fields = ("name", "version", "mode", "moved", "moved_to", "state", "live_sessions")
    return {field: found[field] for field in fields}


def stats_document(
    replica: str, spec: ModelSpec | None, overview: dict[str, Any]
) -> dict[str, Any]:
    """Stats: the replica that answered, its default model (all null when none is the default:
    several models, or none ready yet), and the service's overview of sessions, queue and latency."""
    model = (
        {"name": spec.name, "version": spec.version, "fingerprint": spec.fingerprint}
        if spec is not None
        else {"name": None, "version": None, "fingerprint": None}
    )
    return {"replica": replica, "model": model, **overview}


def last_outputs_document(record: SessionRecord, outputs: np.ndarray | None) -> dict[str, Any]:
    """LastOutputs: the session's seq and steps, and its last chunk's outputs (None before one)."""
    return {
        "session_id": record.session_id,
        "seq": record.seq,
        "steps": record.steps,
        "outputs": outputs,
    }


def chunk_body(result: ChunkResult) -> bytes:
    """A chunk's answer as JSON: the same bytes for the same answer, so a replay is byte for byte
    what the first answer was (outputs are float32, written in float32's shortest form)."""
    return orjson.dumps(
        {
            "session_id": result.session_id,
            "seq": result.seq,
            "steps": result.steps,
            "outputs": result.outputs,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
