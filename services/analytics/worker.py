"""Analytics worker: ingestion into ledgers, decisions at PRE_MARKET, the CLOSE snapshot,
reconciliation, trades and report.

State (Redis, keyed by stable ids, so redelivery and two replicas change nothing):
- ``avwap:state:analytics:day:<D>``: hash record key -> message JSON (HSETNX) for every message of D;
- ``avwap:state:analytics:hist:<type>``: the same for the types trade reconstruction needs across days;
- ``avwap:state:analytics:snapshots``: hash date -> canonical PortfolioSnapshot JSON;
- ``avwap:state:analytics:closed``: set of dates whose CLOSE snapshot was processed;
- lock ``avwap:state:analytics:lock:<D>``: one writer of D's artifacts at a time.
Artifacts are always rewritten whole from the sorted records; a record of D arriving after D's
close (another replica, a late rejection) rewrites D's artifacts, so the last writer has them all.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import msgspec
import redis

from shared.alerts import make_alert
from shared.artifacts import canonical_line, provenance, to_plain, write_atomic, write_json_artifact
from shared.bars import BarStore, frame_to_rows
from shared.bus import Delivery, Emit
from shared.clock import calendar
from shared.ids import client_order_id
from shared.schemas import (
    BarRow,
    BrokerSnapshot,
    CandidateBatch,
    ExitEvent,
    Message,
    OrderEvent,
    PortfolioDecisionBatch,
    PortfolioSnapshot,
    Rejection,
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
from .trades import BarSource, Trade, build_trades, fills_from_orders

log = logging.getLogger(__name__)

SVC = "analytics"
DATES_KEY = state_key(SVC, "dates")
SNAPSHOTS_KEY = state_key(SVC, "snapshots")
CLOSED_KEY = state_key(SVC, "closed")
SESSIONS_KEY = state_key(SVC, "sessions")  # sorted set of session dates seen on avwap:clock
DECISIONS_KEY = state_key(SVC, "decisions")  # candidate batch id -> PortfolioDecisionBatch JSON
STOP_KINDS = ("STOP_RESOLVED", "STOP_RATCHET", "STOP_SUBMITTED", "STOP_REPLACED")
# record types whose late arrival changes D's artifacts beyond the ledger file
FULL_REGEN_TYPES = ("order_event", "exit_event", "rejection", "broker_snapshot", "candidate_batch",
                    "entry_intent", "stop_intent", "exit_intent")


def day_key(date: str) -> str:
    return state_key(SVC, "day", date)


def hist_key(type_name: str) -> str:
    return state_key(SVC, "hist", type_name)


class Store:
    """Redis state of the analytics service (see the module docstring)."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r

    def ingest(self, msg: Message) -> tuple[str, str, bool] | None:
        """Store a message once; returns (date, key, newly stored) or None when not kept."""
        rk = record_key(msg)
        if rk is None:
            return None
        date, key = rk
        rec = ledger_record(msg)
        data = msgspec.json.encode(rec) if isinstance(rec, dict) else msgspec.json.encode(msg)
        pipe = self.r.pipeline(transaction=True)
        pipe.hsetnx(day_key(date), key, data)
        t = type_name_of(msg)
        if t in HISTORY_TYPES:
            pipe.hsetnx(hist_key(t), key, data)
        pipe.sadd(DATES_KEY, date)
        if t == "session_event":
            pipe.zadd(SESSIONS_KEY, {date: 0})  # same score: ordered by date
        res = pipe.execute()
        return date, key, bool(res[0])

    def day(self, date: str) -> dict[str, bytes]:
        raw = self.r.hgetall(day_key(date))
        return {k.decode(): v for k, v in sorted(raw.items())}  # type: ignore[union-attr]

    def history(self, type_name: str) -> list[Message]:
        raw = self.r.hgetall(hist_key(type_name))
        return [decode(v) for _, v in sorted(raw.items())]  # type: ignore[union-attr]

    def snapshots(self) -> dict[str, PortfolioSnapshot]:
        raw = self.r.hgetall(SNAPSHOTS_KEY)
        out = {k.decode(): decode(v, PortfolioSnapshot) for k, v in raw.items()}  # type: ignore[union-attr]
        return dict(sorted(out.items()))  # type: ignore[arg-type]

    def first_session(self) -> str:
        """The earliest date of any session event ingested ("" when none)."""
        got = self.r.zrange(SESSIONS_KEY, 0, 0)
        return got[0].decode() if got else ""

    def is_closed(self, date: str) -> bool:
        return bool(self.r.sismember(CLOSED_KEY, date))


