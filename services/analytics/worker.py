"""Analytics worker: ingestion into ledgers, decisions at PRE_MARKET (and at OPEN when candidates
are missing), the CLOSE snapshot, reconciliation, trades and report.

State (Redis, keyed by stable ids, so redelivery and two replicas change nothing):
- ``avwap:state:analytics:day:<D>``: hash record key -> message JSON (HSETNX) for every message of D,
  ``...:prov:<D>``: record key -> the provenance (code version, settings hash) of its first ingest;
- ``avwap:state:analytics:hist:<type>``: the same for the types trade reconstruction needs across
  days, and ``...:histlog:<type>``: their keys in ingest order (workers read the history incrementally);
- ``avwap:state:analytics:snapshots``: hash date -> canonical PortfolioSnapshot JSON
  (``...:snapver`` counts its writes, so a worker reloads it only after another worker wrote);
- ``avwap:state:analytics:closed``: set of dates whose CLOSE snapshot was processed;
- ``avwap:state:analytics:decisions``: candidate batch id (or ``open:<D>``) -> PortfolioDecisionBatch;
- ``avwap:state:analytics:dirty``: ledger files (``<D>|ledger`` / ``<D>|journal``) to rewrite;
- lock ``avwap:state:analytics:lock:<D>``: one writer of D's artifacts at a time.
Artifacts are always rewritten whole from the sorted records; a record of D arriving after D's
close (another replica, a late rejection) rewrites D's artifacts, so the last writer has them all.
Ledger files of a day still open are rewritten when the worker is idle and at the day's CLOSE
(not on every message); a closed day's files are rewritten at once.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import redis

from shared.alerts import make_alert
from shared.artifacts import (
    canonical_line,
    code_version,
    provenance,
    to_plain,
    write_atomic,
    write_json_artifact,
)
from shared.bars import BarStore, frame_to_rows
from shared.bus import Delivery, Emit
from shared.clock import calendar
from shared.ids import client_order_id, stable_id
from shared.schemas import (
    BarRow,
    BrokerSnapshot,
    CandidateBatch,
    DailyRejections,
    DailyTrades,
    ExitEvent,
    Fill,
    Message,
    OrderEvent,
    PortfolioDecisionBatch,
    PortfolioSnapshot,
    Rejection,
    SessionEvent,
    Trade,
    decode,
    type_name_of,
)
from shared.service import ServiceContext, ServiceSpec, run_service
from shared.settings import Settings
from shared.streams import (
    ALERTS,
    BARS_1D,
    BROKER,
    CANDIDATES,
    CLOCK,
    DLQ,
    EXITS,
    INTENTS,
    ORDERS,
    PORTFOLIO,
    REJECTIONS,
    state_key,
)

from .decisions import Guardrails, decide
from .ledger import HISTORY_TYPES, ledger_file_of, ledger_record, record_key
from .portfolio import build_snapshot, initial_snapshot
from .recon import InternalPosition, reconcile
from .report import build_report
from .trades import BarSource, build_trades, fill_of

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
STOP_KINDS = ("STOP_RESOLVED", "STOP_RATCHET", "STOP_SUBMITTED", "STOP_REPLACED")
INTENT_TYPES = ("entry_intent", "stop_intent", "exit_intent")
# record types whose late arrival changes D's artifacts beyond the ledger file
FULL_REGEN_TYPES = ("order_event", "exit_event", "rejection", "broker_snapshot", "candidate_batch",
                    "entry_intent", "stop_intent", "exit_intent")
DLQ_SCAN = 1000  # newest DLQ entries searched for a dead-lettered candidate batch
KEEP_DAYS = 400  # daily bar files kept in memory per process (older ones are re-read when needed)
MEMO_MAX = 100_000  # trade reconstruction memo entries before it is cleared

# KEYS: day, prov, hist, histlog, dates, sessions, dirty, closed
# ARGV: key, data, date, prov, is_history, is_session, dirty member
# returns {1 if newly stored, 1 if the date's CLOSE snapshot was already processed}
_INGEST = """
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
return {new, redis.call('SISMEMBER', KEYS[8], ARGV[3])}
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

    def __init__(self, r: redis.Redis, prov: bytes = b"{}") -> None:
        self.r = r
        self.prov = prov  # canonical JSON of this process's provenance (code version, settings hash)
        self._ingest = r.register_script(_INGEST)
        self.snapshot_cache = SnapshotCache(r)

    def ingest(self, msg: Message) -> tuple[str, str, bool, bool] | None:
        """Store a message once; returns (date, key, newly stored, date already closed) or None when not kept."""
        rk = record_key(msg)
        if rk is None:
            return None
        date, key = rk
        rec = ledger_record(msg)
        data = msgspec.json.encode(rec) if isinstance(rec, dict) else msgspec.json.encode(msg)
        t = type_name_of(msg)
        new, closed = self._ingest(keys=[day_key(date), prov_key(date), hist_key(t), histlog_key(t), DATES_KEY,
                                         SESSIONS_KEY, DIRTY_KEY, CLOSED_KEY],
                                   args=[key, data, date, self.prov, int(t in HISTORY_TYPES), int(t == "session_event"),
                                         f"{date}|{ledger_file_of(key)}"])
        return date, key, bool(new), bool(closed)

    def day(self, date: str) -> dict[str, bytes]:
        raw = self.r.hgetall(day_key(date))
        return {k.decode(): v for k, v in sorted(raw.items())}  # type: ignore[union-attr]

    def day_provenance(self, date: str) -> dict[str, bytes]:
        raw = self.r.hgetall(prov_key(date))
        return {k.decode(): v for k, v in raw.items()}  # type: ignore[union-attr]

    def snapshots(self) -> dict[str, PortfolioSnapshot]:
        return self.snapshot_cache.all()

    def first_session(self) -> str:
        """The earliest date of any session event ingested ("" when none)."""
        got = self.r.zrange(SESSIONS_KEY, 0, 0)
        return got[0].decode() if got else ""


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


