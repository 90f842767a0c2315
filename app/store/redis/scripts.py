"""The Lua scripts of the Redis store: each change of a session is one script, so it is atomic.

Layout and meaning of the fields: see :mod:`app.store.redis.store`.
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
local meta = redis.call('HMGET', KEYS[1], 'ver', 'seq', 'steps', 'created', 'active', 'ttl', 'fp', 'tenant', 'model')
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

# Whether the session (its 'model' and 'fp' fields in m) runs version ARGV[1] of fingerprint
# ARGV[2]; a session written before versions has no 'model' and is taken by its fingerprint.
RUNS = """
local function runs(m)
  if m[1] and m[1] ~= '' then return m[1] == ARGV[1] and m[2] == ARGV[2] end
  return m[2] == ARGV[2]
end
"""

# KEYS[1] session; ARGV: the version and fingerprint it must run, then field/value pairs to set (a
# reset or an imported state; a new 'ver'). Returns nil if absent, 0 if it runs another version,
# else the meta fields after the change.
OVERWRITE = (
    RUNS
    + """
local m = redis.call('HMGET', KEYS[1], 'model', 'fp')
if not m[2] then return nil end
if not runs(m) then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
local ttl = tonumber(redis.call('HGET', KEYS[1], 'ttl'))
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], math.ceil(ttl * 1000)) end
return redis.call('HMGET', KEYS[1], 'ver', 'seq', 'steps', 'created', 'active', 'ttl', 'fp', 'tenant', 'model')
"""
)

# KEYS[1] session; ARGV: the version and fingerprint it runs now, the version and fingerprint to run,
# a new 'ver', '1' to keep the state ('0': zero it and its steps), how many fields to delete (n),
# their names, then state field/value pairs (the zeroed state). 1 moved, 2 on the target already
# (moved by another replica carrying out the same retirement), 0 runs another version, nil gone.
# Its expiry is left as it was: moving is not activity.
MIGRATE = (
    RUNS
    + """
local m = redis.call('HMGET', KEYS[1], 'model', 'fp')
if not m[2] then return nil end
if m[1] == ARGV[3] and m[2] == ARGV[4] then return 2 end
if not runs(m) then return 0 end
redis.call('HSET', KEYS[1], 'model', ARGV[3], 'fp', ARGV[4], 'ver', ARGV[5])
if ARGV[6] == '0' then
  local n = tonumber(ARGV[7])
  if n > 0 then redis.call('HDEL', KEYS[1], unpack(ARGV, 8, 7 + n)) end
  redis.call('HSET', KEYS[1], 'steps', 0, unpack(ARGV, 8 + n))
end
return 1
"""
)

SCRIPTS = {
    "create": CREATE,
    "read": READ,
    "commit": COMMIT,
    "overwrite": OVERWRITE,
    "migrate": MIGRATE,
}
