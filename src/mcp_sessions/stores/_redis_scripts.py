"""The Lua scripts of the Redis store (``stores/redis.py``): each check and its write run as one
script, so they cannot interleave with another client's (DESIGN §6). They do the least work
they can (issue #15): the hot one compares a tag and writes, without decoding any JSON."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as redis_errors

# One record is one string key: a tag of TAG_LENGTH hex digits, then a JSON object. The tag is
# random and new with every write, so equal tags mean an unchanged record: it is what a
# compare-and-set compares (SWAP below), and the only part of the value a script has to look
# at on the hot path. A value written before the tag existed starts with '{' and has no tag;
# the whole value stands for one then (the store's read_value), and the next write adds a tag.
# The object's fields:
#   k kind, i id, p principal, o origin, ca created_at, ls last_seen, it idle_ttl,
#   mx max_expires_at ('' = no cap), e expires_at, v version, s state (JSON text),
#   a attributes (JSON text), inc incarnation (random, per create), ix index deadline (>= e)
# Times are strings, written by the client with repr(), which round-trips an IEEE double
# exactly (Redis's cjson would write 14 significant digits). ``s`` and ``a`` stay opaque
# strings (cjson would turn an empty list in the state into an object).
TAG_LENGTH = 16

# The record's JSON, whether or not its value starts with a tag. Expects a local ``blob``.
_BODY = (
    """
local body = blob
if string.sub(blob, 1, 1) ~= '{' then body = string.sub(blob, """
    + str(TAG_LENGTH + 1)
    + """) end
"""
)

# KEYS[1] record; ARGV the tag (or whole untagged value) the writer started from, the new
# value, its TTL in ms. The compare-and-set of every write after create: 1 written; '' no
# such key; otherwise the value there now, so a writer that lost needs no second read. The
# client has checked the principal, the expiry and the version on the value it started from,
# and computed the new one; an equal tag means Redis still holds exactly that value.
# The GET after the SET is for the caller's CLIENT TRACKING (stores/_redis_tracking.py): the
# write ends Redis's tracking of the key for the connection that wrote it (NOLOOP tells it
# nothing of its own write), and a read inside a script tracks the key for the script's
# caller again, so the next write by anyone else is reported. It reads a few hundred bytes
# Redis has just written: the cheapest command on the path.
_SWAP = """
local blob = redis.call('GET', KEYS[1])
if not blob then return '' end
if string.sub(blob, 1, #ARGV[1]) ~= ARGV[1] then return blob end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('GET', KEYS[1])
return 1
"""

# KEYS[1] record; ARGV now, ttl_ms, value. Replaces only an expired record: 1 stored, 0 not.
_CREATE = (
    """
local blob = redis.call('GET', KEYS[1])
if blob then
"""
    + _BODY
    + """
  if tonumber(cjson.decode(body).e) > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[2])
return 1
"""
)

# KEYS[1] record; ARGV principal, now -> {0} | {1, live, incarnation}
_DELETE = (
    """
local blob = redis.call('GET', KEYS[1])
if not blob then return {0} end
"""
    + _BODY
    + """
local r = cjson.decode(body)
if r.p ~= ARGV[1] then return {0} end
redis.call('DEL', KEYS[1])
local live = 0
if tonumber(r.e) > tonumber(ARGV[2]) then live = 1 end
return {1, live, r.inc}
"""
)

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

    async def on(self, execute: Callable[..., Awaitable[Any]], key: str, *args: Any) -> Any:
        """Run on one key through ``execute`` (a connection's send-and-wait)."""
        try:
            return await execute("EVALSHA", self.sha, 1, key, *args)
        except redis_errors.NoScriptError:
            # EVAL, not SCRIPT LOAD: it names the key, so a Redis Cluster routes it to the
            # node that lacks the script (SCRIPT LOAD has no key to route by), and it leaves
            # the script cached there for the next EVALSHA.
            return await execute("EVAL", self.text, 1, key, *args)


CREATE_SCRIPT = Script(_CREATE)
SWAP_SCRIPT = Script(_SWAP)
DELETE_SCRIPT = Script(_DELETE)
INDEX_SCRIPT = Script(_INDEX)
