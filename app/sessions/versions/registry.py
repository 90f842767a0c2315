"""The model versions of one replica: the repository as last read, an entry per version, the
retirements every replica shares (in the store), and the live sessions per version; the rules a
session's model meets in its turn; what operators ask. See the package's docstring."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Any

from app import __version__, metrics
from app.engine import Engine
from app.errors import (
    Conflict,
    InvalidInput,
    ModelMismatch,
    ModelNotFound,
    ServiceError,
    Unavailable,
)
from app.model.repository import Repository, Source
from app.model.spec import ModelSpec, model_key
from app.sessions import periodic
from app.sessions.versions import loading, policy
from app.sessions.versions.entry import LOADING_RETRY_S, MODES, STATES, Version, unavailable
from app.sessions.versions.moves import check_target, move_all
from app.store.records import SessionRecord

log = logging.getLogger("app.sessions.versions")
RESCAN_S = 0.1


class Versions:
    """The model versions of this replica: which are served, the rules a session's model meets,
    and what operators ask (describe, load, unload, retire)."""

    def __init__(
        self,
        repository: Repository,
        engine: Engine,
        loader: Callable[[Source], Any],
        warm_shapes: tuple[int, int],
        keep: int = 2,
        poll_s: float = 5.0,
    ):
        self.repository, self.engine, self.store = repository, engine, engine.store
        self.loader, self.warm_shapes = loader, warm_shapes
        self.keep, self.poll_s = keep, poll_s
        self.entries: dict[str, Version] = {}
        self.sources: dict[str, dict[int, Source]] = {}
        self.retired: dict[str, str] = {}
        self.counts: dict[str, int] = {}
        self._poller: asyncio.Task | None = None
        self._preloaded: list[Any] = []
        self._scanned = 0.0

    # -- start and stop -----------------------------------------------------------------------

    def preload(self, models: list[Any]) -> None:
        """The versions loaded before serving (compiled, not yet warm): ``start`` warms them."""
        self._scan()
        for model in models:
            spec = model.spec
            entry = self._entry(spec.name, spec.version)
            entry.state, entry.spec = "loading", spec
            # Its table now: a snapshot restores into it.
            self.store.add_model(spec.key, spec.fingerprint, spec.state_units)
            self._preloaded.append(model)

    async def start(self) -> None:
        """Warm the preloaded versions (then the engine is ready), and watch the repository."""
        started = time.perf_counter()
        for model in self._preloaded:
            await self.engine.warm(model, self.warm_shapes)
            self._serve(self.entries[model.spec.key], model)
        self._preloaded = []
        log.info("model compiled and warmed in %.1f s", time.perf_counter() - started)
        self.engine.ready = True
        self._publish()
        if self.poll_s > 0 or self.store.kind == "redis":
            # Without a folder to read, still the retirements and the counts, now and then.
            self._poller = asyncio.create_task(
                periodic.every(
                    self.poll_s or 5.0, self.poll, "checking the model repository failed"
                ),
                name="model-versions",
            )

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()

    @property
    def max_features(self) -> int:
        return max((e.spec.input_features for e in self.entries.values() if e.spec), default=1)

    @property
    def fingerprints(self) -> dict[str, str]:
        """Of every version served, or loaded and warming."""
        return {
            key: e.spec.fingerprint
            for key, e in self.entries.items()
            if e.serving or e.key in self.store.tables
        }

    # -- the rules a session's model meets ----------------------------------------------------

    def problem(self, record: SessionRecord) -> ServiceError | None:
        """Why the session cannot run here now (its version is loading, failed, not in the
        repository, or another model's state is under its name), or None. Asking starts the load
        of a version in the repository that this replica has not loaded."""
        entry = self.entries.get(record.model_key) if record.model_key else None
        if entry is not None and entry.serving:
            if record.fingerprint is not None and record.fingerprint != entry.spec.fingerprint:
                metrics.CONFLICTS.labels("model").inc()
                return ModelMismatch(record.session_id, record.fingerprint, entry.spec.fingerprint)
            return None
        if record.model_key is None:  # written before versions, by a model served nowhere here
            metrics.CONFLICTS.labels("model").inc()
            return ModelMismatch(
                record.session_id, record.fingerprint, ", ".join(self.fingerprints.values())
            )
        name, _, number = record.model_key.rpartition("/")
        source = self.sources.get(name, {}).get(int(number))
        if source is None and time.monotonic() - self._scanned >= RESCAN_S:
            # Another replica may have seen a version this one has not read yet: look now (a
            # folder listing, at most ten a second; a look less than 0.1 s old is trusted: a
            # version takes seconds to reach a session on another replica), rather than call the
            # session lost.
            self._scan()
            source = self.sources.get(name, {}).get(int(number))
        if source is None:
            return Conflict(
                f"session {record.session_id!r} runs model {name} version {number}, which this "
                "server's model repository does not have (put it back, or delete the session)"
            )
        return unavailable(self._load_soon(source))

    def spec_of(self, record: SessionRecord) -> ModelSpec:
        """The spec of the version the session runs, or the error :meth:`problem` gives."""
        problem = self.problem(record)
        if problem is not None:
            raise problem
        return self.entries[record.model_key].spec

    def choose(self, name: str | None, version: int | None) -> str:
        """The version a new session runs: ``name``'s ``version``, or its newest ready one."""
        names = sorted(set(self.sources) | {e.name for e in self.entries.values() if e.serving})
        if name is None:
            if len(names) != 1:
                raise InvalidInput(
                    f'this server serves the models {", ".join(names)}: name one as "model"'
                )
            name = names[0]
        if name not in names:
            raise ModelNotFound(name, hint=f"the models are {', '.join(names)}")
        if version is None:
            ready = [e for e in self.entries.values() if e.name == name and e.state == "ready"]
            known = self._numbers(name) if not ready else set()
            if known and all(model_key(name, v) in self.retired for v in known):
                raise Conflict(
                    f"every version of model {name!r} is retired (or unloaded): running sessions "
                    "finish, and a newly published version serves new ones"
                )
            if not ready:
                raise Unavailable(
                    f"no version of model {name!r} is ready yet", retry_after=LOADING_RETRY_S
                )
            return max(ready, key=lambda e: e.version).key
        key = model_key(name, version)
        entry = self.entries.get(key)
        if key in self.retired:
            raise Conflict(
                f"version {version} of model {name!r} is retired; new sessions get "
                f"version {self._newest(name) or 'none yet'}"
            )
        if entry is not None and entry.state == "ready":
            return key
        source = self.sources.get(name, {}).get(version)
        if source is None or key not in self._wanted():
            raise ModelNotFound(name, version, f"see GET /v1/models/{name}")
        raise unavailable(self._load_soon(source))

    def serving(self, name: str | None, version: int | None) -> list[Version]:
        """The versions served now: every model's (``name`` None), ``name``'s, or that one version."""
        found = [
            e
            for e in self.entries.values()
            if e.serving and name in (None, e.name) and version in (None, e.version)
        ]
        if name is not None and not found:
            if version is not None:
                raise ModelNotFound(name, version, f"see GET /v1/models/{name}")
            self.choose(name, None)  # the reason: no such model, or none ready yet
        return sorted(found, key=lambda e: (e.name, e.version))

    def _scan(self, found: dict[str, dict[int, Source]] | None = None) -> None:
        self.sources = self.repository.scan() if found is None else found
        self._scanned = time.monotonic()

    def _numbers(self, name: str) -> set[int]:
        """Every version of ``name`` known here: in the repository, or loaded (or once loaded)."""
        return set(self.sources.get(name, {})) | {
            e.version for e in self.entries.values() if e.name == name
        }

    def _newest(self, name: str, besides: int | None = None) -> int | None:
        ready = [
            e.version
            for e in self.entries.values()
            if e.name == name and e.state == "ready" and e.version != besides
        ]
        return max(ready, default=None)

    # -- loading and unloading ----------------------------------------------------------------

    def _entry(self, name: str, version: int) -> Version:
        key = model_key(name, version)
        if key not in self.entries:
            self.entries[key] = Version(name, version)
        return self.entries[key]

    def _load_soon(self, source: Source) -> Version:
        """Start loading ``source`` unless it is loaded, loading, or failed as its file is now."""
        entry = self._entry(source.name, source.version)
        if entry.serving or entry.loading is not None or entry.failed_stamp == source.stamp:
            return entry
        entry.state, entry.error = "loading", None
        entry.loading = asyncio.create_task(self._load(entry, source), name=f"load {entry.key}")
        return entry

    async def _load(self, entry: Version, source: Source) -> None:
        try:
            model = await loading.load(entry, source, self.loader, self.warm_shapes)
        finally:
            entry.loading = None
        if model is not None:
            self._serve(entry, model)

    def _serve(self, entry: Version, model: Any) -> None:
        self.engine.add_model(model)
        entry.model, entry.spec, entry.failed_stamp = model, model.spec, None
        entry.state = "retiring" if entry.key in self.retired else "ready"

    def _unload(self, entry: Version) -> None:
        self.engine.remove_model(entry.key)
        entry.model = None
        entry.state = "retired" if entry.key in self.retired else "unloaded"
        gc.collect()  # the graph and its weights go now, not at some later collection
        log.info("model %s version %d unloaded", entry.name, entry.version)

    def _wanted(self) -> set[str]:
        return policy.wanted(self.sources, self.retired, self.counts, self.keep)

    async def poll(self) -> None:
        """Read the repository, the retirements and the sessions per version; load what is wanted,
        move what retired versions left behind, and unload what nothing needs."""
        if self.poll_s > 0:
            self._scan(await asyncio.to_thread(self.repository.scan))
        self.retired = await self.store.retired()
        # Counting is a SCAN of every session on Redis: done only while some version is served
        # that the policy alone would not keep (one with sessions, or retired).
        if any(e.serving and e.key not in self._wanted() for e in self.entries.values()):
            self.counts = await self.store.count_by_model()
        wanted = self._wanted()
        for name, versions in self.sources.items():
            for version, source in versions.items():
                if model_key(name, version) in wanted:
                    self._load_soon(source)
        for entry in list(self.entries.values()):
            mode = self.retired.get(entry.key)
            if entry.serving and mode in ("reset", "carry") and self.counts.get(entry.key):
                target = self._newest(entry.name, besides=entry.version)
                if target is not None:
                    await move_all(
                        self.engine,
                        entry,
                        self.entries[model_key(entry.name, target)],
                        mode == "carry",
                    )
            if entry.serving and entry.key in self.retired:
                entry.state = "retiring"
            await self._settle(entry, wanted)
        self._publish()

    async def _settle(self, entry: Version, wanted: set[str]) -> None:
        """Unload ``entry`` if nothing needs it: not wanted, and no sessions, counted afresh (a
        count a few seconds old may not show sessions just moved to it by another replica)."""
        if not entry.serving or entry.key in wanted or self.engine.running_on(entry.key):
            return
        if not self.counts.get(entry.key):
            self.counts = await self.store.count_by_model(fresh=True)
        if (
            not self.counts.get(entry.key)
            and entry.serving
            and not self.engine.running_on(entry.key)
        ):
            self._unload(entry)

    def _publish(self) -> None:
        for entry in self.entries.values():
            name, version = entry.name, str(entry.version)
            if entry.spec is not None:
                labels = (__version__, name, version, entry.spec.fingerprint)
                metrics.set_info(metrics.BUILD_INFO, labels, entry.serving)
            metrics.MODEL_SESSIONS.labels(name, version).set(self.counts.get(entry.key, 0))
            for state in STATES:
                metrics.MODEL_STATE.labels(name, version, state).set(
                    1 if entry.state == state else 0
                )

    # -- what operators ask -------------------------------------------------------------------

    async def describe(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every model (or ``name``), each version with its state, layout and live sessions (the
        last counts known, while the store does not answer)."""
        try:
            self.counts = await self.store.count_by_model()
        except Unavailable:
            pass
        names = sorted(set(self.sources) | {e.name for e in self.entries.values()})
        if name is not None:
            if name not in names:
                raise ModelNotFound(name, hint=f"the models are {', '.join(names)}")
            names = [name]
        return [self._document(n) for n in names]

    def _document(self, name: str) -> dict[str, Any]:
        numbers = self._numbers(name)
        versions = []
        wanted = self._wanted()
        for number in sorted(numbers, reverse=True):
            key = model_key(name, number)
            entry = self.entries.get(key) or Version(name, number)
            state = entry.state
            if state == "unloaded" and key in self.retired:
                state = "retired"
            elif state == "unloaded" and key in wanted:
                state = "loading"
            versions.append(
                {
                    "version": number,
                    "state": state,
                    "live_sessions": self.counts.get(key, 0),
                    "retired": self.retired.get(key),
                    "error": entry.error,
                    "spec": entry.spec,
                }
            )
        return {"name": name, "default_version": self._newest(name), "versions": versions}

    async def load(self, name: str) -> dict[str, Any]:
        """Read the repository now and load ``name``'s wanted versions; answered once they are
        loaded (or failed)."""
        self._scan(await asyncio.to_thread(self.repository.scan))
        if name not in self.sources:
            raise ModelNotFound(name, hint="the model repository has no such folder")
        self.counts = await self.store.count_by_model()
        wanted = self._wanted()
        for version, source in self.sources[name].items():
            if model_key(name, version) in wanted:
                entry = self._load_soon(source)
                if entry.state == "failed" and entry.failed_stamp == source.stamp:
                    entry.failed_stamp = None  # an operator asked: try again even if unchanged
                    entry = self._load_soon(source)
        tasks = [
            e.loading for e in self.entries.values() if e.name == name and e.loading is not None
        ]
        await asyncio.gather(*(asyncio.shield(t) for t in tasks))
        self._publish()
        return self._document(name)

    async def unload(self, name: str) -> dict[str, Any]:
        """Retire every version of ``name`` not retired yet, draining (the Open Inference Protocol's
        unload): new sequences are refused, running ones finish on their versions. As a retirement
        it holds on every replica and for good: a newly published version serves the model again."""
        numbers = self._numbers(name)
        if not numbers:
            raise ModelNotFound(name)
        for number in sorted(numbers):
            if model_key(name, number) not in self.retired:
                await self.retire(name, number, "drain")
        return self._document(name)

    async def retire(self, name: str, version: int, mode: str) -> dict[str, Any]:
        if mode not in MODES:
            raise InvalidInput(f'"mode" must be one of {", ".join(MODES)}')
        key = model_key(name, version)
        entry = self.entries.get(key)
        if entry is None and version not in self.sources.get(name, {}):
            raise ModelNotFound(name, version)
        entry = self._entry(name, version)
        self.counts = await self.store.count_by_model(fresh=True)
        target = None
        if mode != "drain" and self.counts.get(key):
            newest = self._newest(name, besides=version)
            target = check_target(
                entry, None if newest is None else self.entries[model_key(name, newest)], mode
            )
        await self.store.mark_retired(key, mode)
        self.retired[key] = mode
        if entry.serving:
            entry.state = "retiring"
        moved = 0
        if target is not None:
            moved = await move_all(self.engine, entry, target, mode == "carry")
        self.counts = await self.store.count_by_model(fresh=True)
        await self._settle(entry, self._wanted())
        self._publish()
        log.info("model %s version %d retired (%s): %d sessions moved", name, version, mode, moved)
        return {
            "name": name,
            "version": version,
            "mode": mode,
            "moved": moved,
            "moved_to": target.version if target is not None else None,
            "state": entry.state,
            "live_sessions": self.counts.get(key, 0),
        }
