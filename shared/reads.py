"""Reads of several string keys in one round trip, each as a plain ``GET`` would answer it.

``MGET`` answers nil for a key of another type, which would read a broken control key as absent
(for the trading state: ACTIVE, fail-open). ``typed_get`` runs one script that answers, per key, its
value, None when absent, or the ``WRONGTYPE`` error ``GET`` would raise (returned, not raised), so a
caller treats each key as it treats a failed ``GET``. It runs on a WATCHing pipeline too (immediate
mode: the WATCH stays).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import redis

# Appends to the Lua table ``out``, for KEYS[first] .. KEYS[#KEYS], each key's type and (strings only) value;
# a script that reads other things first (risk's state revision) starts at a later key.
TYPED_VALUES_LUA = """
for i = {first}, #KEYS do
  local t = redis.call('TYPE', KEYS[i])['ok']
  out[#out + 1] = t
  if t == 'string' then out[#out + 1] = redis.call('GET', KEYS[i]) else out[#out + 1] = false end
end
"""
_TYPED_GET_LUA = "local out = {}" + TYPED_VALUES_LUA.replace("{first}", "1") + "return out\n"
_SHA = hashlib.sha1(_TYPED_GET_LUA.encode()).hexdigest()


def evalsha(r: redis.Redis, script: str, sha: str, keys: Sequence[str], args: Sequence[object] = ()) -> list:
    """``EVALSHA`` of ``script`` (``sha``: its SHA1), loading it once when the server lacks it; on a WATCHing
    pipeline it runs at once and keeps the WATCH (unlike redis-py's ``Script`` in a pipeline, which asks
    ``SCRIPT EXISTS`` before every ``EXEC``)."""
    try:
        return r.evalsha(sha, len(keys), *keys, *args)  # type: ignore[return-value]
    except redis.exceptions.NoScriptError:
        r.script_load(script)
        return r.evalsha(sha, len(keys), *keys, *args)  # type: ignore[return-value]


def typed_value(kind: bytes, value: bytes | None) -> bytes | None | redis.ResponseError:
    """What ``GET`` answers for a key of type ``kind`` holding ``value`` (a non-string: the WRONGTYPE error)."""
    if kind in (b"string", b"none"):
        return value
    return redis.ResponseError(f"WRONGTYPE the key holds a {kind.decode()}, not a string")


def typed_get(r: redis.Redis, keys: Sequence[str]) -> list[bytes | None | redis.ResponseError]:
    """Each key's ``GET`` answer (value, None, or the WRONGTYPE error), in one round trip."""
    flat = evalsha(r, _TYPED_GET_LUA, _SHA, keys)
    return [typed_value(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]