class Bars:
    """Bar-store reads for marks and excursions, memoized per process (past bars never change)."""

    def __init__(self, root: str) -> None:
        self.store = BarStore(root)
        self._dates: dict[str, list[str]] = {}

    def refresh(self) -> None:
        """Forget the cached date lists (new sessions may have been written)."""
        self._dates = {}

    def dates(self, tf: str) -> list[str]:
        if tf not in self._dates:
            self._dates[tf] = self.store.dates(tf)
        return self._dates[tf]

    def closes(self, date: str) -> dict[str, float]:
        f = self.store.read_day("1d", date)
        return {str(s): float(c) for s, c in zip(f["symbol"], f["close"], strict=True)}

    def last_close(self, symbol: str, through: str) -> float | None:
        for d in reversed([d for d in self.dates("1d") if d <= through][-10:]):
            c = self.closes(d).get(symbol)
            if c is not None:
                return c
        return None

    @lru_cache(maxsize=65536)  # noqa: B019 - one store per worker
    def daily_range(self, symbol: str, start: str, end: str) -> tuple[BarRow, ...]:
        out: list[BarRow] = []
        for d in self.dates("1d"):
            if start <= d <= end:
                f = self.store.read_day("1d", d)
                out.extend(frame_to_rows(f[f["symbol"] == symbol]))
        return tuple(out)

    def intraday(self, symbol: str, start_ns: int, end_ns: int) -> list[BarRow]:
        if not self.dates("1m"):
            return []
        return self.store.intraday(symbol, start_ns, end_ns)

    def source(self) -> BarSource:
        return BarSource(daily=lambda s, a, b: list(self.daily_range(s, a, b)), intraday=self.intraday)


def guardrails(s: Settings) -> Guardrails:
    a = s.analytics
    return Guardrails(max_open_positions=a.guard_max_open_positions, max_new_entries_per_day=a.guard_max_new_entries_per_day,
                      max_symbol_pct=a.guard_max_symbol_concentration_pct, max_gross_pct=a.guard_max_gross_exposure_pct,
                      drawdown_throttle_pct=a.guard_drawdown_throttle_pct)


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
    before = [d for d in snaps if d < date]
    if not before:
        return None, "PORTFOLIO_SNAPSHOT_MISSING"
    latest = before[-1]
    cal = calendar()
    try:
        prev = cal.previous_session(date)
    except (IndexError, ValueError):
        prev = latest
    if latest != prev:
        return snaps[latest], "PORTFOLIO_SNAPSHOT_MISSING"
    return snaps[latest], ""


def decisions_for(ctx: ServiceContext, store: Store, batch: CandidateBatch) -> Emit:
    """Decide once per candidate batch (kept in Redis): a redelivery returns the same decisions."""
    s = ctx.settings
    snap, problem = snapshot_before(store, batch.scan_date, s.analytics.starting_capital)
    prov = provenance(s.hash(), {"candidates": batch.batch_id, "snapshot": snap.snapshot_id if snap else ""})
    out = decide(batch.scan_date, batch, snap, guardrails(s), snapshot_problem=problem, provenance=prov)
    ctx.r.hsetnx(DECISIONS_KEY, batch.batch_id, msgspec.json.encode(out))
    out = decode(ctx.r.hget(DECISIONS_KEY, batch.batch_id), PortfolioDecisionBatch)  # type: ignore[arg-type,assignment]
    write_json_artifact(Path(s.core.artifacts_dir) / "portfolio_decisions" / f"{batch.scan_date}.json", out)
    return PORTFOLIO, out


def _decode_day(records: dict[str, bytes], type_name: str) -> list[Any]:
    return [decode(v) for k, v in records.items() if k.startswith(type_name + ":")]


def close_snapshot(records: dict[str, bytes]) -> BrokerSnapshot | None:
    snaps = [m for m in _decode_day(records, "broker_snapshot") if m.reason == "close"]
    return max(snaps, key=lambda m: (m.ts, m.snapshot_id)) if snaps else None


def _stops(trades: list[Trade], events: list[ExitEvent]) -> dict[str, float]:
    by_id = {e.event_id: e for e in events}
    out: dict[str, float] = {}
    for t in trades:
        if t.status != "open":
            continue
        linked = sorted((by_id[i] for i in t.exit_event_ids if i in by_id), key=lambda e: (e.ts, e.event_id))
        stop = t.initial_stop
        for e in linked:
            if e.kind in STOP_KINDS and e.stop_price > 0:
                stop = e.stop_price
        out[t.symbol] = stop
    return out


