"""Analytics' Redis state (shell): every key, the ingest script, the per-date locks.

Keys (keyed by stable ids, so redelivery and two replicas change nothing):
- ``avwap:state:analytics:day:<D>``: hash record key -> message JSON (HSETNX) for every message of D,
  ``...:prov:<D>``: record key -> the provenance (code version, settings hash) of its first ingest;
- ``avwap:state:analytics:hist:<type>``: the same for the types trade reconstruction needs across
  days, and ``...:histlog:<type>``: their keys in ingest order (workers read the history incrementally);
- ``avwap:state:analytics:dates``: every date ingested; ``...:sessions``: sorted set of the dates of
  the session events seen on avwap:clock;
- ``avwap:state:analytics:snapshots``: hash date -> canonical PortfolioSnapshot JSON
  (``...:snapver`` counts its writes, so a worker reloads it only after another worker wrote);
- ``avwap:state:analytics:closed``: set of dates whose CLOSE snapshot was processed;
- ``avwap:state:analytics:decisions``: candidate batch id (or ``open:<D>``) -> PortfolioDecisionBatch;
- ``avwap:state:analytics:opens``: sorted set, date scored by the ms of its OPEN event's entry id;
- ``avwap:state:analytics:dirty``: ledger files (``<D>|ledger`` / ``<D>|journal``) to rewrite;
- lock ``avwap:state:analytics:lock:<D>``: one writer of D's artifacts at a time;
- ``avwap:state:analytics:sealed``: the newest sealed date. Once a closed session is more than
  ANALYTICS_KEEP_SESSIONS closed sessions old its day/prov keys and dirty marks are dropped and it is
  sealed (``seal``; its decisions and OPEN go too): every closed date up to this one. The ingest stores nothing of a sealed date
  and says so (the worker dead-letters the message), so a late message never re-creates the keys
  nor rewrites the session's finished artifacts from partial records.
"""

from __future__ import annotations

import logging

import msgspec
import redis

from shared.schemas import Message, PortfolioDecisionBatch, PortfolioSnapshot, decode, type_name_of
from shared.streams import state_key

from .ledger import HISTORY_TYPES, ledger_file_of, ledger_record, record_key

log = logging.getLogger(__name__)

SVC = "analytics"
DATES_KEY = state_key(SVC, "dates")
SNAPSHOTS_KEY = state_key(SVC, "snapshots")
SNAPVER_KEY = state_key(SVC, "snapver")
CLOSED_KEY = state_key(SVC, "closed")
SESSIONS_KEY = state_key(SVC, "sessions")  # sorted set of session dates seen on avwap:clock
DECISIONS_KEY = state_key(SVC, "decisions")  # candidate batch id (or open:<D>) -> PortfolioDecisionBatch JSON
OPENS_KEY = state_key(SVC, "opens")  # sorted set: date scored by the ms of its OPEN event's entry id
DIRTY_KEY = state_key(SVC, "dirty")  # set of "<D>|ledger" / "<D>|journal" files to rewrite

SEALED_KEY = state_key(SVC, "sealed")  # the newest sealed date (see the module doc)

# KEYS: day, prov, hist, histlog, dates, sessions, dirty, closed, sealed
# ARGV: key, data, date, prov, is_history, is_session, dirty member
# returns {1 if newly stored, 1 if the date's CLOSE snapshot was already processed, 1 if the date is sealed}
_SEALED = """
local h = redis.call('GET', KEYS[9])
if h and ARGV[3] <= h and redis.call('SISMEMBER', KEYS[8], ARGV[3]) == 1 then return {0, 1, 1} end
"""
_INGEST = _SEALED + """
local new = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
if new == 1 then
  redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[4])
  redis.call('SADD', KEYS[7], ARGV[7])
end
if ARGV[5] == '1' and redis.call('HSETNX', KEYS[3], ARGV[1], ARGV[2]) == 1 then
  redis.call('RPUSH', KEYS[4], ARGV[1])
end
redis.call('SADD', KEYS[5], ARGV[3])
if ARGV[6] == '1' then redis.call('ZADD', KEYS[6], 0, ARGV[3]) end
return {new, redis.call('SISMEMBER', KEYS[8], ARGV[3]), 0}
"""

# KEYS: day, prov, dirty, sealed, decisions, opens. ARGV: date. Drops the date's records, dirty marks, decisions
# (its batches' and ``open:<D>``) and OPEN; the horizon only moves on.
_SEAL = """
for _, k in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(k, 1, 16) == 'candidate_batch:' then redis.call('HDEL', KEYS[5], string.sub(k, 17)) end
end
redis.call('HDEL', KEYS[5], 'open:' .. ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1] .. '|ledger', ARGV[1] .. '|journal')
local h = redis.call('GET', KEYS[4])
if not h or h < ARGV[1] then redis.call('SET', KEYS[4], ARGV[1]) end
"""


