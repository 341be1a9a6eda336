"""Analytics' Redis state (shell): every key, the ingest's read, guards and writes, the day's writes
(``DayWork``), the per-date locks. Every write is made by a unit of work (``shared/unit_of_work.py``).

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
  sealed (``seal``; its decisions and OPEN go too): every closed date up to this one. The ingest stores nothing
  of a sealed date and says so (the worker dead-letters the message), so a late message never re-creates the keys
  nor rewrites the session's finished artifacts from partial records.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator

import msgspec
import redis

from shared.bus import DEFAULT_MAXLEN
from shared.reads import evalsha
from shared.schemas import Message, PortfolioDecisionBatch, PortfolioSnapshot, decode, type_name_of
from shared.streams import state_key
from shared.unit_of_work import UnitOfWork, attempts

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

# KEYS: day, hist (or day again), closed, sealed. ARGV: record key, date, 1 if a history type.
# Returns {day has the key, hist has the key, date closed, the sealed horizon or false}: what an ingest reads when
# it does not guess, and states as the guards of its commit (``Store.seen``).
_SEEN = """
local hist = 0
if ARGV[3] == '1' then hist = redis.call('HEXISTS', KEYS[2], ARGV[1]) end
return {redis.call('HEXISTS', KEYS[1], ARGV[1]), hist, redis.call('SISMEMBER', KEYS[3], ARGV[2]),
        redis.call('GET', KEYS[4])}
