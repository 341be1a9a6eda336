"""A lease: at most one holder of a name at a time, for ``ms`` after its last renewal.

``hold`` takes the lease when it is free, renews it when the caller holds it, and tells which
(``ACQUIRED``: it was free, so whoever held it before is gone; ``RENEWED``; ``HELD_ELSEWHERE``).
``release`` gives it up at once, only if the caller still holds it. The consumer of an exclusive
group (``shared.consumer.Consumer(exclusive=True)``) holds ``avwap:lease:<group>``.
"""

from __future__ import annotations

import redis

LEASE_PREFIX = "avwap:lease"
HELD_ELSEWHERE, ACQUIRED, RENEWED = 0, 1, 2

_HOLD_LUA = """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 2 end
if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""

_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def lease_key(name: str) -> str:
    return f"{LEASE_PREFIX}:{name}"


def hold(r: redis.Redis, key: str, holder: str, ms: int) -> int:
    """Take or renew ``key`` for ``holder`` for ``ms``: ``ACQUIRED``, ``RENEWED`` or ``HELD_ELSEWHERE``."""
    return int(r.register_script(_HOLD_LUA)(keys=[key], args=[holder, ms]))


def release(r: redis.Redis, key: str, holder: str) -> bool:
    """Give ``key`` up if ``holder`` holds it (True when it did)."""
    return bool(r.register_script(_RELEASE_LUA)(keys=[key], args=[holder]))


def holder_of(r: redis.Redis, key: str) -> str | None:
    raw = r.get(key)
    return raw.decode() if isinstance(raw, bytes) else raw
