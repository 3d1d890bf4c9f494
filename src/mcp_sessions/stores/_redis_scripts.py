"""The Lua scripts of the Redis store (``stores/redis.py``): each check and its write run as one
script, so they cannot interleave with another client's (DESIGN §6)."""

from __future__ import annotations

import hashlib
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as redis_errors

# One record is one string key holding a JSON object, so ``get`` is a single GET, as cheap as
# the raw driver's. Its fields:
#   k kind, i id, p principal, o origin, ca created_at, ls last_seen, it idle_ttl,
#   mx max_expires_at ('' = no cap), e expires_at, v version, s state (JSON text),
#   a attributes (JSON text), inc incarnation (random, per create), ix index deadline (>= e)
# Times are strings, not JSON numbers: Redis's cjson writes numbers with 14 significant digits,
# which would round a Unix time to 0.1 ms. Scripts compute with tonumber() and write back
# with %.17g, which round-trips an IEEE double exactly. ``s`` and ``a`` stay opaque strings
# (cjson would turn an empty list in the state into an object).

# Moves last_seen to max(ls, now), sets expires_at and the key's TTL from it, and raises the
# index deadline when the expiry passed it. Expects locals r (the record), now, ls, it.
_EXTEND = """
local e = ls + it
if r.mx ~= '' then e = math.min(e, tonumber(r.mx)) end
r.ls = string.format('%.17g', ls)
r.it = string.format('%.17g', it)
r.e = string.format('%.17g', e)
local raised = 0
if e > tonumber(r.ix) then
  local ix = ls + 2 * it
  if r.mx ~= '' then ix = math.min(ix, tonumber(r.mx)) end
  r.ix = string.format('%.17g', ix)
  raised = 1
end
local out = cjson.encode(r)
redis.call('SET', KEYS[1], out, 'PX', math.max(1, math.ceil((e - now) * 1000)))
"""

# Loads the live record of ARGV[1] (principal) as ``r``, or answers '' (not found); ``now`` is
# ARGV[n]. The scripts answer one string, not an array, because each array element costs the
# client a parse step: '' not found, '!<record>' version conflict, '=<record>' done,
# '^<record>' done and the index deadline was raised.
_LOAD = """
local blob = redis.call('GET', KEYS[1])
if not blob then return '' end
local r = cjson.decode(blob)
local now = tonumber(ARGV[%d])
if r.p ~= ARGV[1] or tonumber(r.e) <= now then return '' end
"""

# KEYS[1] record; ARGV now, ttl_ms, json. Replaces only an expired record: 1 stored, 0 not.
_CREATE = """
local old = redis.call('GET', KEYS[1])
if old and tonumber(cjson.decode(old).e) > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
return 1
"""

# KEYS[1] record; ARGV principal, expected version, state, now
_CAS = (
    _LOAD % 4
    + """
if r.v ~= tonumber(ARGV[2]) then return '!' .. blob end
r.s = ARGV[3]
r.v = r.v + 1
local ls = math.max(tonumber(r.ls), now)
local it = tonumber(r.it)
"""
    + _EXTEND
    + """
if raised == 1 then return '^' .. out end
return '=' .. out
"""
)

# KEYS[1] record; ARGV principal, now, new idle_ttl or ''
_TOUCH = (
    _LOAD % 2
    + """
local ls = math.max(tonumber(r.ls), now)
local it = tonumber(r.it)
if ARGV[3] ~= '' then it = tonumber(ARGV[3]) end
"""
    + _EXTEND
    + """
if raised == 1 then return '^' .. out end
return '=' .. out
"""
)

# KEYS[1] record; ARGV principal, now -> {0} | {1, live, incarnation}
_DELETE = """
local blob = redis.call('GET', KEYS[1])
if not blob then return {0} end
local r = cjson.decode(blob)
if r.p ~= ARGV[1] then return {0} end
redis.call('DEL', KEYS[1])
local live = 0
if tonumber(r.e) > tonumber(ARGV[2]) then live = 1 end
return {1, live, r.inc}
"""

# KEYS[1] principal index; ARGV deadline, member, now, ttl_ms
_INDEX = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return 1
"""


class Script:
    """A Lua script run by EVALSHA, loaded on first NOSCRIPT (e.g. after a server restart)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, client: aioredis.Redis, keys: list[str], args: list[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except redis_errors.NoScriptError:
            await client.script_load(self.text)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


CREATE_SCRIPT = Script(_CREATE)
CAS_SCRIPT = Script(_CAS)
TOUCH_SCRIPT = Script(_TOUCH)
DELETE_SCRIPT = Script(_DELETE)
INDEX_SCRIPT = Script(_INDEX)