"""
_SEEN_SHA = hashlib.sha1(_SEEN.encode()).hexdigest()


class Record(msgspec.Struct, frozen=True):
    """An ingested message as analytics stores it: its NY date, record key, type and stored JSON."""

    date: str
    key: str
    type: str
    data: bytes

    @property
    def history(self) -> bool:
        return self.type in HISTORY_TYPES


class Seen(msgspec.Struct, frozen=True):
    """What Redis holds of a record when it arrives (read under WATCH, so the staged writes agree with it)."""

    new: bool  # not stored yet: this message stores it
    logged: bool  # a history record already in the cross-day history (and its ingest log)
    closed: bool  # the date's CLOSE snapshot was processed
    horizon: str  # the newest sealed date ("" when none)

    def sealed(self, date: str) -> bool:
        """Whether ``date`` was sealed: nothing of it is stored any more."""
        return self.closed and bool(self.horizon) and date <= self.horizon


def record_of(msg: Message) -> Record | None:
    """The record of a message (None: the ledger does not keep its type)."""
    rk = record_key(msg)
    if rk is None:
        return None
    rec = ledger_record(msg)
    data = msgspec.json.encode(rec) if isinstance(rec, dict) else msgspec.json.encode(msg)
    return Record(rk[0], rk[1], type_name_of(msg), data)


def day_key(date: str) -> str:
    return state_key(SVC, "day", date)


def prov_key(date: str) -> str:
    return state_key(SVC, "prov", date)


def hist_key(type_name: str) -> str:
    return state_key(SVC, "hist", type_name)


def histlog_key(type_name: str) -> str:
    return state_key(SVC, "histlog", type_name)


class Store:
    """Redis state of the analytics service (see the module docstring). Every write goes through a unit of
    work (``shared.unit_of_work``): the ingest's (``seen``, ``stage``), the day's work
    (``DayWork``), and the small ones here (clean marks, seals, the log backfill)."""

    def __init__(self, r: redis.Redis, prov: bytes = b"{}", lock_timeout_s: float = 60.0, *,
                 maxlen: int = DEFAULT_MAXLEN) -> None:
        self.r = r
        self.prov = prov  # canonical JSON of this process's provenance (code version, settings hash)
        self.lock_timeout_s = lock_timeout_s
        self.maxlen = maxlen
        self.snapshot_cache = SnapshotCache(r)
        self.closed_dates: set[str] = set()  # dates this worker saw closed (the ingest's guess; guarded)
        self.horizon = ""  # the sealed horizon as this worker last saw or set it (likewise)
        self.staged: set[tuple[str, str]] = set()  # (date, key) of records its closes stored (``DayWork.put_record``)

    def unit(self, watch: list[str] | None = None) -> Iterator[UnitOfWork]:
        """The attempts of a unit of work with no input entry (its writes commit unconditionally)."""
        return attempts(self.r, SVC, None, watch=watch or (), maxlen=self.maxlen)

    # ingest: one unit of work per message (the worker runs it)
    def seen(self, rec: Record, uow: UnitOfWork, *, guess: bool) -> Seen:
        """What Redis holds of ``rec``, guarded on ``uow`` (its commit checks that Redis still holds it). ``guess``:
        assume a new record (the common case; not one this worker's close stored) of a date this worker knows
        open or closed, read nothing, and let the guards find out otherwise; else read it, in one round trip."""
        seen = Seen(new=(rec.date, rec.key) not in self.staged, logged=False, closed=rec.date in self.closed_dates,
                    horizon=self.horizon)
        if not guess or seen.sealed(rec.date):  # a message is dead-lettered on what was read, never on a guess
            hk = hist_key(rec.type) if rec.history else day_key(rec.date)
            has, logged, closed, horizon = evalsha(self.r, _SEEN, _SEEN_SHA, [day_key(rec.date), hk, CLOSED_KEY,
                                                                              SEALED_KEY],
                                                   [rec.key, rec.date, int(rec.history)])
            seen = Seen(new=not has, logged=bool(logged), closed=bool(closed),
                        horizon=horizon.decode() if horizon else "")
            self.horizon = seen.horizon
            if seen.closed:
                self.closed_dates.add(rec.date)
        uow.expect("HEXISTS", day_key(rec.date), rec.key, answer=int(not seen.new))
        if rec.history:
            uow.expect("HEXISTS", hist_key(rec.type), rec.key, answer=int(seen.logged))
        uow.expect("SISMEMBER", CLOSED_KEY, rec.date, answer=int(seen.closed))
        if seen.closed:  # an open date is never sealed, whatever the horizon
            uow.expect("GET", SEALED_KEY, answer=seen.horizon)
        return seen

    def stage(self, uow: UnitOfWork, rec: Record, seen: Seen, *, closing: bool = False) -> None:
        """Stage the ingest of ``rec`` (not sealed): the record once with its first provenance and a dirty mark of
        its ledger file, a history record once into the cross-day history and its ingest log, the date, a session
        event's date; ``closing``: the date's CLOSE is processed now (a record stored later rewrites its files)."""
        if closing:
            self.closed_dates.add(rec.date)  # read by the next guess only; the guard checks it
        if seen.new:
            uow.hsetnx(day_key(rec.date), rec.key, rec.data)
            uow.hsetnx(prov_key(rec.date), rec.key, self.prov)
            uow.sadd(DIRTY_KEY, f"{rec.date}|{ledger_file_of(rec.key)}")
        if rec.history and not seen.logged:
            uow.hsetnx(hist_key(rec.type), rec.key, rec.data)
            uow.rpush(histlog_key(rec.type), rec.key)
        uow.sadd(DATES_KEY, rec.date)
        if rec.type == "session_event":
            uow.zadd(SESSIONS_KEY, rec.date, 0)
        if closing:
            uow.sadd(CLOSED_KEY, rec.date)

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
        """Drop ``date``'s records, dirty marks, decisions (its batches' and ``open:<D>``) and OPEN, and move the
        horizon on to it (the caller holds its lock). WATCHes the day and the horizon: a record stored meanwhile
        has its batch's decision dropped too, and the horizon never moves back."""
        for uow in self.unit(watch=[day_key(date), SEALED_KEY]):
            with uow:
                batches = [k.decode()[16:] for k in uow.r.hkeys(day_key(date)) if k.startswith(b"candidate_batch:")]
                horizon = uow.r.get(SEALED_KEY)
                uow.hdel(DECISIONS_KEY, *batches, f"open:{date}")
                uow.zrem(OPENS_KEY, date)
                uow.delete(day_key(date))
                uow.delete(prov_key(date))
                uow.srem(DIRTY_KEY, f"{date}|ledger", f"{date}|journal")
                if not horizon or horizon.decode() < date:
                    uow.set(SEALED_KEY, date)
        self.horizon = max(self.horizon, date)  # at least: the guard corrects a stale one

    # decisions (their writes: ``DayWork``)
    def decided(self, key: str) -> bool:
        return bool(self.r.hexists(DECISIONS_KEY, key))

    def decision(self, key: str) -> PortfolioDecisionBatch | None:
        raw = self.r.hget(DECISIONS_KEY, key)
        return decode(raw, PortfolioDecisionBatch) if raw else None  # type: ignore[arg-type,return-value]

    def open_ms(self, date: str) -> float | None:
        """The ms of ``date``'s first OPEN event entry id (None: no OPEN seen)."""
        return self.r.zscore(OPENS_KEY, date)  # type: ignore[return-value]

    # dirty ledger files
    def dirty(self) -> dict[str, set[str]]:
        """date -> the names of its ledger files marked dirty."""
        by_date: dict[str, set[str]] = {}
        for m in self.r.smembers(DIRTY_KEY):  # type: ignore[union-attr]
            date, _, name = m.decode().partition("|")
            by_date.setdefault(date, set()).add(name)
        return by_date

    def mark_clean(self, date: str, names: tuple[str, ...]) -> None:
        """Unmark ``date``'s ledger files at once (before they are read and rewritten: an ingest meanwhile marks
        them again)."""
        for uow in self.unit():
            with uow:
                uow.srem(DIRTY_KEY, *(f"{date}|{name}" for name in names))

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
            missing: list[bytes] = []
            for uow in self.unit(watch=[histlog_key(t)]):
                with uow:
                    missing = []
                    if uow.r.hlen(hist_key(t)) > uow.r.llen(histlog_key(t)):
                        logged = set(uow.r.lrange(histlog_key(t), 0, -1))
                        missing = sorted(k for k in uow.r.hkeys(hist_key(t)) if k not in logged)
                        uow.rpush(histlog_key(t), *missing)
            if missing:
                log.warning("analytics: backfilled %d %s keys into %s", len(missing), t, histlog_key(t))


