"""Snapshots of the memory store: every session in one file, written atomically.

The file is an ``.npz`` archive: ``meta`` (JSON: the model fingerprint and each session's record,
its last answer as :meth:`LastChunk.pack` in base64),
and ``s0``, ``s1``, ... (each state tensor's rows, in the order of ``meta``). It is written to a
temporary file in the same folder, flushed to disk, then renamed over the old one, so a crash while
writing leaves the previous snapshot whole.
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


def capture(store: MemoryStore, fingerprint: str) -> bytes:
    """The store as snapshot bytes; runs on the event loop, so it sees no half-applied chunk."""
    items = store.items()
    meta = {
        "fingerprint": fingerprint,
        "sessions": [
            {
                "id": r.session_id, "created": r.created_at, "active": r.last_active_at,
                "ttl": r.ttl_s, "seq": r.seq, "steps": r.steps, "tenant": r.tenant,
                "last": base64.b64encode(r.last_chunk.pack()).decode() if r.last_chunk else None,
            }
            for r, _ in items
        ],
    }
    slots = np.array([slot for _, slot in items], np.intp)
    arrays = {f"s{i}": tensor[slots] for i, tensor in enumerate(store.slots.tensors)}
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


def restore(store: MemoryStore, fingerprint: str, path: Path) -> int:
    """Load the sessions of the snapshot at ``path`` into an empty store; how many were loaded."""
    if not path.exists():
        return 0
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(archive["meta"].tobytes())
            tensors = [archive[f"s{i}"] for i in range(len(store.slots.tensors))]
    except (OSError, ValueError, KeyError) as exc:
        raise StartupError(f"snapshot {str(path)!r} is unreadable: {exc}") from exc
    if meta["fingerprint"] != fingerprint:
        raise StartupError(
            f"snapshot {str(path)!r} holds state of another model ({meta['fingerprint']}); this "
            f"server runs {fingerprint}. Serve that model, or move the snapshot away."
        )
    sessions = meta["sessions"]
    if len(sessions) > store.capacity:
        raise StartupError(
            f"snapshot {str(path)!r} holds {len(sessions)} sessions; --capacity is {store.capacity}"
        )
    for index, entry in enumerate(sessions):
        record = SessionRecord(
            entry["id"], created_at=entry["created"], last_active_at=entry["active"],
            ttl_s=entry["ttl"], seq=entry["seq"], steps=entry["steps"], tenant=entry["tenant"],
            last_chunk=_last_chunk(entry),
        )
        slot = store.slots.allocate()
        store.slots.set_row(slot, [tensor[index] for tensor in tensors])
        store.insert(record, slot)
    return len(sessions)


def _last_chunk(entry: dict) -> LastChunk | None:
    if entry.get("last"):
        return LastChunk.unpack(base64.b64decode(entry["last"]))
    if entry.get("response"):  # a snapshot written before answers were kept as outputs
        return LastChunk.from_response(base64.b64decode(entry["response"]))
    return None
