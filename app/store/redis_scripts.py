"""The Lua scripts of the Redis store: each change of a session is one script, so it is atomic.

Layout and meaning of the fields: see :mod:`app.store.redis`.
"""

# KEYS[1] session; ARGV: ttl ms, then field/value pairs. 1 if created, 0 if the id is taken.
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
if tonumber(ARGV[1]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
"""

# KEYS[1] session; ARGV: cached version ('' if none), requested seq ('' if none), state fields.
# Returns nil if absent, else {meta, {last, resp} or {}, states or {}}: the states only when the
# cached copy is stale, the last chunk's answer ('last', or 'resp' as written before it) only for a
# replay.
READ = """
local meta = redis.call('HMGET', KEYS[1], 'ver', 'seq', 'steps', 'created', 'active', 'ttl', 'fp', 'tenant')
if not meta[1] then return nil end
local last = {}
if ARGV[2] ~= '' and ARGV[2] == meta[2] then last = redis.call('HMGET', KEYS[1], 'last', 'resp') end
local states = {}
if ARGV[1] ~= meta[1] then states = redis.call('HMGET', KEYS[1], unpack(ARGV, 3)) end
return {meta, last, states}
"""

# KEYS[1] session; ARGV: expected version, ttl ms, then field/value pairs (a new 'ver' among them).
# 1 applied, 0 changed since it was read, -1 gone.
COMMIT = """
local ver = redis.call('HGET', KEYS[1], 'ver')
if not ver then return -1 end
if ver ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

# KEYS[1] session; ARGV: the fingerprint it must have, then field/value pairs to set (a reset or an
# imported state; a new 'ver'). Returns nil if absent, 0 if it holds another model's state, else
# the meta fields after the change.
OVERWRITE = """
local fp = redis.call('HGET', KEYS[1], 'fp')
if not fp then return nil end
if fp ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
local ttl = tonumber(redis.call('HGET', KEYS[1], 'ttl'))
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 1000)) end
return redis.call('HMGET', KEYS[1], 'ver', 'seq', 'steps', 'created', 'active', 'ttl', 'fp', 'tenant')
"""

SCRIPTS = {"create": CREATE, "read": READ, "commit": COMMIT, "overwrite": OVERWRITE}
