"""The shared store: sessions in Redis, so that any replica serves any session and none holds the
only copy; the slot table in front of it is a cache of hot sessions.

Layout: one hash per session, key ``<prefix>:{<session id>}``. The braces are a Redis Cluster hash
tag, so everything a session owns hashes to one slot. Fields: ``ver`` (a random token, new with
every change: a counter would start again at 1 if Redis lost its data, and a replica's cache could
then take an old row for a new one),
``seq``, ``steps``, ``created``, ``active`` (last use, epoch seconds), ``ttl`` (seconds, 0: none),
``fp`` (model fingerprint), ``model`` (the version it runs, ``name/version``; absent on sessions
written before versions, which are taken by their fingerprint), ``tenant``, ``last`` (the last chunk's answer, ``LastChunk.pack``, for
replays; versions before it kept the response body in ``resp``, still read) and
``s0``, ``s1``, ... (each state tensor's row, raw float32 little-endian). The key expires ``ttl``
seconds after the last use (PEXPIRE, refreshed by every change).

Every change is one Lua script, so it is atomic; a chunk's commit applies only if ``ver`` is still
the one its checkout read. A batch costs one pipelined round trip to read and one to write.
Retired versions are a hash, ``<prefix>:retired`` (version -> mode), that every replica reads.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import secrets
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from app import metrics
from app.errors import Conflict, ServiceError, Unavailable
from app.store.base import Checkout, Commit, Outcome, tenant_full
from app.store.cached_count import CachedCount
from app.store.records import LastChunk, SessionRecord
from app.store.redis.cluster import Keyspace, connect, reachable
from app.store.redis.errors import transient, unavailable, unreachable
from app.store.redis.listing import Listing
from app.store.redis.scripts import SCRIPTS
from app.store.slots import SlotTable

log = logging.getLogger(__name__)


def new_revision() -> str:
    return secrets.token_hex(8)


def ttl_ms(ttl_s: float) -> int:
    """A TTL as PEXPIRE takes it: whole milliseconds, rounded up, so that any TTL above 0 expires
    (rounded down, 0.4 ms would be 0, no PEXPIRE, and a session that never expires). 0: none."""
    return math.ceil(ttl_s * 1000) if ttl_s > 0 else 0


META = ("ver", "seq", "steps", "created", "active", "ttl", "fp", "tenant", "model")
# The session count (console, listing) is a SCAN of every key: taken at most this often.
COUNT_MAX_AGE_S = 5.0


@dataclass(frozen=True)
class _Layout:
    """A served version's state, as its sessions' hashes hold it."""

    fingerprint: str
    units: list[int]

    @property
    def fields(self) -> list[str]:
        return [f"s{i}" for i in range(len(self.units))]

    @property
    def zeros(self) -> list[bytes]:
        return [np.zeros(u, np.float32).tobytes() for u in self.units]

    def pairs(self, values: list[bytes]) -> list[Any]:
        return [x for pair in zip(self.fields, values) for x in pair]


class RedisStore:
    kind = "redis"

    def __init__(self, url: str, prefix: str, capacity: int, tenant_quota: int = 0):
        metrics.use_backend(self.kind)
        self._capacity = capacity
        self.tables: dict[str, SlotTable] = {}
        self._layouts: dict[str, _Layout] = {}
        self._by_fingerprint: dict[str, str] = {}  # for sessions written before versions
        self._state_fields: list[str] = []  # enough for any served version's state
        self._by_model: tuple[float, dict[str, int]] | None = None
        self.tenant_quota = tenant_quota
        self.prefix = prefix
        # One Redis or a cluster.
        self._redis = connect(url, socket_timeout=2.0, connect_timeout=1.0)
        self._keyspace = Keyspace(self._redis)
        self._listing = Listing(self._keyspace, prefix)
        self._count = CachedCount(self._scan_count, COUNT_MAX_AGE_S)
        self._sha = {
            name: hashlib.sha1(source.encode()).hexdigest() for name, source in SCRIPTS.items()
        }
        self._loading: asyncio.Task | None = None
        # Hot sessions: id -> (model version, slot in its table, the 'ver' of the row held there),
        # least recently used first.
        self._hot: OrderedDict[str, tuple[str, int, str]] = OrderedDict()

    @property
    def capacity(self) -> int:
        return self._capacity

    def add_model(self, key: str, fingerprint: str, state_units: list[int]) -> None:
        if key in self.tables:
            return
        self.tables[key] = SlotTable(self._capacity, state_units)
        self._layouts[key] = _Layout(fingerprint, list(state_units))
        self._by_fingerprint.setdefault(fingerprint, key)
        if len(state_units) > len(self._state_fields):
            self._state_fields = [f"s{i}" for i in range(len(state_units))]

    def drop_model(self, key: str) -> None:
        for session_id in [sid for sid, (model, _, _) in self._hot.items() if model == key]:
            self._drop(session_id)
        self.tables.pop(key, None)
        layout = self._layouts.pop(key, None)
        if layout is not None and self._by_fingerprint.get(layout.fingerprint) == key:
            del self._by_fingerprint[layout.fingerprint]

    def key(self, session_id: str) -> str:
        return f"{self.prefix}:{{{session_id}}}"

    async def close(self) -> None:
        await self._redis.aclose()

    async def ping(self) -> bool:
        """Whether this replica can serve: Redis answers (every master of a cluster, in state ok)
        and holds the scripts, loaded here if it has lost them (a restart, SCRIPT FLUSH)."""
        if not await reachable(self._keyspace):
            return False
        try:
            if not all(await self._redis.script_exists(*self._sha.values())):
                await self._load_scripts()
        except (RedisError, RedisClusterException, OSError):
            return False
        return True

    # -- scripts ------------------------------------------------------------------------------

    async def _load_scripts(self) -> None:
        """Load every script (on every master of a cluster). One load runs at a time, and callers
        that find scripts missing meanwhile wait for it; a load that fails fails its waiters (503)
        and the next caller to find a script missing tries again. The digests never depend on a
        load: they are the scripts' SHA-1, known before Redis is asked."""
        if self._loading is None:
            self._loading = asyncio.create_task(self._load_each())
            self._loading.add_done_callback(self._loaded)
        # Shielded: a caller that goes away does not cancel the load for the others.
        await asyncio.shield(self._loading)

    async def _load_each(self) -> None:
        for source in SCRIPTS.values():
            await self._redis.script_load(source)

    def _loaded(self, task: asyncio.Task) -> None:
        self._loading = None
        if not task.cancelled():
            task.exception()  # retrieved: its waiters have it (or there were none)

    async def _run(self, calls: list[tuple[str, str, list[Any]]]) -> list[Any]:
        """Run scripts (name, key, args) in one pipelined round trip. Each result is the
        script's answer or the exception it met. Calls that found their script missing (a fresh
        or restarted Redis) did not run: they alone are sent again, once the scripts are loaded."""
        results = await self._pipeline(calls)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            await self._load_scripts()
            for i, result in zip(missing, await self._pipeline([calls[i] for i in missing])):
                results[i] = result
        return results

    async def _pipeline(self, calls: list[tuple[str, str, list[Any]]]) -> list[Any]:
        # Not pipe.evalsha: redis-py blocks it in a cluster pipeline, lest a node lack the script.
        # Scripts are loaded on every master here, and a NOSCRIPT is sent again.
        commands = [("EVALSHA", self._sha[name], 1, key, *args) for name, key, args in calls]
        with metrics.REDIS_SECONDS.time():
            return await self._keyspace.pipeline(commands, [key for _, key, _ in calls])

    async def _run_one(self, name: str, key: str, args: list[Any]) -> Any:
        (result,) = await self._run([(name, key, args)])
        if isinstance(result, Exception):
            raise result
        return result

    # -- records ------------------------------------------------------------------------------

    def _record(
        self, session_id: str, meta: list[Any], last: list[Any] | None = None
    ) -> SessionRecord:
        """A record from the META fields, and ``last``: the 'last' and 'resp' fields, if read."""
        ver, seq, steps, created, active, ttl, fp, tenant, model = meta
        fingerprint = fp.decode() if fp else None
        return SessionRecord(
            session_id,
            created_at=float(created),
            last_active_at=float(active),
            ttl_s=float(ttl),
            seq=int(seq),
            steps=int(steps),
            last_chunk=_last_chunk(last),
            tenant=tenant.decode() if tenant else None,
            fingerprint=fingerprint,
            model_key=model.decode() if model else self._by_fingerprint.get(fingerprint or ""),
            revision=ver.decode(),
        )

    async def count(self) -> int:
        return await self._count.get()

    @unreachable
    async def _scan_count(self) -> int:
        total = 0
        async for _ in self._redis.scan_iter(match=f"{self.prefix}:{{*}}", count=1000):
            total += 1
        return total

    @unreachable
    async def create(
        self,
        session_id: str,
        ttl_s: float,
        now: float,
        tenant: str | None = None,
        *,
        model_key: str,
    ) -> SessionRecord:
        layout = self._layouts[model_key]
        counted = await self._admit_tenant(tenant, session_id, now)
        revision = new_revision()
        fields = {
            "ver": revision,
            "seq": 0,
            "steps": 0,
            "created": repr(now),
            "active": repr(now),
            "ttl": repr(ttl_s),
            "fp": layout.fingerprint,
            "tenant": tenant or "",
            "model": model_key,
            "last": b"",
        }
        pairs = [x for item in fields.items() for x in item] + layout.pairs(layout.zeros)
        created = await self._run_one("create", self.key(session_id), [ttl_ms(ttl_s), *pairs])
        if not created:
            if counted:  # only the entry this create added: the id may be the tenant's live session
                await self._redis.zrem(self._tenant_key(tenant), session_id)
            raise Conflict(f"session {session_id!r} already exists")
        self._count.adjust(+1)
        self._by_model = None
        return SessionRecord(
            session_id,
            created_at=now,
            last_active_at=now,
            ttl_s=ttl_s,
            tenant=tenant,
            fingerprint=layout.fingerprint,
            model_key=model_key,
            revision=revision,
        )

    def _tenant_key(self, tenant: str) -> str:
        return f"{self.prefix}:tenant:{{{tenant}}}"

    async def _admit_tenant(self, tenant: str | None, session_id: str, now: float) -> bool:
        """Count the tenant's sessions in a sorted set of their ids. Redis expires sessions by
        itself, so when the set looks full, the members whose sessions are gone are dropped first.
        Two creates racing at the limit may both pass: the quota is a guard, not an exact count.
        True if this call added ``session_id`` to the set (and so may take it out again)."""
        if not tenant or not self.tenant_quota:
            return False
        key = self._tenant_key(tenant)
        count = await self._redis.zcard(key)
        if count >= self.tenant_quota:
            members = await self._redis.zrange(key, 0, -1)
            pipe = self._redis.pipeline(transaction=False)
            for member in members:
                pipe.exists(self.key(member.decode()))
            pipe.exists(self.key(session_id))
            *alive, taken = await pipe.execute()
            if taken:  # as on the memory store: a taken id is 409 before the quota is counted
                raise Conflict(f"session {session_id!r} already exists")
            gone = [m for m, live in zip(members, alive) if not live]
            if gone:
                await self._redis.zrem(key, *gone)
            count -= len(gone)
        if count >= self.tenant_quota:
            raise tenant_full(tenant, self.tenant_quota)
        # NX: an id already in the set is a session of this tenant's that may be alive; a create
        # refused because that id is taken must not take it out of the count.
        return bool(await self._redis.zadd(key, {session_id: now}, nx=True))

    @unreachable
    async def get(self, session_id: str, last: bool = False) -> SessionRecord | None:
        fields = (*META, "last", "resp") if last else META
        found = await self._redis.hmget(self.key(session_id), fields)
        return (
            None
            if found[0] is None
            else self._record(session_id, found[: len(META)], found[len(META) :])
        )

    @unreachable
    async def delete(self, session_id: str) -> bool:
        self._drop(session_id)
        tenant = (
            await self._redis.hget(self.key(session_id), "tenant") if self.tenant_quota else None
        )
        deleted = bool(await self._redis.delete(self.key(session_id)))
        self._count.adjust(-deleted)
        self._by_model = None
        if tenant:
            await self._redis.zrem(self._tenant_key(tenant.decode()), session_id)
        return deleted

    @unreachable
    async def reset(self, session_id: str, now: float, *, model_key: str) -> SessionRecord | None:
        layout = self._layouts[model_key]
        return await self._overwrite(
            session_id,
            model_key,
            ["ver", new_revision(), "steps", 0, "active", repr(now), *layout.pairs(layout.zeros)],
        )

    @unreachable
    async def write_state(
        self, session_id: str, values: list[np.ndarray], now: float, *, model_key: str
    ) -> SessionRecord | None:
        blobs = [np.ascontiguousarray(v, np.float32).tobytes() for v in values]
        return await self._overwrite(
            session_id,
            model_key,
            ["ver", new_revision(), "active", repr(now), *self._layouts[model_key].pairs(blobs)],
        )

    async def _overwrite(
        self, session_id: str, model_key: str, pairs: list[Any]
    ) -> SessionRecord | None:
        self._drop(session_id)  # the cached row is stale from now on
        runs = [model_key, self._layouts[model_key].fingerprint]
        meta = await self._run_one("overwrite", self.key(session_id), [*runs, *pairs])
        if meta == 0:
            raise Conflict(
                f"session {session_id!r} no longer runs model version {model_key} (it was moved meanwhile); retry"
            )
        return None if meta is None else self._record(session_id, meta)

    @unreachable
    async def read_state(self, session_id: str) -> tuple[SessionRecord, list[np.ndarray]] | None:
        found = await self._run_one("read", self.key(session_id), ["", "", *self._state_fields])
        if found is None:
            return None
        meta, _, states = found
        record = self._record(session_id, meta)
        layout = self._layouts.get(record.model_key or "")
        if layout is None or layout.fingerprint != record.fingerprint:
            raise Unavailable(
                f"session {session_id!r} runs model version {record.model_key}, which this replica has not loaded",
                retry_after=2,
            )
        return record, self._decode(session_id, states, layout)

    @unreachable
    async def migrate(
        self, session_id: str, source: str, target: str, keep_state: bool
    ) -> bool | None:
        old, new = self._layouts[source], self._layouts[target]
        self._drop(session_id)
        args = [
            source,
            old.fingerprint,
            target,
            new.fingerprint,
            new_revision(),
            "1" if keep_state else "0",
        ]
        if not keep_state:
            extra = old.fields[len(new.fields) :]
            args += [len(extra), *extra, *new.pairs(new.zeros)]
        moved = await self._run_one("migrate", self.key(session_id), args)
        if moved:
            self._by_model = None
        return None if moved is None else bool(moved)

    async def count_by_model(self, fresh: bool = False) -> dict[str, int]:
        """Counted over every session key (a SCAN, and each one's version): kept for a few
        seconds, as the session count is, unless ``fresh``."""
        now = time.monotonic()
        if fresh or self._by_model is None or now - self._by_model[0] > COUNT_MAX_AGE_S:
            self._by_model = (now, await self._scan_models())
        return dict(self._by_model[1])

    async def _scan_models(self) -> dict[str, int]:
        return dict(Counter(model for _, model in await self._models_of_sessions()))

    async def sessions_of(self, key: str) -> list[str]:
        return [
            session_id for session_id, model in await self._models_of_sessions() if model == key
        ]

    @unreachable
    async def _models_of_sessions(self) -> list[tuple[str, str]]:
        """(id, version) of every session: a SCAN of the keys, then each one's version, 1,000 a
        round trip."""
        found = []
        keys = [
            key async for key in self._redis.scan_iter(match=f"{self.prefix}:{{*}}", count=1000)
        ]
        for start in range(0, len(keys), 1000):
            page = keys[start : start + 1000]
            pipe = self._redis.pipeline(transaction=False)
            for key in page:
                pipe.hmget(key, ("model", "fp"))
            for key, (model, fp) in zip(page, await pipe.execute()):
                if fp is not None:  # expired since the SCAN
                    version = model.decode() if model else self._by_fingerprint.get(fp.decode())
                    found.append((self._listing.session_id(key), version or "unknown"))
        return found

    def _retired_key(self) -> str:
        return f"{self.prefix}:retired"

    @unreachable
    async def mark_retired(self, key: str, mode: str) -> None:
        await self._redis.hset(self._retired_key(), key, mode)

    @unreachable
    async def retired(self) -> dict[str, str]:
        found = await self._redis.hgetall(self._retired_key())
        return {k.decode(): v.decode() for k, v in found.items()}

    @unreachable
    async def page(self, limit: int, cursor: str | None) -> tuple[list[SessionRecord], str | None]:
        """Sessions in Redis SCAN order (see app.store.redis.listing), ``limit`` at most."""
        keys, following = await self._listing.page(limit, cursor)
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, META)
        records = []
        for key, meta in zip(keys, await pipe.execute()):
            if meta[0] is not None:  # expired between SCAN and now
                records.append(self._record(self._listing.session_id(key), meta))
        return records, following

    async def expire(self, now: float, busy: set[str]) -> int:
        return 0  # Redis expires keys itself; a cached row of an expired session is evicted in time

    # -- the engine's batch -------------------------------------------------------------------

    @unreachable
    async def checkout(
        self, requests: list[tuple[str, int | None]], pinned: set[str]
    ) -> list[Checkout | ServiceError | None]:
        calls = []
        for session_id, seq in requests:
            cached = self._hot.get(session_id)
            args = [
                cached[2] if cached else "",
                "" if seq is None else str(seq),
                *self._state_fields,
            ]
            calls.append(("read", self.key(session_id), args))
        found: list[Checkout | ServiceError | None] = []
        for (session_id, _), result in zip(requests, await self._run(calls)):
            try:
                found.append(self._checkout_one(session_id, result, pinned))
            except ServiceError as exc:  # this session's problem, not the batch's
                self._drop(session_id)
                found.append(exc)
        return found

    def _checkout_one(self, session_id: str, result: Any, pinned: set[str]) -> Checkout | None:
        if isinstance(result, Exception):
            raise unavailable(result) if transient(result) else result
        if result is None:
            self._drop(session_id)
            return None
        meta, last, states = result
        record = self._record(session_id, meta, last)
        layout = self._layouts.get(record.model_key or "")
        if layout is None or layout.fingerprint != record.fingerprint:
            # Not placed: a version this replica does not run (yet), or another model's state
            # under its name; the session rules answer for it.
            self._drop(session_id)
            return Checkout(record, None, record.revision, record.model_key)
        rows = self._decode(session_id, states, layout) if states else None
        slot = self._hot_slot(session_id, record.model_key, pinned)
        if rows is not None:  # the cached row is missing or stale
            self.tables[record.model_key].set_row(slot, rows)
        self._hot[session_id] = (record.model_key, slot, record.revision)
        return Checkout(record, slot, record.revision, record.model_key)

    @unreachable
    async def commit(self, commits: list[Commit]) -> list[Outcome | ServiceError]:
        calls, revisions = [], []
        for commit in commits:
            record = commit.checkout.record
            blobs = [np.ascontiguousarray(s, np.float32).tobytes() for s in commit.states]
            revisions.append(new_revision())
            pairs = [
                "ver",
                revisions[-1],
                "seq",
                commit.seq,
                "steps",
                commit.steps,
                "active",
                repr(commit.now),
                "last",
                LastChunk(commit.steps, commit.outputs).pack(),
                "resp",
                b"",
                *[x for i, blob in enumerate(blobs) for x in (f"s{i}", blob)],
            ]
            calls.append(
                (
                    "commit",
                    self.key(record.session_id),
                    [commit.checkout.revision, ttl_ms(record.ttl_s), *pairs],
                )
            )
        try:
            results = await self._run(calls)
        except BaseException:
            for commit in commits:  # the outcome is unknown: trust nothing cached for them
                self._drop(commit.checkout.record.session_id)
            raise
        outcomes: list[Outcome | ServiceError] = []
        for commit, revision, result in zip(commits, revisions, results):
            session_id = commit.checkout.record.session_id
            if isinstance(result, Exception):  # this session's outcome is unknown
                self._drop(session_id)
                outcomes.append(
                    unavailable(result)
                    if transient(result)
                    else ServiceError(f"writing session {session_id!r} failed: {result}")
                )
            elif result == 1:
                model = commit.checkout.model_key
                if model in self.tables and self._hot.get(session_id, (None,))[0] == model:
                    self.tables[model].set_row(commit.checkout.slot, commit.states)
                    self._hot[session_id] = (model, commit.checkout.slot, revision)
                else:  # its version was unloaded here meanwhile
                    self._drop(session_id)
                outcomes.append(Outcome.APPLIED)
            elif result == 0:
                self._drop(session_id)
                outcomes.append(Outcome.CONFLICT)
            else:
                self._drop(session_id)
                outcomes.append(Outcome.GONE)
        return outcomes

    # -- the cache ----------------------------------------------------------------------------

    def _hot_slot(self, session_id: str, model: str, pinned: set[str]) -> int:
        """The session's slot in its version's table, taking one (from the least recently used
        unpinned session of that table if it is full: its state is safe in Redis)."""
        hot = self._hot.get(session_id)
        if hot is not None and hot[0] == model:
            self._hot.move_to_end(session_id)
            return hot[1]
        self._drop(session_id)
        slot = self.tables[model].allocate()
        if slot is None:
            victim = next(
                (
                    sid
                    for sid, (key, _, _) in self._hot.items()
                    if key == model and sid not in pinned
                ),
                None,
            )
            if victim is None:
                raise ServiceError("every slot is held by the running batch; raise --capacity")
            _, slot, _ = self._hot.pop(victim)
            metrics.EVICTIONS.inc()
        self._hot[session_id] = (model, slot, "")
        return slot

    def _drop(self, session_id: str) -> None:
        hot = self._hot.pop(session_id, None)
        if hot is not None and hot[0] in self.tables:
            self.tables[hot[0]].release(hot[1])

    def _decode(
        self, session_id: str, states: list[bytes | None], layout: _Layout
    ) -> list[np.ndarray]:
        rows = []
        for units, blob in zip(layout.units, states):
            if blob is None or len(blob) != 4 * units:
                raise ServiceError(f"session {session_id!r} has a malformed state in Redis")
            rows.append(np.frombuffer(blob, np.float32).copy())
        return rows

    @property
    def hot(self) -> int:
        return len(self._hot)


def _last_chunk(fields: list[Any] | None) -> LastChunk | None:
    last, legacy = fields if fields else (None, None)
    if last:
        return LastChunk.unpack(last)
    if legacy:  # written by a version that kept the response body
        return LastChunk.from_response(legacy)
    return None