def process_close(ctx: ServiceContext, store: Store, bars: Bars, date: str) -> list[Emit]:
    """Write every artifact of ``date`` from the stored records; returns the messages to publish."""
    s = ctx.settings
    art = Path(s.core.artifacts_dir)
    bars.refresh()
    records = store.day(date)
    snap = close_snapshot(records)
    write_ledger(s, date, records)
    if snap is None:
        return []
    orders = [m for m in store.history("order_event") if isinstance(m, OrderEvent) and m.trade_date <= date]
    events = [m for m in store.history("exit_event") if isinstance(m, ExitEvent) and m.trade_date <= date]
    fills = fills_from_orders(orders)
    trades = build_trades(fills, events, bars.source(), as_of_ts=snap.ts)
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
    ctx.r.hset(SNAPSHOTS_KEY, date, msgspec.json.encode(psnap))
    write_json_artifact(art / "portfolio_snapshots" / f"{date}.json", psnap)
    internal = {t.symbol: InternalPosition(symbol=t.symbol, qty=t.qty_open, avg_entry_price=t.avg_entry_price,
                                           opened_ts=t.opened_ts, position_id=t.position_id)
                for t in trades if t.status == "open"}
    known = {o.client_order_id for o in orders}
    for tn in ("entry_intent", "stop_intent", "exit_intent"):
        known |= {client_order_id(m.intent_id) for m in store.history(tn)}  # type: ignore[attr-defined]
    try:
        w0, _ = calendar().window_bounds(date, s.exits.stop_window_start, s.exits.stop_window_end)
    except ValueError:  # not a session: every position counts as held since before the window
        w0 = snap.ts
    recon = reconcile(date, internal, snap, known, w0, s.analytics.recon_price_tolerance)
    write_json_artifact(art / "reconciliation" / f"{date}.json", recon)
    day_trades = [t for t in trades if t.status == "open" or t.closed_date == date]
    write_json_artifact(art / "trades" / f"{date}.json", {"date": date, "v": 1, "trades": day_trades})
    rejections = sorted(_decode_day(records, "rejection"), key=lambda r: r.rejection_id)
    write_json_artifact(art / "rejections" / f"{date}.json", {"date": date, "v": 1, "rejections": rejections})
    if s.analytics.report_on_close:
        build_report(art, date)
    emits: list[Emit] = [(PORTFOLIO, psnap)]
    if recon.status != "ok":
        kinds = sorted({m.type for m in recon.mismatches})
        emits.append((ALERTS, make_alert(SVC, "recon_mismatch", f"Reconciliation mismatch {date}", severity="warning",
                                         text="; ".join(f"{m.type} {m.symbol} {m.expected}->{m.actual}" for m in recon.mismatches)[:2000],
                                         fields={"date": date, "mismatches": str(len(recon.mismatches)), "types": ",".join(kinds)},
                                         trade_date=date, ts=snap.ts, dedup=recon.recon_id,
                                         runbook="reconciliation-mismatch")))
    closed_today = [t for t in trades if t.closed_date == date]
    emits.append((ALERTS, make_alert(SVC, "daily_report", f"Daily report {date}", severity="info",
                                     text=f"report: reports/{date}/report.html",
                                     fields={"equity": f"{psnap.equity:.2f}", "drawdown_pct": f"{100 * psnap.drawdown:.2f}",
                                             "open_positions": str(len(psnap.positions)),
                                             "trades_closed": str(len(closed_today)),
                                             "reconciliation": recon.status, "chart": f"reports/{date}/equity.png"},
                                     trade_date=date, ts=snap.ts, dedup=psnap.snapshot_id)))
    return emits


def write_ledger(s: Settings, date: str, records: dict[str, bytes], which: tuple[str, ...] = ("ledger", "journal")) -> None:
    """``<ledger_dir>/analytics/<D>.jsonl`` (ledger of record) and ``<D>.journal.jsonl`` (intents,
    clock, alerts, bar summaries): one canonical line per record, sorted by key."""
    root = Path(s.core.ledger_dir) / "analytics"
    for name in which:
        lines = [canonical_line({"key": k, "record": to_plain(msgspec.json.decode(v))})
                 for k, v in sorted(records.items()) if ledger_file_of(k) == name]
        path = root / (f"{date}.jsonl" if name == "ledger" else f"{date}.journal.jsonl")
        if lines or path.exists():
            write_atomic(path, b"".join(lines))


def build(ctx: ServiceContext):
    store = Store(ctx.r)
    bars = Bars(ctx.settings.core.bars_dir)

    def locked(date: str):
        # expires 120 s after a holder died (SIGKILL): a successor waits at most that long
        return ctx.r.lock(state_key(SVC, "lock", date), timeout=120, blocking_timeout=600)

    def handle(msg: Message, d: Delivery) -> list[Emit]:
        got = store.ingest(msg)
        if got is None:
            return []
        date, key, new = got
        fresh = new or d.deliveries > 1  # a redelivery may follow a crash before our outputs were published
        if not fresh:
            return []  # the same message published twice: already in the ledger
        if isinstance(msg, BrokerSnapshot) and msg.reason == "close":
            ctx.r.sadd(CLOSED_KEY, date)
            with locked(date):
                return process_close(ctx, store, bars, date)
        emits: list[Emit] = [decisions_for(ctx, store, msg)] if isinstance(msg, CandidateBatch) else []
        with locked(date):  # the last writer of D's files has read every record of D
            if store.is_closed(date) and type_name_of(msg) in FULL_REGEN_TYPES:
                process_close(ctx, store, bars, date)  # a late record of a closed day: rewrite D's artifacts
            else:
                write_ledger(ctx.settings, date, store.day(date), (ledger_file_of(key),))
        return emits

    return handle


SPEC = ServiceSpec(name=SVC, streams=[CLOCK, CANDIDATES, INTENTS, REJECTIONS, ORDERS, BROKER, EXITS, ALERTS, BARS_1D],
                   build=build)


def main() -> int:
    return run_service(SPEC)


__all__ = ["SPEC", "Store", "build", "main", "process_close", "Rejection"]