class DayWork:
    """The Redis writes of one message's work on its date (a close of day, decisions, an OPEN), staged on the
    unit of work that commits them with the entry's XACK and outputs. Reads of decisions and snapshots see what
    this unit staged; the caller holds the date's lock, so no other worker writes the date's keys meanwhile."""

    def __init__(self, store: Store, uow: UnitOfWork) -> None:
        self.store, self.uow = store, uow
        self.kept: dict[str, PortfolioDecisionBatch] = {}
        self.snapshots: dict[str, PortfolioSnapshot] = {}
        self.records: list[tuple[str, str]] = []  # (date, key) of the records ``put_record`` staged

    def decided(self, key: str) -> bool:
        return key in self.kept or self.store.decided(key)

    def decision(self, key: str) -> PortfolioDecisionBatch | None:
        return self.kept.get(key) or self.store.decision(key)

    def keep_decision(self, key: str, out: PortfolioDecisionBatch) -> PortfolioDecisionBatch:
        """``out`` under ``key`` unless decisions are stored there already (a redelivery, another replica's
        earlier work): returns the decisions that stand."""
        stored = self.decision(key)
        if stored is not None:
            return stored
        self.uow.hsetnx(DECISIONS_KEY, key, msgspec.json.encode(out))
        self.kept[key] = out
        return out

    def note_open(self, date: str, ms: int) -> tuple[int, int]:
        """Record ``date``'s OPEN at ``ms`` (the first one stands); returns (its ms, the ms of the latest earlier
        OPEN, 0 when none)."""
        got = self.store.open_ms(date)
        if got is None:
            self.uow.zadd(OPENS_KEY, date, ms, nx=True)
        else:
            ms = int(got)
        prev = self.store.r.zrevrangebyscore(OPENS_KEY, ms - 1, "-inf", start=0, num=1, withscores=True)
        return ms, int(prev[0][1]) if prev else 0  # type: ignore[index]

    def put_record(self, rec: Record) -> None:
        """Store ``rec`` (of the locked date) with this worker's provenance, as its ingest would: the record of a
        message this unit publishes and analytics consumes, so that its ingest finds it stored (``close_of_day``).
        No dirty mark: the caller writes the ledger file with it before the commit."""
        self.uow.hsetnx(day_key(rec.date), rec.key, rec.data)
        self.uow.hsetnx(prov_key(rec.date), rec.key, self.store.prov)
        self.records.append((rec.date, rec.key))

    def put_snapshot(self, date: str, snap: PortfolioSnapshot) -> None:
        self.uow.hset(SNAPSHOTS_KEY, date, msgspec.json.encode(snap))
        self.uow.incr(SNAPVER_KEY)
        self.snapshots[date] = snap

    def committed(self) -> None:
        """After the unit committed (not a lost race): the snapshot cache takes this unit's snapshots, and the
        ingest's guess knows the records it stored (their messages come back: ``Store.seen``)."""
        for date, snap in self.snapshots.items():
            self.store.snapshot_cache.wrote(date, snap)
        if len(self.store.staged) > 1000:
            self.store.staged.clear()  # only a guess: a record guessed new is read again when its guard fails
        self.store.staged.update(self.records)


class SnapshotCache:
    """The portfolio snapshots (date -> snapshot), reloaded only when another worker wrote one."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self.ver: int | None = None
        self.by_date: dict[str, PortfolioSnapshot] = {}
        self.mine = 0  # this worker's writes since the count ``ver`` was read

    def all(self) -> dict[str, PortfolioSnapshot]:
        ver = int(self.r.get(SNAPVER_KEY) or 0)
        if self.ver is not None and ver == self.ver + self.mine:  # nobody else wrote: the cache is current
            self.ver, self.mine = ver, 0
        else:
            raw = self.r.hgetall(SNAPSHOTS_KEY)
            out = {k.decode(): decode(v, PortfolioSnapshot) for k, v in raw.items()}  # type: ignore[union-attr]
            self.by_date = dict(sorted(out.items()))  # type: ignore[arg-type]
            self.ver, self.mine = ver, 0  # a write between GET and HGETALL only makes the next call reload again
        return self.by_date

    def wrote(self, date: str, snap: PortfolioSnapshot) -> None:
        """This worker committed ``snap`` (and one increment of the write count): the cache takes it and expects
        the count one higher, so it reloads only when another worker wrote too."""
        if self.ver is None:
            return  # never loaded: the next ``all`` loads everything
        self.by_date = dict(sorted({**self.by_date, date: snap}.items()))
        self.mine += 1