class KnownIds:
    """Client order ids the ledger knows as of a date (order events through it, every intent)."""

    def __init__(self, order_dates: dict[str, str], intents: set[str], date: str) -> None:
        self.order_dates, self.intents, self.date = order_dates, intents, date

    def __contains__(self, coid: object) -> bool:
        d = self.order_dates.get(coid)  # type: ignore[call-overload]
        return (d is not None and d <= self.date) or coid in self.intents


def _fill_order(f: Fill) -> tuple[int, str]:
    return f.ts, f.fill_id


def _h(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


class History:
    """This process's view of the cross-day history, read incrementally from the ingest logs.

    Keeps the canonical fills (one per fill key: the smallest event id wins, as in
    ``trades.fills_from_orders``), the exit events per symbol, and the known client order ids.
    """

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self.pos = dict.fromkeys(HISTORY_TYPES, 0)
        self.fill_src: dict[str, tuple[str, Fill]] = {}  # fill key -> (event id, fill)
        self.fills: list[Fill] = []  # sorted by (ts, fill_id)
        self.by_symbol: dict[str, list[Fill]] = {}  # symbol -> its fills, sorted by (ts, fill_id)
        self.events: dict[str, list[ExitEvent]] = {}  # symbol -> sorted by (ts, event_id)
        self.order_dates: dict[str, str] = {}  # client order id -> earliest trade date of its events
        self.intents: set[str] = set()  # client order ids of every intent
        self.max_date = ""  # latest trade date of any fill or exit event
        self._sums = {"fills": 0, "exit_events": 0}  # order-independent digests (see ``digest``)

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

    def sync(self) -> None:
        pipe = self.r.pipeline(transaction=False)
        for t in HISTORY_TYPES:
            pipe.llen(histlog_key(t))
        lengths = dict(zip(HISTORY_TYPES, pipe.execute(), strict=True))
        for t in HISTORY_TYPES:
            n = int(lengths[t])
            if n <= self.pos[t]:
                continue
            keys = self.r.lrange(histlog_key(t), self.pos[t], n - 1)
            vals = self.r.hmget(hist_key(t), keys)
            for v in vals:
                if v is not None:
                    self._add(decode(v))
            self.pos[t] = n

    def _add(self, m: Message) -> None:
        if isinstance(m, OrderEvent):
            d = self.order_dates.get(m.client_order_id)
            if d is None or m.trade_date < d:
                self.order_dates[m.client_order_id] = m.trade_date
            f = fill_of(m)
            if f is None:
                return
            seen = self.fill_src.get(f.fill_id)
            if seen is not None and seen[0] <= m.event_id:
                return
            self.fill_src[f.fill_id] = (m.event_id, f)
            self._sums["fills"] += _h(f"{f.fill_id}|{m.event_id}") - (_h(f"{f.fill_id}|{seen[0]}") if seen else 0)
            if seen is not None:  # a smaller event id for the same fill: rebuild the order (rare)
                self.fills = sorted((x for _, x in self.fill_src.values()), key=_fill_order)
                self.by_symbol[f.symbol] = [x for x in self.fills if x.symbol == f.symbol]
            else:
                bisect.insort(self.fills, f, key=_fill_order)
                bisect.insort(self.by_symbol.setdefault(f.symbol, []), f, key=_fill_order)
            self.max_date = max(self.max_date, f.trade_date)
        elif isinstance(m, ExitEvent):
            bisect.insort(self.events.setdefault(m.symbol, []), m, key=lambda e: (e.ts, e.event_id))
            self._sums["exit_events"] += _h(m.event_id)
            self.max_date = max(self.max_date, m.trade_date)
        else:
            self.intents.add(client_order_id(m.intent_id))  # type: ignore[attr-defined]

    def fills_through(self, date: str) -> list[Fill]:
        return self.fills if self.max_date <= date else [f for f in self.fills if f.trade_date <= date]

    def fills_by_symbol(self, date: str) -> dict[str, list[Fill]]:
        if self.max_date <= date:
            return self.by_symbol
        return {s: [f for f in v if f.trade_date <= date] for s, v in self.by_symbol.items()}

    def events_through(self, date: str) -> dict[str, list[ExitEvent]]:
        if self.max_date <= date:
            return self.events
        return {s: [e for e in v if e.trade_date <= date] for s, v in self.events.items()}

    def digests(self, date: str) -> dict[str, str]:
        """Order-independent content digests of the fills and exit events through ``date`` (provenance inputs)."""
        if self.max_date <= date:
            return {k: f"{v % 2**64:016x}" for k, v in self._sums.items()}
        fills = sum(_h(f"{f.fill_id}|{self.fill_src[f.fill_id][0]}") for f in self.fills_through(date))
        events = sum(_h(e.event_id) for v in self.events_through(date).values() for e in v)
        return {"fills": f"{fills % 2**64:016x}", "exit_events": f"{events % 2**64:016x}"}

    def known(self, date: str) -> KnownIds:
        return KnownIds(self.order_dates, self.intents, date)


class Bars:
    """Bar-store reads for marks and excursions, memoized per process (past bars never change)."""

    def __init__(self, root: str) -> None:
        self.store = BarStore(root)
        self._dates: dict[str, list[str]] = {}
        self._rows: dict[str, tuple[int, dict[str, BarRow]]] = {}  # date -> (rows in the file, symbol -> daily bar)
        self._ext: dict[tuple[str, str], tuple[str, float, float]] = {}  # (symbol, start) -> (end, max high, min low)

    def refresh(self, date: str | None = None) -> None:
        """Forget the cached date lists (new sessions may have been written); with ``date``, only
        the lists that do not hold ``date`` although its file exists."""
        if date is None:
            self._dates = {}
            return
        for tf in ("1d", "1m"):
            known = self._dates.get(tf)
            if known is not None and date not in known and self.store.path(tf, date).exists():
                del self._dates[tf]

    def returns(self, symbols: list[str], before: str, window: int) -> dict[str, list[float]]:
        """Each symbol's close-to-close returns over the ``window`` sessions before ``before`` (NaN: a missing bar)."""
        p = self.store.daily_panel(symbols=symbols, before=before, lookback=window + 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = p.close[1:] / p.close[:-1] - 1.0
        return {s: r[:, j].tolist() for j, s in enumerate(p.symbols)}

    def dates(self, tf: str) -> list[str]:
        if tf not in self._dates:
            self._dates[tf] = self.store.dates(tf)
        return self._dates[tf]

    def day(self, date: str) -> dict[str, BarRow]:
        """symbol -> its daily bar of ``date`` (re-read when the file grew; the newest KEEP_DAYS kept)."""
        f = self.store.read_day("1d", date)
        hit = self._rows.get(date)
        if hit is not None and hit[0] == len(f):
            return hit[1]
        rows = {r.symbol: r for r in frame_to_rows(f)}
        self._rows[date] = (len(f), rows)
        if len(self._rows) > KEEP_DAYS:
            for d in sorted(self._rows)[: len(self._rows) - KEEP_DAYS]:
                del self._rows[d]
        return rows

    def closes(self, date: str) -> dict[str, float]:
        return {s: r.close for s, r in self.day(date).items()}

    def last_close(self, symbol: str, through: str) -> float | None:
        days = self.dates("1d")
        for d in reversed(days[max(0, bisect.bisect_right(days, through) - 10):bisect.bisect_right(days, through)]):
            r = self.day(d).get(symbol)
            if r is not None:
                return r.close
        return None

    def extremes(self, symbol: str, start: str, end: str) -> tuple[float, float] | None:
        """(max high, min low) of the daily bars of ``symbol`` in [start, end], extended session by session."""
        days = self.dates("1d")
        hit = self._ext.get((symbol, start))
        hi, lo = -float("inf"), float("inf")
        if hit is not None and hit[0] <= end:
            _, hi, lo = hit
            i = bisect.bisect_right(days, hit[0])
        else:
            i = bisect.bisect_left(days, start)
        for d in days[i:bisect.bisect_right(days, end)]:
            r = self.day(d).get(symbol)
            if r is not None:
                hi, lo = max(hi, r.high), min(lo, r.low)
        self._ext[(symbol, start)] = (end, hi, lo)
        return (hi, lo) if hi > -float("inf") else None

    def daily_range(self, symbol: str, start: str, end: str) -> list[BarRow]:
        days = self.dates("1d")
        rows = (self.day(d).get(symbol) for d in days[bisect.bisect_left(days, start):bisect.bisect_right(days, end)])
        return [r for r in rows if r is not None]

    def intraday(self, symbol: str, start_ns: int, end_ns: int) -> list[BarRow]:
        if not self.dates("1m"):
            return []
        return self.store.intraday(symbol, start_ns, end_ns)

    def source(self) -> BarSource:
        return BarSource(daily=self.daily_range, intraday=self.intraday, extremes=self.extremes)


class State:
    """Everything one worker process keeps: Redis state, its incremental caches, the bars."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        s = ctx.settings
        self.prov = provenance(s.hash(), {})
        self.store = Store(ctx.r, canonical_line(self.prov).rstrip(b"\n"))
        self.history = History(ctx.r)
        self.bars = Bars(s.core.bars_dir)
        self.trade_memo: dict[tuple[object, ...], object] = {}
        self.lines: dict[tuple[str, bytes, bytes], bytes] = {}  # canonical ledger lines by (key, record, provenance)
        self.fsync = s.analytics.analytics_fsync

    def locked(self, date: str):
        # expires 120 s after a holder died (SIGKILL): a successor waits at most that long
        return self.ctx.r.lock(state_key(SVC, "lock", date), timeout=120, blocking_timeout=600)


def guardrails(s: Settings) -> Guardrails:
    a = s.analytics
    return Guardrails(max_open_positions=a.guard_max_open_positions, max_new_entries_per_day=a.guard_max_new_entries_per_day,
                      max_symbol_pct=a.guard_max_symbol_concentration_pct, max_gross_pct=a.guard_max_gross_exposure_pct,
                      drawdown_throttle_pct=a.guard_drawdown_throttle_pct, max_correlation=a.guard_max_correlation,
                      correlation_window=a.guard_correlation_window)


def snapshot_before(store: Store, date: str, capital: float) -> tuple[PortfolioSnapshot | None, str]:
    """The latest snapshot before ``date`` and a problem code ("" when fine).

    The very first session (no snapshot at all, and no session event of an earlier date seen):
    the starting-capital snapshot, so a replay trades from day one. No snapshot although an
    earlier session was seen (its CLOSE snapshot never came), or a latest snapshot older than
    the previous session (a CLOSE was missed): PORTFOLIO_SNAPSHOT_MISSING.
    """
    snaps = store.snapshots()
    if not snaps:
        first = store.first_session()
        if not first or first >= date:
            return initial_snapshot(capital, ""), ""
        return None, "PORTFOLIO_SNAPSHOT_MISSING"
    dates = list(snaps)
    k = bisect.bisect_left(dates, date)
    if k == 0:
        return None, "PORTFOLIO_SNAPSHOT_MISSING"
    latest = dates[k - 1]
    cal = calendar()
    try:
        prev = cal.previous_session(date)
    except (IndexError, ValueError):
        prev = latest
    if latest != prev:
        return snaps[latest], "PORTFOLIO_SNAPSHOT_MISSING"
    return snaps[latest], ""


def decision_artifact(date: str) -> str:
    """Where D's decisions are written, relative to ARTIFACTS_DIR (``provenance["decision_artifact"]``)."""
    return f"portfolio_decisions/{date}.json"


def _decisions(st: State, date: str, batch: CandidateBatch | None, key: str, candidates_problem: str,
               candidates_input: str) -> PortfolioDecisionBatch:
    """Decide once per ``key`` (kept in Redis, so a redelivery returns the same decisions) and write the artifact."""
    s = st.ctx.settings
    snap, problem = snapshot_before(st.store, date, s.analytics.starting_capital)
    prov = provenance(s.hash(), {"candidates": candidates_input, "snapshot": snap.snapshot_id if snap else ""},
                      decision_artifact=decision_artifact(date))
    g = guardrails(s)
    returns = None
    if g.max_correlation is not None and batch is not None and snap is not None:
        symbols = sorted({c.symbol for c in batch.candidates} | {p.symbol for p in snap.positions if p.qty})
        returns = st.bars.returns(symbols, date, g.correlation_window)
    out = decide(date, batch, snap, g, snapshot_problem=problem, candidates_problem=candidates_problem,
                 provenance=prov, returns=returns)
    st.ctx.r.hsetnx(DECISIONS_KEY, key, msgspec.json.encode(out))
    out = decode(st.ctx.r.hget(DECISIONS_KEY, key), PortfolioDecisionBatch)  # type: ignore[arg-type,assignment]
    write_json_artifact(Path(s.core.artifacts_dir) / decision_artifact(date), out, fsync=st.fsync)
    return out


def decisions_for(st: State, batch: CandidateBatch) -> Emit:
    """Decisions of a candidate batch. If D's decisions were already closed at its OPEN (no batch
    by then), the late batch's candidates are all BLOCKed with the code published at the open."""
    closed = st.ctx.r.hget(DECISIONS_KEY, f"open:{batch.scan_date}")
    late = decode(closed, PortfolioDecisionBatch).reason_codes[0] if closed else ""  # type: ignore[attr-defined]
    return PORTFOLIO, _decisions(st, batch.scan_date, batch, batch.batch_id, late, batch.batch_id)


def dead_lettered_candidates(r: redis.Redis, date: str, after_ms: int, until_ms: int) -> bool:
    """Whether a candidate batch of ``date`` was dead-lettered by the analytics group: one whose
    payload names ``scan_date == date``, or an unreadable one published in (after_ms, until_ms]."""
    for _, f in r.xrevrange(DLQ, count=DLQ_SCAN):
        if f.get(b"dlq_group") != SVC.encode() or f.get(b"dlq_source_stream") != CANDIDATES.encode():
            continue
        try:
            data = json.loads(f.get(b"data", b""))
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("scan_date"), str):
            if data["scan_date"] == date:
                return True
            continue
        ms = int(f.get(b"dlq_source_id", b"0-0").split(b"-")[0] or 0)
        if after_ms < ms <= until_ms:
            return True
    return False


def on_open(st: State, ev: SessionEvent, d: Delivery) -> list[Emit]:
    """At OPEN(D) with no candidate batch of D: D's decisions are a batch-level BLOCK
    (CANDIDATES_PARSE_ERROR if D's batch was dead-lettered, else CANDIDATES_MISSING), once."""
    r, date = st.ctx.r, ev.trade_date
    ms = int(d.entry_id.split("-")[0] or 0)
    r.zadd(OPENS_KEY, {date: ms}, nx=True)
    ms = int(r.zscore(OPENS_KEY, date) or ms)
    if any(k.startswith(b"candidate_batch:") for k in r.hkeys(day_key(date))):  # type: ignore[union-attr]
        return []
    prev = r.zrevrangebyscore(OPENS_KEY, ms - 1, "-inf", start=0, num=1, withscores=True)
    after = int(prev[0][1]) if prev else 0  # type: ignore[index]
    code = "CANDIDATES_PARSE_ERROR" if dead_lettered_candidates(r, date, after, ms) else "CANDIDATES_MISSING"
    out = _decisions(st, date, None, f"open:{date}", code, "dead_lettered" if code == "CANDIDATES_PARSE_ERROR" else "missing")
    code = out.reason_codes[0] if out.reason_codes else code
    what = "was dead-lettered (unreadable)" if code == "CANDIDATES_PARSE_ERROR" else "never arrived"
    alert = make_alert(SVC, "candidates_missing", f"No candidates for {date}: {code}",
                       severity="critical" if code == "CANDIDATES_PARSE_ERROR" else "warning",
                       text=f"the candidate batch of {date} {what} by the open; every entry of {date} is blocked",
                       fields={"date": date, "code": code}, trade_date=date, ts=ev.ts, dedup=out.batch_id,
                       runbook="candidates-missing")
    return [(PORTFOLIO, out), (ALERTS, alert)]


def _decode_day(records: dict[str, bytes], type_name: str) -> list[Any]:
    return [decode(v) for k, v in records.items() if k.startswith(type_name + ":")]


def close_snapshot(records: dict[str, bytes]) -> BrokerSnapshot | None:
    snaps = [m for m in _decode_day(records, "broker_snapshot") if m.reason == "close"]
    return max(snaps, key=lambda m: (m.ts, m.snapshot_id)) if snaps else None


def _stops(trades: list[Trade], events: dict[str, list[ExitEvent]]) -> dict[str, float]:
    """symbol -> the protective stop of its open trade (the last stop event linked to it, else the initial stop)."""
    out: dict[str, float] = {}
    for t in trades:
        if t.status != "open":
            continue
        linked = set(t.exit_event_ids)
        stop = t.initial_stop
        for e in events.get(t.symbol, ()):
            if e.event_id in linked and e.kind in STOP_KINDS and e.stop_price > 0:
                stop = e.stop_price
        out[t.symbol] = stop
    return out


def process_close(st: State, date: str) -> list[Emit]:
    """Write every artifact of ``date`` from the stored records; returns the messages to publish."""
    ctx, store, bars = st.ctx, st.store, st.bars
    s = ctx.settings
    art = Path(s.core.artifacts_dir)
    bars.refresh(date)
    records = store.day(date)
    snap = close_snapshot(records)
    flush_ledgers(st, date, records=records)
    if snap is None:
        return []
    st.history.sync()
    fills = st.history.fills_through(date)
    events = st.history.events_through(date)
    if len(st.trade_memo) > MEMO_MAX:
        st.trade_memo.clear()
    trades = build_trades(st.history.fills_by_symbol(date), events, bars.source(), as_of_ts=snap.ts,
                          stop_buffer=s.exits.stop_buffer, memo=st.trade_memo)
    marks = bars.closes(date)
    for t in trades:
        if t.status == "open" and t.symbol not in marks:
            c = bars.last_close(t.symbol, date)
            if c is not None:
                marks[t.symbol] = c
    prior = [p.equity for d, p in store.snapshots().items() if d < date]
    prov = provenance(s.hash(), {"broker_snapshot": snap.snapshot_id}, marks=f"bars:1d:{date}")
    psnap = build_snapshot(date, s.analytics.starting_capital, fills, trades, marks, _stops(trades, events), prior,
                           s.analytics.rolling_vol_window, prov)
    store.snapshot_cache.put(date, psnap)
    write_json_artifact(art / "portfolio_snapshots" / f"{date}.json", psnap, fsync=st.fsync)
    internal = {t.symbol: InternalPosition(symbol=t.symbol, qty=t.qty_open, avg_entry_price=t.avg_entry_price,
                                           opened_ts=t.opened_ts, position_id=t.position_id)
                for t in trades if t.status == "open"}
    try:
        w0, _ = calendar().window_bounds(date, s.exits.stop_window_start, s.exits.stop_window_end)
    except ValueError:  # not a session: every position counts as held since before the window
        w0 = snap.ts
    recon = reconcile(date, internal, snap, st.history.known(date), w0, s.analytics.recon_price_tolerance,
                      provenance(s.hash(), {"broker_snapshot": snap.snapshot_id, "portfolio_snapshot": psnap.snapshot_id}))
    write_json_artifact(art / "reconciliation" / f"{date}.json", recon, fsync=st.fsync)
    day_trades = [t for t in trades if t.status == "open" or t.closed_date == date]
    write_json_artifact(art / "trades" / f"{date}.json", DailyTrades(
        date=date, trades=day_trades, fills=[f for f in fills if f.trade_date == date],
        provenance=provenance(s.hash(), {**st.history.digests(date), "broker_snapshot": snap.snapshot_id},
                              bars=f"bars:1d:{date}")), fsync=st.fsync)
    rejections: list[Rejection] = sorted(_decode_day(records, "rejection"), key=lambda r: r.rejection_id)
    write_json_artifact(art / "rejections" / f"{date}.json", DailyRejections(
        date=date, rejections=rejections,
        provenance=provenance(s.hash(), {"rejections": stable_id("rjs", [r.rejection_id for r in rejections])})),
        fsync=st.fsync)
    if s.analytics.report_on_close:
        build_report(art, date, fsync=st.fsync)
    emits: list[Emit] = [(PORTFOLIO, psnap)]
    if recon.status != "ok":
        kinds = sorted({m.type for m in recon.mismatches})
        emits.append((ALERTS, make_alert(SVC, "recon_mismatch", f"Reconciliation mismatch {date}", severity="warning",
                                         text="; ".join(f"{m.type} {m.symbol} {m.expected}->{m.actual}" for m in recon.mismatches)[:2000],
                                         fields={"date": date, "mismatches": str(len(recon.mismatches)), "types": ",".join(kinds)},
                                         trade_date=date, ts=snap.ts, dedup=recon.recon_id,
                                         runbook="reconciliation-mismatch")))
    closed_today = [t for t in trades if t.closed_date == date]
    fields = {"equity": f"{psnap.equity:.2f}", "drawdown_pct": f"{100 * psnap.drawdown:.2f}",
              "open_positions": str(len(psnap.positions)), "trades_closed": str(len(closed_today)),
              "reconciliation": recon.status}
    if s.analytics.report_on_close:
        fields.update(report=f"reports/{date}/report.html", chart=f"reports/{date}/equity.png")
    emits.append((ALERTS, make_alert(SVC, "daily_report", f"Daily report {date}", severity="info",
                                     text=(f"report: reports/{date}/report.html" if s.analytics.report_on_close
                                           else f"report: `avwap report --date {date}`"),
                                     fields=fields, trade_date=date, ts=snap.ts, dedup=psnap.snapshot_id)))
    return emits


def ledger_path(s: Settings, date: str, name: str) -> Path:
    root = Path(s.core.ledger_dir) / "analytics"
    return root / (f"{date}.jsonl" if name == "ledger" else f"{date}.journal.jsonl")


def _line(st: State, key: str, rec: bytes, prov: bytes) -> bytes:
    got = st.lines.get((key, rec, prov))
    if got is None:
        if len(st.lines) > 200_000:
            st.lines.clear()
        p = {**json.loads(prov), "input:message": key}
        got = st.lines[(key, rec, prov)] = canonical_line({"key": key, "provenance": p, "record": to_plain(msgspec.json.decode(rec))})
    return got


def write_ledger(st: State, date: str, records: dict[str, bytes], provs: dict[str, bytes],
                 which: Iterable[str] = ("ledger", "journal")) -> None:
    """``<ledger_dir>/analytics/<D>.jsonl`` (ledger of record) and ``<D>.journal.jsonl`` (intents,
    clock, alerts, bar summaries): one canonical line per record, sorted by key, each with the
    provenance of the record's first ingest and ``input:message`` = the record key."""
    for name in which:
        lines = [_line(st, k, v, provs.get(k, b"{}")) for k, v in sorted(records.items()) if ledger_file_of(k) == name]
        path = ledger_path(st.ctx.settings, date, name)
        if lines or path.exists():
            write_atomic(path, b"".join(lines), fsync=st.fsync)


def flush_ledgers(st: State, date: str, which: Iterable[str] = ("ledger", "journal"),
                  records: dict[str, bytes] | None = None) -> None:
    """Rewrite ledger files of ``date`` (the caller holds the date's lock). A file is marked clean
    before its records are read, so a record ingested meanwhile marks it dirty again."""
    which = tuple(which)
    st.ctx.r.srem(DIRTY_KEY, *(f"{date}|{name}" for name in which))
    recs = records if records is not None else st.store.day(date)
    write_ledger(st, date, recs, st.store.day_provenance(date), which)


def flush_dirty(st: State) -> None:
    """Rewrite every ledger file marked dirty, each under its date's lock."""
    by_date: dict[str, set[str]] = {}
    for m in st.ctx.r.smembers(DIRTY_KEY):  # type: ignore[union-attr]
        date, _, name = m.decode().partition("|")
        by_date.setdefault(date, set()).add(name)
    for date, names in sorted(by_date.items()):
        with st.locked(date):
            flush_ledgers(st, date, sorted(names))


def build(ctx: ServiceContext):
    st = State(ctx)
    ctx.extra["analytics"] = st
    store = st.store

    def handle(msg: Message, d: Delivery) -> list[Emit]:
        got = store.ingest(msg)
        if got is None:
            return []
        date, key, new, closed = got
        fresh = new or d.deliveries > 1  # a redelivery may follow a crash before our outputs were published
        if not fresh:
            return []  # the same message published twice: already in the ledger
        if isinstance(msg, BrokerSnapshot) and msg.reason == "close":
            ctx.r.sadd(CLOSED_KEY, date)
            with st.locked(date):
                return process_close(st, date)
        decides = isinstance(msg, CandidateBatch) or (isinstance(msg, SessionEvent) and msg.phase == "OPEN")
        if not decides and not closed:
            return []  # an open day's ledger files are rewritten when the worker is idle or at its CLOSE
        emits: list[Emit] = []
        with st.locked(date):  # the last writer of D's files has read every record of D
            if isinstance(msg, CandidateBatch):
                emits.append(decisions_for(st, msg))
            elif isinstance(msg, SessionEvent):
                emits += on_open(st, msg, d)
            if closed:
                # a late record of a closed day (its CLOSE was processed before this record was
                # stored, else that processing read it): rewrite D's artifacts, or just its ledger
                if type_name_of(msg) in FULL_REGEN_TYPES:
                    process_close(st, date)
                else:
                    flush_ledgers(st, date, (ledger_file_of(key),))
        return emits

    return handle


def on_idle(ctx: ServiceContext) -> list[Emit]:
    flush_dirty(ctx.extra["analytics"])  # type: ignore[arg-type]  # set by ``build``
    return []


def on_start(ctx: ServiceContext) -> list[Emit]:
    """Backfill the history ingest logs if needed, and rewrite the ledger files left dirty by a
    predecessor that died before writing them."""
    st: State = ctx.extra["analytics"]  # type: ignore[assignment]  # set by ``build`` (make_consumer runs it first)
    st.history.backfill_logs()
    flush_dirty(st)
    return []


SPEC = ServiceSpec(name=SVC, streams=[CLOCK, CANDIDATES, INTENTS, REJECTIONS, ORDERS, BROKER, EXITS, ALERTS, BARS_1D],
                   build=build, on_start=on_start, on_idle=on_idle, produces=[PORTFOLIO, ALERTS])


def main() -> int:
    return run_service(SPEC)


__all__ = ["SPEC", "State", "Store", "build", "code_version", "main", "process_close", "Rejection"]
