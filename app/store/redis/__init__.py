"""The Redis backend: the store (:mod:`.store`), its client for one Redis or a Cluster
(:mod:`.cluster`), its Lua scripts (:mod:`.scripts`), the session listing (:mod:`.listing`) and the
errors it maps (:mod:`.errors`)."""

from app.store.redis.store import RedisStore

__all__ = ["RedisStore"]
