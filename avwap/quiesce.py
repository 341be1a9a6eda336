"""Quiescence: every consumer group on every stream has nothing pending and no lag.

The replay driver waits for it after each step so that a replay is deterministic whatever
the process timing.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

import redis

from shared.bus import entry_id
from shared.reads import evalsha
from shared.streams import ALL_STREAMS, DLQ

# One round trip: for each existing stream, the groups with pending entries or entries not yet read.
# A group's ``lag`` (Redis 7) says how many entries it has not been delivered; only where the server
# gives none is the stream's last id read (``XINFO STREAM``, which copies the first and last entries).
_BUSY_LUA = """
local function id(s)
  local ms, seq = string.match(s, '^(%d+)-(%d+)$')
  return tonumber(ms or 0), tonumber(seq or 0)
end
local function field(flat, name)
  for i = 1, #flat, 2 do if flat[i] == name then return flat[i + 1] end end
end
local busy, limit = {}, tonumber(ARGV[1])
for _, s in ipairs(KEYS) do
  if redis.call('EXISTS', s) == 1 then
    local lms, lseq
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', s)) do
      local lag, waiting = field(g, 'lag'), false
      if type(lag) == 'number' then
        waiting = lag > 0
      else  -- no lag (an older server, or one that cannot count it): compare with the stream's last id
        if lms == nil then lms, lseq = id(field(redis.call('XINFO', 'STREAM', s), 'last-generated-id')) end
        local dms, dseq = id(field(g, 'last-delivered-id'))
        waiting = dms < lms or (dms == lms and dseq < lseq)
      end
      if field(g, 'pending') > 0 or waiting then
        table.insert(busy, s .. '/' .. field(g, 'name'))
        if #busy == limit then return busy end
      end
    end
  end
end
return busy
"""
_BUSY_SHA = hashlib.sha1(_BUSY_LUA.encode()).hexdigest()


def busy_groups(r: redis.Redis, streams: Sequence[str] = ALL_STREAMS, limit: int = 0) -> list[str]:
    """Groups that still have work: ``stream/group`` names with pending entries or unread entries
    (``limit`` > 0: the script stops at that many, enough for a poll that only asks "quiet yet?").

    One Lua call (one round trip, atomic: a consistent view of every stream, and a consumer's
    commit acks its entry and publishes its outputs atomically, so one quiet answer is final). A
    backend whose scripts cannot call XINFO (fakeredis) reads with pipelines, which are not atomic
    across streams: it is quiet only when two reads in a row say so.
    """
    watched = [s for s in streams if s != DLQ]
    try:
        got = evalsha(r, _BUSY_LUA, _BUSY_SHA, watched, [limit])
        return [x.decode() if isinstance(x, bytes) else x for x in got]
    except redis.ResponseError:
        return _busy_groups_pipelined(r, watched) or _busy_groups_pipelined(r, watched)


def _busy_groups_pipelined(r: redis.Redis, watched: Sequence[str]) -> list[str]:
    pipe = r.pipeline(transaction=False)
    for s in watched:
        pipe.exists(s)
    exists = pipe.execute()
    live = [s for s, e in zip(watched, exists, strict=True) if e]
    pipe = r.pipeline(transaction=False)
    for s in live:
        pipe.xinfo_stream(s)
        pipe.xinfo_groups(s)
    res = pipe.execute()
    busy: list[str] = []
    for i, s in enumerate(live):
        last = entry_id(res[2 * i]["last-generated-id"])
        for g in res[2 * i + 1]:
            name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
            if g["pending"] or entry_id(g["last-delivered-id"]) < last:
                busy.append(f"{s}/{name}")
    return busy


def wait_quiescent(r: redis.Redis, timeout: float = 120.0, poll: float = 0.001, settle: int = 1,
                   on_wait: object = None) -> None:
    """Block until ``settle`` consecutive polls see no busy group; raise TimeoutError after ``timeout``.

    ``on_wait`` (optional callable) runs on each busy poll, e.g. to check that services are alive.
    """
    deadline = time.monotonic() + timeout
    quiet = 0
    sleep = poll
    while True:
        busy = busy_groups(r, limit=1)
        if not busy:
            quiet += 1
            if quiet >= settle:
                return
            time.sleep(poll)
            continue
        quiet = 0
        if callable(on_wait):
            on_wait()
        if time.monotonic() > deadline:
            busy = busy_groups(r)
            raise TimeoutError(f"not quiescent after {timeout:.0f}s: {', '.join(busy[:6])}")
        time.sleep(sleep)
        sleep = min(sleep * 1.5, 0.003)
