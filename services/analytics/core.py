"""Analytics core (pure): what an ingested message and a close of day compute.

No Redis, no files, no clock, no env: the shell (``worker.py``, ``close_of_day.py``,
``day_decisions.py``) loads the inputs, calls these functions and commits what they return.
It composes the pure modules: ``trades`` (fills -> trades), ``portfolio`` (the snapshot),
``recon`` (internal vs broker), ``decisions`` (ALLOW/BLOCK).

- ingest: ``route`` says what a stored message sets off (nothing, D's close, a decision, a rewrite);
- close of day: ``close_day`` -> the day's snapshot, reconciliation, trades, rejections, alerts;
- decisions: ``snapshot_before``, ``day_decisions``, the OPEN fallback codes and alert;
- report: the daily report and reconciliation alerts.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from shared.alerts import make_alert
from shared.artifacts import provenance
from shared.bus import entry_id
from shared.clock import calendar
from shared.ids import stable_id
from shared.regime import Table, effect
from shared.schemas import (
    Alert,
    BrokerSnapshot,
    CandidateBatch,
    DailyRejections,
    DailyTrades,
    ExitEvent,
    Message,
    PortfolioDecisionBatch,
    PortfolioSnapshot,
    Reconciliation,
    Regime,
    Rejection,
    SessionEvent,
    Trade,
    decode,
    type_name_of,
)
from shared.settings import Settings
from shared.streams import ALERTS, CANDIDATES, PORTFOLIO

from .decisions import Guardrails, decide
from .history import History
from .ledger import ledger_file_of
from .portfolio import build_snapshot, initial_snapshot
from .recon import InternalPosition, reconcile
from .trades import BarSource, build_trades

SVC = "analytics"
Emit = tuple[str, Message]
STOP_KINDS = ("STOP_RESOLVED", "STOP_RATCHET", "STOP_SUBMITTED", "STOP_REPLACED")
# record types whose late arrival changes D's artifacts beyond the ledger file
FULL_REGEN_TYPES = ("order_event", "exit_event", "rejection", "broker_snapshot", "candidate_batch",
                    "entry_intent", "stop_intent", "exit_intent")


# ---- ingest ---------------------------------------------------------------------------------

class Route(msgspec.Struct, frozen=True, kw_only=True):
    """What a stored message of date D sets off; the default: nothing (no lock taken)."""

    close: bool = False  # D's CLOSE broker snapshot: mark D closed and write D's artifacts
    decide: tuple[str, ...] = ()  # in order, under D's lock: "batch", "undecided", "open"
    regen: str = ""  # D was already closed: "artifacts" (rewrite them all), or the ledger file to rewrite

    @property
    def locked(self) -> bool:
        return self.close or bool(self.decide) or bool(self.regen)


def route(msg: Message, key: str, *, new: bool, closed: bool, redelivered: bool, modulating: bool) -> Route:
    """What an ingested message of date D does (``key``: its record key; ``new``: first stored now;
    ``closed``: D's CLOSE was processed before it was stored).

    A message stored before and not redelivered does nothing (published twice). An open day's
    ledger files are rewritten when the worker is idle or at its CLOSE, not here; a late record of
    a closed day rewrites D's artifacts (a type in FULL_REGEN_TYPES) or just its ledger file.
    """
    if not (new or redelivered):  # a redelivery may follow a crash before our outputs were published
        return Route()
    if isinstance(msg, BrokerSnapshot) and msg.reason == "close":
        return Route(close=True)
    decides = isinstance(msg, CandidateBatch) or (isinstance(msg, SessionEvent) and msg.phase == "OPEN") or (
        modulating and isinstance(msg, Regime))
    if not decides and not closed:
        return Route()
    steps: tuple[str, ...] = ()
    if isinstance(msg, CandidateBatch):
        steps = ("batch",)
    elif isinstance(msg, Regime):
        steps = ("undecided",)
    elif isinstance(msg, SessionEvent):
        steps = ("open", "undecided") if modulating else ("open",)  # the Regime never came: the most conservative row
    regen = ("artifacts" if type_name_of(msg) in FULL_REGEN_TYPES else ledger_file_of(key)) if closed else ""
    return Route(decide=steps, regen=regen)


def batch_due(*, modulating: bool, regime: Regime | None, opened: bool, redelivered: bool, decided: bool) -> bool:
    """Whether a candidate batch is decided now. With the modulation on, D's decisions wait for D's
    Regime until OPEN (a batch after OPEN is decided at once); a batch another replica already
    decided (on the Regime's arrival) is not published twice."""
    waits = modulating and regime is None and not opened
    return not waits and (redelivered or not decided)


def decode_day(records: Mapping[str, bytes], type_name: str) -> list[Any]:
    """The messages of one type among a day's records, by record key."""
    return [decode(v) for k, v in records.items() if k.startswith(type_name + ":")]


def regime_in(records: Mapping[str, bytes]) -> Regime | None:
    """The Regime of the session in a day's records (the first by key; None: not arrived)."""
    regimes = decode_day(records, "regime")
    return regimes[0] if regimes else None


# ---- decisions ------------------------------------------------------------------------------

def guardrails(s: Settings) -> Guardrails:
    a = s.analytics
    return Guardrails(max_open_positions=a.guard_max_open_positions, max_new_entries_per_day=a.guard_max_new_entries_per_day,
                      max_symbol_pct=a.guard_max_symbol_concentration_pct, max_gross_pct=a.guard_max_gross_exposure_pct,
                      drawdown_throttle_pct=a.guard_drawdown_throttle_pct, max_correlation=a.guard_max_correlation,
                      correlation_window=a.guard_correlation_window)


def snapshot_before(snaps: Mapping[str, PortfolioSnapshot], first_session: str, date: str,
                    capital: float) -> tuple[PortfolioSnapshot | None, str]:
    """The latest snapshot before ``date`` (``snaps`` sorted by date) and a problem code ("" when fine).

    The very first session (no snapshot at all, and no session event of an earlier date seen):
    the starting-capital snapshot, so a replay trades from day one. No snapshot although an
    earlier session was seen (its CLOSE snapshot never came), or a latest snapshot older than
    the previous session (a CLOSE was missed): PORTFOLIO_SNAPSHOT_MISSING.
    """
    if not snaps:
        if not first_session or first_session >= date:
            return initial_snapshot(capital, ""), ""
        return None, "PORTFOLIO_SNAPSHOT_MISSING"
    dates = list(snaps)
    k = bisect.bisect_left(dates, date)
    if k == 0:
        return None, "PORTFOLIO_SNAPSHOT_MISSING"
    latest = dates[k - 1]
    try:
        prev = calendar().previous_session(date)
    except (IndexError, ValueError):
        prev = latest
    if latest != prev:
        return snaps[latest], "PORTFOLIO_SNAPSHOT_MISSING"
    return snaps[latest], ""


def decision_artifact(date: str) -> str:
    """Where D's decisions are written, relative to ARTIFACTS_DIR (``provenance["decision_artifact"]``)."""
    return f"portfolio_decisions/{date}.json"


def correlation_symbols(g: Guardrails, batch: CandidateBatch | None, snap: PortfolioSnapshot | None) -> list[str] | None:
    """The symbols whose returns the correlation guardrail needs (None: it needs none)."""
    if g.max_correlation is None or batch is None or snap is None:
        return None
    return sorted({c.symbol for c in batch.candidates} | {p.symbol for p in snap.positions if p.qty})


def day_decisions(s: Settings, code: str, date: str, batch: CandidateBatch | None, snap: PortfolioSnapshot | None,
                  problem: str, *, candidates_problem: str, candidates_input: str, regime: Regime | None,
                  returns: Mapping[str, Sequence[float]] | None) -> PortfolioDecisionBatch:
    """D's decisions on ``batch`` (None: a batch-level BLOCK with ``candidates_problem``) from the
    snapshot before D, with the regime modulation when it is on (``regime`` None: not arrived)."""
    prov = provenance(s.hash(), {"candidates": candidates_input, "snapshot": snap.snapshot_id if snap else ""},
                      code=code, decision_artifact=decision_artifact(date))
    modulation = None
    if s.regime.regime_modulation:
        modulation = effect(Table.from_settings(s.regime), regime, 100.0 * snap.drawdown if snap and not problem else None)
        prov["input:regime"] = regime.regime_id if regime is not None else "missing"
    return decide(date, batch, snap, guardrails(s), snapshot_problem=problem, candidates_problem=candidates_problem,
                  provenance=prov, returns=returns, modulation=modulation)


def late_code(at_open: PortfolioDecisionBatch | None) -> str:
    """The code every candidate of a batch arriving after D's OPEN fallback is BLOCKed with ("": none)."""
    return at_open.reason_codes[0] if at_open is not None else ""


def dead_lettered(entries: Iterable[Mapping[bytes, bytes]], date: str, after_ms: int, until_ms: int) -> bool:
    """Whether the DLQ ``entries`` hold a candidate batch of ``date`` dead-lettered by the analytics
    group: one whose payload names ``scan_date == date``, or an unreadable one published in
    (after_ms, until_ms]."""
    for f in entries:
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
        ms = entry_id(f.get(b"dlq_source_id"))[0]
        if after_ms < ms <= until_ms:
            return True
    return False


def open_problem(was_dead_lettered: bool) -> tuple[str, str]:
    """(code, candidates input) of D's batch-level BLOCK at OPEN when no batch of D arrived."""
    return ("CANDIDATES_PARSE_ERROR", "dead_lettered") if was_dead_lettered else ("CANDIDATES_MISSING", "missing")


def candidates_missing_alert(date: str, out: PortfolioDecisionBatch, code: str, ts: int) -> Alert:
    code = out.reason_codes[0] if out.reason_codes else code
    what = "was dead-lettered (unreadable)" if code == "CANDIDATES_PARSE_ERROR" else "never arrived"
    return make_alert(SVC, "candidates_missing", f"No candidates for {date}: {code}",
                      severity="critical" if code == "CANDIDATES_PARSE_ERROR" else "warning",
                      text=f"the candidate batch of {date} {what} by the open; every entry of {date} is blocked",
                      fields={"date": date, "code": code}, trade_date=date, ts=ts, dedup=out.batch_id,
                      runbook="candidates-missing")


# ---- close of day ---------------------------------------------------------------------------

class CloseConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The settings a close of day reads (built by the shell)."""

    settings_hash: str
    code: str  # code version recorded in provenance
    starting_capital: float
    rolling_vol_window: int
    recon_price_tolerance: float
    stop_buffer: float
    stop_window_start: str
    stop_window_end: str
    report_on_close: bool

    @classmethod
    def from_settings(cls, s: Settings, code: str) -> CloseConfig:
        a = s.analytics
        return cls(settings_hash=s.hash(), code=code, starting_capital=a.starting_capital,
                   rolling_vol_window=a.rolling_vol_window, recon_price_tolerance=a.recon_price_tolerance,
                   stop_buffer=s.exits.stop_buffer, stop_window_start=s.exits.stop_window_start,
                   stop_window_end=s.exits.stop_window_end, report_on_close=bool(a.report_on_close))


class DayClose(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a close of day writes and publishes."""

    portfolio: PortfolioSnapshot
    reconciliation: Reconciliation
    trades: DailyTrades
    rejections: DailyRejections
    emits: list[Emit]


def close_snapshot(records: Mapping[str, bytes]) -> BrokerSnapshot | None:
    snaps = [m for m in decode_day(records, "broker_snapshot") if m.reason == "close"]
    return max(snaps, key=lambda m: (m.ts, m.snapshot_id)) if snaps else None


def trades_through(history: History, date: str, as_of_ts: int, bars: BarSource, cfg: CloseConfig,
                   memo: dict[tuple[object, ...], object]) -> list[Trade]:
    """Every trade reconstructed from the fills and exit events through ``date``."""
    return build_trades(history.fills_by_symbol(date), history.events_through(date), bars, as_of_ts=as_of_ts,
                        stop_buffer=cfg.stop_buffer, memo=memo)


def unmarked_open(trades: Sequence[Trade], marks: Mapping[str, float]) -> list[str]:
    """Symbols of open trades without a mark of the session (the shell marks them at their last close)."""
    return list(dict.fromkeys(t.symbol for t in trades if t.status == "open" and t.symbol not in marks))


def _stops(trades: list[Trade], events: Mapping[str, list[ExitEvent]]) -> dict[str, float]:
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


def close_day(date: str, snap: BrokerSnapshot, records: Mapping[str, bytes], history: History, trades: list[Trade],
              marks: Mapping[str, float], prior_equity: Sequence[float], cfg: CloseConfig) -> DayClose:
    """D's artifacts from its CLOSE broker snapshot, its records, the history through D, the trades
    (``trades_through``) and the marks (session closes, else last closes)."""
    h, code = cfg.settings_hash, cfg.code
    fills = history.fills_through(date)
    events = history.events_through(date)
    prov = provenance(h, {"broker_snapshot": snap.snapshot_id}, code=code, marks=f"bars:1d:{date}")
    psnap = build_snapshot(date, cfg.starting_capital, fills, trades, marks, _stops(trades, events), prior_equity,
                           cfg.rolling_vol_window, prov)
    internal = {t.symbol: InternalPosition(symbol=t.symbol, qty=t.qty_open, avg_entry_price=t.avg_entry_price,
                                           opened_ts=t.opened_ts, position_id=t.position_id)
                for t in trades if t.status == "open"}
    try:
        w0, _ = calendar().window_bounds(date, cfg.stop_window_start, cfg.stop_window_end)
    except ValueError:  # not a session: every position counts as held since before the window
        w0 = snap.ts
    recon = reconcile(date, internal, snap, history.known(date), w0, cfg.recon_price_tolerance,
                      provenance(h, {"broker_snapshot": snap.snapshot_id, "portfolio_snapshot": psnap.snapshot_id}, code=code))
    day_trades = DailyTrades(
        date=date, trades=[t for t in trades if t.status == "open" or t.closed_date == date],
        fills=[f for f in fills if f.trade_date == date],
        provenance=provenance(h, {**history.digests(date), "broker_snapshot": snap.snapshot_id}, code=code,
                              bars=f"bars:1d:{date}"))
    rejections: list[Rejection] = sorted(decode_day(records, "rejection"), key=lambda r: r.rejection_id)
    day_rejections = DailyRejections(
        date=date, rejections=rejections,
        provenance=provenance(h, {"rejections": stable_id("rjs", [r.rejection_id for r in rejections])}, code=code))
    emits: list[Emit] = [(PORTFOLIO, psnap)]
    if recon.status != "ok":
        emits.append((ALERTS, recon_alert(date, recon, snap.ts)))
    emits.append((ALERTS, daily_report_alert(date, psnap, recon, sum(t.closed_date == date for t in trades),
                                             snap.ts, cfg.report_on_close)))
    return DayClose(portfolio=psnap, reconciliation=recon, trades=day_trades, rejections=day_rejections, emits=emits)


# ---- report ---------------------------------------------------------------------------------

def recon_alert(date: str, recon: Reconciliation, ts: int) -> Alert:
    kinds = sorted({m.type for m in recon.mismatches})
    return make_alert(SVC, "recon_mismatch", f"Reconciliation mismatch {date}", severity="warning",
                      text="; ".join(f"{m.type} {m.symbol} {m.expected}->{m.actual}" for m in recon.mismatches)[:2000],
                      fields={"date": date, "mismatches": str(len(recon.mismatches)), "types": ",".join(kinds)},
                      trade_date=date, ts=ts, dedup=recon.recon_id, runbook="reconciliation-mismatch")


def daily_report_alert(date: str, psnap: PortfolioSnapshot, recon: Reconciliation, trades_closed: int, ts: int,
                       report_on_close: bool) -> Alert:
    """The daily summary alert (with the report's paths when it is written at the close)."""
    fields = {"equity": f"{psnap.equity:.2f}", "drawdown_pct": f"{100 * psnap.drawdown:.2f}",
              "open_positions": str(len(psnap.positions)), "trades_closed": str(trades_closed),
              "reconciliation": recon.status}
    if report_on_close:
        fields.update(report=f"reports/{date}/report.html", chart=f"reports/{date}/equity.png")
    return make_alert(SVC, "daily_report", f"Daily report {date}", severity="info",
                      text=(f"report: reports/{date}/report.html" if report_on_close
                            else f"report: `avwap report --date {date}`"),
                      fields=fields, trade_date=date, ts=ts, dedup=psnap.snapshot_id)