def day_key(date: str) -> str:
    return state_key(SVC, "day", date)


def prov_key(date: str) -> str:
    return state_key(SVC, "prov", date)


def hist_key(type_name: str) -> str:
    return state_key(SVC, "hist", type_name)


def histlog_key(type_name: str) -> str:
    return state_key(SVC, "histlog", type_name)


class Store:
    """Redis state of the analytics service (see the module docstring)."""

    def __init__(self, r: redis.Redis, prov: bytes = b"{}", lock_timeout_s: float = 60.0) -> None:
        self.r = r
        self.prov = prov  # canonical JSON of this process's provenance (code version, settings hash)
        self.lock_timeout_s = lock_timeout_s
        self._ingest = r.register_script(_INGEST)
        self._seal = r.register_script(_SEAL)
        self.snapshot_cache = SnapshotCache(r)

    def ingest(self, msg: Message) -> tuple[str, str, bool, bool, bool] | None:
        """Store a message once; returns (date, key, newly stored, date already closed, date sealed: nothing
        stored) or None when not kept."""
        rk = record_key(msg)
        if rk is None:
            return None
        date, key = rk
        rec = ledger_record(msg)
        data = msgspec.json.encode(rec) if isinstance(rec, dict) else msgspec.json.encode(msg)
        t = type_name_of(msg)
        new, closed, sealed = self._ingest(keys=[day_key(date), prov_key(date), hist_key(t), histlog_key(t), DATES_KEY,
                                                 SESSIONS_KEY, DIRTY_KEY, CLOSED_KEY, SEALED_KEY],
                                   args=[key, data, date, self.prov, int(t in HISTORY_TYPES), int(t == "session_event"),
                                         f"{date}|{ledger_file_of(key)}"])
        return date, key, bool(new), bool(closed), bool(sealed)

    def day(self, date: str) -> dict[str, bytes]:
        raw = self.r.hgetall(day_key(date))
        return {k.decode(): v for k, v in sorted(raw.items())}  # type: ignore[union-attr]

    def day_provenance(self, date: str) -> dict[str, bytes]:
        raw = self.r.hgetall(prov_key(date))
        return {k.decode(): v for k, v in raw.items()}  # type: ignore[union-attr]

    def day_keys(self, date: str) -> list[bytes]:
        return self.r.hkeys(day_key(date))  # type: ignore[return-value]

    def snapshots(self) -> dict[str, PortfolioSnapshot]:
        return self.snapshot_cache.all()

    def first_session(self) -> str:
        """The earliest date of any session event ingested ("" when none)."""
        got = self.r.zrange(SESSIONS_KEY, 0, 0)
        return got[0].decode() if got else ""

    def locked(self, date: str):
        """The lock of ``date``'s artifacts: it expires ANALYTICS_LOCK_TIMEOUT_S after a holder died
        (SIGKILL), so a successor waits at most that long."""
        t = self.lock_timeout_s
        return self.r.lock(state_key(SVC, "lock", date), timeout=t, blocking_timeout=5 * t)

    def mark_closed(self, date: str) -> None:
        self.r.sadd(CLOSED_KEY, date)

    # retention by trade date
    def sealed(self, date: str) -> bool:
        """Whether ``date``'s records were dropped (a closed date up to the sealed horizon)."""
        pipe = self.r.pipeline(transaction=False)
        pipe.get(SEALED_KEY)
        pipe.sismember(CLOSED_KEY, date)
        horizon, closed = pipe.execute()
        return bool(horizon) and date <= horizon.decode() and bool(closed)

    def to_seal(self, date: str, keep: int) -> list[str]:
        """The closed dates to seal after ``date``'s close: those older than the ``keep`` newest closed dates
        and past the horizon, and ``date`` itself when it is a late close at or before the horizon."""
        pipe = self.r.pipeline(transaction=False)
        pipe.smembers(CLOSED_KEY)
        pipe.get(SEALED_KEY)
        members, raw = pipe.execute()
        horizon = raw.decode() if raw else ""
        closed = sorted(m.decode() for m in members)
        old = [d for d in closed[:-keep] if d > horizon]
        return old + [date] if horizon and date <= horizon and date not in old else old

    def seal(self, date: str) -> None:
        """Drop ``date``'s records and dirty marks and move the horizon to it (the caller holds its lock)."""
        self._seal(keys=[day_key(date), prov_key(date), DIRTY_KEY, SEALED_KEY, DECISIONS_KEY, OPENS_KEY], args=[date])

    # decisions
    def decided(self, key: str) -> bool:
        return bool(self.r.hexists(DECISIONS_KEY, key))

    def decision(self, key: str) -> PortfolioDecisionBatch | None:
        raw = self.r.hget(DECISIONS_KEY, key)
        return decode(raw, PortfolioDecisionBatch) if raw else None  # type: ignore[arg-type,return-value]

    def keep_decision(self, key: str, out: PortfolioDecisionBatch) -> PortfolioDecisionBatch:
        """Store ``out`` under ``key`` unless decisions are stored there already; returns the stored ones."""
        self.r.hsetnx(DECISIONS_KEY, key, msgspec.json.encode(out))
        return decode(self.r.hget(DECISIONS_KEY, key), PortfolioDecisionBatch)  # type: ignore[arg-type,return-value]

    def open_ms(self, date: str) -> float | None:
        """The ms of ``date``'s first OPEN event entry id (None: no OPEN seen)."""
        return self.r.zscore(OPENS_KEY, date)  # type: ignore[return-value]

    def note_open(self, date: str, ms: int) -> tuple[int, int]:
        """Record ``date``'s OPEN at ``ms`` (the first one wins); returns (its ms, the ms of the
        latest earlier OPEN, 0 when none)."""
        self.r.zadd(OPENS_KEY, {date: ms}, nx=True)
        ms = int(self.r.zscore(OPENS_KEY, date) or ms)
        prev = self.r.zrevrangebyscore(OPENS_KEY, ms - 1, "-inf", start=0, num=1, withscores=True)
        return ms, int(prev[0][1]) if prev else 0  # type: ignore[index]

    # dirty ledger files
    def dirty(self) -> dict[str, set[str]]:
        """date -> the names of its ledger files marked dirty."""
        by_date: dict[str, set[str]] = {}
        for m in self.r.smembers(DIRTY_KEY):  # type: ignore[union-attr]
            date, _, name = m.decode().partition("|")
            by_date.setdefault(date, set()).add(name)
        return by_date

    def mark_clean(self, date: str, names: tuple[str, ...]) -> None:
        self.r.srem(DIRTY_KEY, *(f"{date}|{name}" for name in names))

    # cross-day history
    def history_since(self, pos: dict[str, int]) -> tuple[dict[str, int], list[Message]]:
        """The history messages logged after ``pos`` (type -> keys read), type by type in
        HISTORY_TYPES order, each in ingest order; and the new positions."""
        pipe = self.r.pipeline(transaction=False)
        for t in HISTORY_TYPES:
            pipe.llen(histlog_key(t))
        lengths = dict(zip(HISTORY_TYPES, pipe.execute(), strict=True))
        out: list[Message] = []
        new_pos = dict(pos)
        for t in HISTORY_TYPES:
            n = int(lengths[t])
            if n <= pos[t]:
                continue
            keys = self.r.lrange(histlog_key(t), pos[t], n - 1)
            vals = self.r.hmget(hist_key(t), keys)
            out += [decode(v) for v in vals if v is not None]
            new_pos[t] = n
        return new_pos, out

    def backfill_logs(self) -> None:
        """Append to each ingest log the history keys it lacks (state written before the logs
        existed); WATCHed, so concurrent replicas append each key once."""
        for t in HISTORY_TYPES:
            for _ in range(20):
                with self.r.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(histlog_key(t))
                        if pipe.hlen(hist_key(t)) <= pipe.llen(histlog_key(t)):
                            break
                        logged = set(pipe.lrange(histlog_key(t), 0, -1))
                        missing = sorted(k for k in pipe.hkeys(hist_key(t)) if k not in logged)
                        pipe.multi()
                        pipe.rpush(histlog_key(t), *missing)
                        pipe.execute()
                        log.warning("analytics: backfilled %d %s keys into %s", len(missing), t, histlog_key(t))
                        break
                    except redis.WatchError:
                        continue


class SnapshotCache:
    """The portfolio snapshots (date -> snapshot), reloaded only when another worker wrote one."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self.ver: int | None = None
        self.by_date: dict[str, PortfolioSnapshot] = {}

    def all(self) -> dict[str, PortfolioSnapshot]:
        ver = int(self.r.get(SNAPVER_KEY) or 0)
        if ver != self.ver:
            raw = self.r.hgetall(SNAPSHOTS_KEY)
            out = {k.decode(): decode(v, PortfolioSnapshot) for k, v in raw.items()}  # type: ignore[union-attr]
            self.by_date = dict(sorted(out.items()))  # type: ignore[arg-type]
            self.ver = ver  # a write between GET and HGETALL only makes the next call reload again
        return self.by_date

    def put(self, date: str, snap: PortfolioSnapshot) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(SNAPSHOTS_KEY, date, msgspec.json.encode(snap))
        pipe.incr(SNAPVER_KEY)
        _, ver = pipe.execute()
        if self.ver is not None and ver == self.ver + 1:  # nobody else wrote meanwhile: the cache stays current
            self.by_date = dict(sorted({**self.by_date, date: snap}.items()))
            self.ver = ver
