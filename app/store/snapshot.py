"""Snapshots of the memory store: every session in one file, written atomically.

The file is an ``.npz`` archive: ``meta`` (JSON: each model version's fingerprint, and each
session's record, its version and its last answer as :meth:`LastChunk.pack` in base64), and for
the ``i``-th version of ``meta["models"]`` its sessions' rows of each state tensor, ``m<i>s0``,
``m<i>s1``, ... (in the order of its sessions in ``meta``). Snapshots written before versions
(one ``fingerprint``, tensors ``s0``, ...) are still read. It is written to a temporary file in the
same folder, flushed to disk, then renamed over the old one, so a crash while writing leaves the
previous snapshot whole.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from app.errors import StartupError
from app.store.memory import MemoryStore
from app.store.records import LastChunk, SessionRecord


def capture(store: MemoryStore, fingerprints: dict[str, str]) -> bytes:
    """The store as snapshot bytes (``fingerprints``: of each version it holds sessions of); runs
    on the event loop, so it sees no half-applied chunk."""
    items = store.items()
    keys = sorted({record.model_key for record, _ in items})
    meta = {
        "models": {key: fingerprints[key] for key in keys},
        "sessions": [
            {
                "id": r.session_id,
                "created": r.created_at,
                "active": r.last_active_at,
                "ttl": r.ttl_s,
                "seq": r.seq,
                "steps": r.steps,
                "tenant": r.tenant,
                "model": r.model_key,
                "last": base64.b64encode(r.last_chunk.pack()).decode() if r.last_chunk else None,
            }
            for r, _ in items
        ],
    }
    arrays = {}
    for index, key in enumerate(keys):
        slots = np.array([slot for record, slot in items if record.model_key == key], np.intp)
        for i, tensor in enumerate(store.tables[key].tensors):
            arrays[f"m{index}s{i}"] = tensor[slots]
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> None:
    # A temporary file of its own in the same folder (a rename is atomic only within one file
    # system), so two writers can never rename each other's half-written file.
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def models(path: Path, legacy_key: str) -> dict[str, str]:
    """The model versions (and their fingerprints) a snapshot holds sessions of, before loading it:
    those versions must be served for it to load. A snapshot from before versions holds
    ``legacy_key``'s (the one model of a one-model repository)."""
    if not path.exists():
        return {}
    return _models(_read(path)[0], legacy_key)


def _models(meta: dict, legacy_key: str) -> dict[str, str]:
    return meta["models"] if "models" in meta else {legacy_key: meta["fingerprint"]}


def _read(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return json.loads(archive["meta"].tobytes()), {
                name: archive[name] for name in archive.files
            }
    except (OSError, ValueError, KeyError) as exc:
        raise StartupError(f"snapshot {str(path)!r} is unreadable: {exc}") from exc


def restore(store: MemoryStore, fingerprints: dict[str, str], path: Path, legacy_key: str) -> int:
    """Load the sessions of the snapshot at ``path`` into an empty store whose tables are those
    of ``fingerprints`` (each served version's); how many were loaded."""
    if not path.exists():
        return 0
    meta, arrays = _read(path)
    held = _models(meta, legacy_key)
    for key, fingerprint in held.items():
        if fingerprints.get(key) != fingerprint:
            raise StartupError(
                f"snapshot {str(path)!r} holds state of model version {key} ({fingerprint}); this "
                f"server runs {fingerprints.get(key) or 'no such version'}. Serve that model, or move "
                "the snapshot away."
            )
    sessions = meta["sessions"]
    if len(sessions) > store.capacity:
        raise StartupError(
            f"snapshot {str(path)!r} holds {len(sessions)} sessions; --capacity is {store.capacity}"
        )
    for index, key in enumerate(held):
        table = store.tables[key]
        names = [
            f"m{index}s{i}" if "models" in meta else f"s{i}" for i in range(len(table.tensors))
        ]
        mine = [entry for entry in sessions if entry.get("model", legacy_key) == key]
        for row, entry in enumerate(mine):
            record = SessionRecord(
                entry["id"],
                created_at=entry["created"],
                last_active_at=entry["active"],
                ttl_s=entry["ttl"],
                seq=entry["seq"],
                steps=entry["steps"],
                tenant=entry["tenant"],
                last_chunk=_last_chunk(entry),
                model_key=key,
            )
            slot = table.allocate()
            table.set_row(slot, [arrays[name][row] for name in names])
            store.insert(record, slot)
    return len(sessions)


def _last_chunk(entry: dict) -> LastChunk | None:
    if entry.get("last"):
        return LastChunk.unpack(base64.b64decode(entry["last"]))
    if entry.get("response"):  # a snapshot written before answers were kept as outputs
        return LastChunk.from_response(base64.b64decode(entry["response"]))
    return None
