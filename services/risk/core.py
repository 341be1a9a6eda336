"""Risk decisions: a candidate becomes a sized EntryIntent or a Rejection with ordered reason codes.

Pure: no Redis, no clock, no env. ``step(state, msg, controls, limits)`` is a reducer: it
returns the next ``RiskState`` and the messages to publish. The worker stores the state in
one Redis key and commits state + outputs + ack in one WATCH/MULTI transaction, so replicas
serialise on it and a crash either commits a step completely or not at all.

Session rule (docs/risk.md): candidates of session D are decided only once
``SessionEvent(PRE_MARKET, D)`` and a BrokerSnapshot of D within ``snapshot_max_age_s`` of the
PRE_MARKET time have been seen (and, with enforcement on, D's PortfolioDecisionBatch); until
then the batch is held. At OPEN(D) every batch still held is rejected with the codes of what
was missing. The decision time of every session-D decision is the PRE_MARKET(D) event time,
so the outcome does not depend on the order in which batch, snapshot and decisions arrive.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import msgspec

from shared.alerts import make_alert
from shared.artifacts import provenance
from shared.clock import ny_trade_date
from shared.ids import client_order_id, stable_id
from shared.regime import Effect, Table, changed_codes, effect
from shared.schemas import (
    DECISION_REASON_ORDER,
    Alert,
    BrokerSnapshot,
    Candidate,
    CandidateBatch,
    EntryIntent,
    Message,
    OrderEvent,
    PortfolioDecision,
    PortfolioDecisionBatch,
    PortfolioSnapshot,
    Regime,
    Rejection,
    SessionEvent,
)
from shared.settings.core import EXECUTION_MODES
from shared.settings.risk import RiskSettings
from shared.streams import ALERTS, INTENTS, REJECTIONS

from .gates import ENFORCEMENT, FAIL_CLOSED, ordered

NS = 1_000_000_000
MODES = EXECUTION_MODES  # any other EXECUTION_MODE refuses every entry (MODE_UNKNOWN)
POST_OPEN = ("OPEN", "WINDOW_OPEN", "CLOSE")
KEEP_DATES = 5  # sessions of decisions / clock / decision batches kept in the state
KEEP_DAYS = 10  # NY days of the new-entries ledger kept in the state
EPS = 1e-9

Emit = tuple[str, Message]


# -- inputs ------------------------------------------------------------------------------------
class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """The risk settings as plain values (built by the shell from ``RiskSettings``)."""

    max_risk_per_trade: float = 500.0
    max_risk_per_trade_pct: float = 0.5
    max_gross_exposure: float = 100_000.0
    max_gross_exposure_pct: float = 100.0
    max_notional_per_symbol: float = 20_000.0
    max_concurrent_positions: int = 5
    max_new_entries_per_day: int = 3
    max_risk_per_share: float = 3.0
    allowlist: tuple[str, ...] = ()
    phase_c_enabled: bool = False
    phase_c_enable_date: str = ""
    phase_c_allowlist: tuple[str, ...] = ()
    enforce: bool = False
    snapshot_max_age_s: int = 900
    settings_hash: str = ""
    code_version: str = ""  # recorded in each telemetry line's provenance (the shell reads it)
    run_id: str = ""  # ditto (``Settings.resolved_run_id()``)
    modulation: Table | None = None  # REGIME_MODULATION=1: the regime table (shared.regime); None: off

    @classmethod
    def from_settings(cls, rs: RiskSettings, settings_hash: str = "", code_version: str = "", run_id: str = "") -> Limits:
        return cls(
            max_risk_per_trade=rs.max_risk_per_trade, max_risk_per_trade_pct=rs.max_risk_per_trade_pct,
            max_gross_exposure=rs.max_gross_exposure, max_gross_exposure_pct=rs.max_gross_exposure_pct,
            max_notional_per_symbol=rs.max_notional_per_symbol, max_concurrent_positions=rs.max_concurrent_positions,
            max_new_entries_per_day=rs.max_new_entries_per_day, max_risk_per_share=rs.max_risk_per_share,
            allowlist=tuple(rs.allowlist), phase_c_enabled=rs.phase_c_enabled,
            phase_c_enable_date=rs.phase_c_enable_date.strip(), phase_c_allowlist=tuple(rs.phase_c_allowlist),
            enforce=rs.portfolio_decision_enforce, snapshot_max_age_s=rs.snapshot_max_age_s,
            settings_hash=settings_hash, code_version=code_version, run_id=run_id,
        )


class Controls(msgspec.Struct, frozen=True, kw_only=True):
    """Control inputs the shell reads at each step (never cached)."""

    kill_switch: str = "off"  # off | on | unreadable (the trading state's entry view, shared.controls)
    kill_switch_env: bool = False
    trading_state: str = "ACTIVE"  # ACTIVE | REDUCING | HALTED | UNREADABLE
    mode: str = "DRY_RUN"
    live_trading: bool = False
    live_token: str = "n/a"  # n/a (not LIVE) | ok | missing | file_missing | mismatch
    # dead-lettered decision batches seen by the risk group: (source entry ms, date or "", code)
    decision_dlq: tuple[tuple[int, str, str], ...] = ()


# -- state -------------------------------------------------------------------------------------
class PendingEntry(msgspec.Struct, kw_only=True):
    """An entry intent sent and not yet reflected in a broker snapshot."""

    intent_id: str
    client_order_id: str
    symbol: str
    trade_date: str
    qty: int
    notional: float
    status: str = "open"  # open | filled
    filled_qty: int = 0
    fill_notional: float = 0.0
    resolved_ts: int = 0


class DecisionRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One risk decision, as written to ``risk_decisions/<D>.jsonl``."""

    kind: str = "decision"
    ord: int
    session: str
    trade_date: str
    candidate_id: str
    symbol: str
    batch_id: str
    outcome: str  # intent | rejection
    message_id: str
    qty: int = 0
    notional: float = 0.0
    entry_level: float = 0.0
    stop_price: float = 0.0
    reasons: list[str] = []
    gates_passed: list[str] = []
    decision_ts: int
    ny_day: str
    enforcement: str  # enforced | shadow
    portfolio_decision: str = ""
    portfolio_decision_id: str = ""
    portfolio_reason_codes: list[str] = []
    provenance: dict[str, str] = {}


class ShadowRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An analytics ALLOW/BLOCK decision as risk received it (logged whether enforced or not)."""

    kind: str = "portfolio_decision"
    date: str
    decision_id: str
    candidate_id: str
    symbol: str
    decision: str
    reason_codes: list[str]
    batch_id: str
    enforcement: str
    provenance: dict[str, str] = {}


class RiskState(msgspec.Struct, kw_only=True):
    session: str = ""  # the current NY trading session (latest SessionEvent date)
    clock: dict[str, dict[str, int]] = {}  # session -> phase -> event ts (+ PRE_MARKET_entry_ms)
    broker: BrokerSnapshot | None = None
    portfolio: PortfolioSnapshot | None = None
    decision_batches: dict[str, PortfolioDecisionBatch] = {}
    held: dict[str, CandidateBatch] = {}
    decided: dict[str, dict[str, DecisionRecord]] = {}  # session -> candidate_id -> record
    shadow: dict[str, dict[str, ShadowRecord]] = {}  # date -> decision_id -> record
    entries_by_day: dict[str, int] = {}  # NY date -> entry intents sent
    pending: dict[str, PendingEntry] = {}  # intent_id -> entry not yet in a snapshot
    regimes: dict[str, Regime] = {}  # session -> its Regime (the first one received)
    seq: int = 0


class Step(msgspec.Struct, kw_only=True):
    state: RiskState
    emits: list[tuple[str, Message]] = []
    dates: list[str] = []  # sessions whose decision artifact changed


_STATE_ENC = msgspec.json.Encoder()
_STATE_DEC = msgspec.json.Decoder(RiskState)


def encode_state(st: RiskState) -> bytes:
    return _STATE_ENC.encode(st)


def decode_state(raw: bytes | None) -> RiskState:
    return RiskState() if not raw else _STATE_DEC.decode(raw)


def ny_day(ts: int) -> str:
    """The NY calendar date keying the new-entries ledger (rolls over at NY midnight, DST-safe)."""
    return ny_trade_date(ts)


# -- exposure ----------------------------------------------------------------------------------
class Book(msgspec.Struct, kw_only=True):
    """Exposure at decision time: the snapshot plus entries sent and not yet in it."""

    equity: float
    cash_free: float
    gross: float
    by_symbol: dict[str, float]
    open_symbols: set[str]
    entries_today: int


def _position_value(qty: int, current: float, avg: float) -> float:
    return abs(qty) * (current if current > 0 else avg)


def build_book(st: RiskState, snap: BrokerSnapshot, day: str) -> Book:
    by_symbol: dict[str, float] = {}
    open_symbols: set[str] = set()
    gross = 0.0
    committed = 0.0  # cash promised to entries not yet in the snapshot's cash
    for p in snap.positions:
        if p.qty == 0:
            continue
        v = _position_value(p.qty, p.current_price, p.avg_entry_price)
        by_symbol[p.symbol] = by_symbol.get(p.symbol, 0.0) + v
        gross += v
        open_symbols.add(p.symbol)
    ours = {pe.client_order_id for pe in st.pending.values()}
    marks = {p.symbol: (p.current_price or p.avg_entry_price) for p in snap.positions}
    for o in snap.open_orders:
        if o.side != "buy" or o.order_type.startswith("stop") or o.client_order_id in ours:
            continue
        price = o.limit_price or marks.get(o.symbol, 0.0)
        v = max(0, o.qty - o.filled_qty) * price
        by_symbol[o.symbol] = by_symbol.get(o.symbol, 0.0) + v
        gross += v
        committed += v
        open_symbols.add(o.symbol)
    for pe in st.pending.values():
        if pe.status == "filled" and pe.resolved_ts <= snap.ts:
            continue  # the snapshot already holds it
        v = pe.fill_notional if pe.status == "filled" else max(pe.notional, pe.fill_notional)
        by_symbol[pe.symbol] = by_symbol.get(pe.symbol, 0.0) + v
        gross += v
        committed += v
        open_symbols.add(pe.symbol)
    return Book(equity=snap.equity, cash_free=snap.cash - committed, gross=gross, by_symbol=by_symbol,
                open_symbols=open_symbols, entries_today=st.entries_by_day.get(day, 0))


# -- the reducer -------------------------------------------------------------------------------
def step(state: RiskState, msg: Message, controls: Controls, limits: Limits, entry_ms: int = 0,
         copy: bool = True) -> Step:
    """Apply one input message; return the new state and what to publish (pure).

    ``copy=False`` lets the step change ``state`` in place: for a caller that decoded it for this
    step only and never looks at it again (the worker), it saves a full encode + decode.
    """
    st = _STATE_DEC.decode(_STATE_ENC.encode(state)) if copy else state
    out = Step(state=st, emits=[], dates=[])
    if isinstance(msg, SessionEvent):
        _on_session(st, msg, entry_ms)
    elif isinstance(msg, CandidateBatch):
        if msg.batch_id in st.held or all(_decided_anywhere(st, c.candidate_id) for c in msg.candidates):
            return out  # redelivery / replay of a batch already handled
        st.held[msg.batch_id] = msg
    elif isinstance(msg, BrokerSnapshot):
        if st.broker is None or msg.ts >= st.broker.ts:
            st.broker = msg
            for k in [k for k, pe in st.pending.items() if pe.status == "filled" and pe.resolved_ts <= msg.ts]:
                del st.pending[k]
    elif isinstance(msg, PortfolioDecisionBatch):
        if msg.batch_id not in st.decision_batches:
            st.decision_batches[msg.batch_id] = msg
            _shadow(st, msg, limits, out)
    elif isinstance(msg, PortfolioSnapshot):
        if st.portfolio is None or msg.date >= st.portfolio.date:
            st.portfolio = msg
    elif isinstance(msg, OrderEvent):
        _on_order(st, msg)
        return out
    elif isinstance(msg, Regime):
        if msg.session in st.regimes or (st.session and msg.session < st.session):
            return out
        st.regimes[msg.session] = msg
    else:
        return out  # intents, exits, bars...: never gated here
    _advance(st, controls, limits, out)
    if out.emits or out.dates:
        st.seq += 1
    return out


def _decided_anywhere(st: RiskState, candidate_id: str) -> bool:
    return any(candidate_id in recs for recs in st.decided.values())


def _on_session(st: RiskState, ev: SessionEvent, entry_ms: int) -> None:
    phases = st.clock.setdefault(ev.trade_date, {})
    phases.setdefault(ev.phase, ev.ts)
    if ev.phase == "PRE_MARKET" and entry_ms:
        phases.setdefault("PRE_MARKET_entry_ms", entry_ms)
    if ev.trade_date > st.session:
        st.session = ev.trade_date
        # entries are day orders: anything unfilled from an earlier session has expired
        for k in [k for k, pe in st.pending.items() if pe.trade_date < st.session and pe.status == "open"]:
            del st.pending[k]
        _prune(st)


def _prune(st: RiskState) -> None:
    keep = set(sorted(st.clock)[-KEEP_DATES:])
    st.clock = {d: v for d, v in st.clock.items() if d in keep}
    cutoff = min(keep) if keep else ""
    st.decided = {d: v for d, v in st.decided.items() if d >= cutoff}
    st.shadow = {d: v for d, v in st.shadow.items() if d >= cutoff}
    st.decision_batches = {k: b for k, b in st.decision_batches.items() if b.date >= cutoff}
    st.regimes = {k: g for k, g in st.regimes.items() if k >= cutoff}
    days = sorted(st.entries_by_day)[-KEEP_DAYS:]
    st.entries_by_day = {d: st.entries_by_day[d] for d in days}


def _on_order(st: RiskState, ev: OrderEvent) -> None:
    if ev.kind != "entry":
        return
    pe = st.pending.get(ev.intent_id)
    if pe is None:
        return
    if ev.event in ("filled", "partially_filled"):
        pe.filled_qty = max(pe.filled_qty, ev.filled_qty or ev.fill_qty)
        price = ev.avg_fill_price or ev.fill_price or (pe.notional / pe.qty if pe.qty else 0.0)
        pe.fill_notional = round(pe.filled_qty * price, 4)
        if ev.event == "filled":
            pe.status, pe.resolved_ts = "filled", ev.ts
    elif ev.event in ("cancelled", "rejected"):
        if pe.filled_qty > 0:
            pe.status, pe.resolved_ts = "filled", ev.ts
        else:
            del st.pending[ev.intent_id]


def _shadow(st: RiskState, b: PortfolioDecisionBatch, limits: Limits, out: Step) -> None:
    recs = st.shadow.setdefault(b.date, {})
    for d in b.decisions:
        recs.setdefault(d.decision_id, ShadowRecord(
            date=b.date, decision_id=d.decision_id, candidate_id=d.candidate_id, symbol=d.symbol, decision=d.decision,
            reason_codes=list(d.reason_codes), batch_id=b.batch_id, enforcement="enforced" if limits.enforce else "shadow",
            provenance=line_provenance(limits, {"portfolio_decisions": b.batch_id}, b, d)))
    if b.date not in out.dates:
        out.dates.append(b.date)


UNKNOWN = "unknown"  # a provenance value risk does not have (no decision batch, or it did not say)


def line_provenance(limits: Limits, inputs: dict[str, str], b: PortfolioDecisionBatch | None,
                    d: PortfolioDecision | None) -> dict[str, str]:
    """The provenance block of one telemetry line (docs/risk.md "Artifacts").

    The project's provenance shape (``shared.artifacts.provenance``: code version and settings hash
    at decision time, ``input:<name>`` ids) plus ``run_id`` and what links the line to analytics'
    decision: the decision artifact the batch names and the decision id (``unknown`` when there is
    no batch or it does not say).
    """
    prov_in = b.provenance if b is not None else {}
    artifact = prov_in.get("decision_artifact") or prov_in.get("artifact") or UNKNOWN
    extra = {"decision_artifact": artifact, "decision_id": d.decision_id if d is not None else UNKNOWN,
             "run_id": limits.run_id or UNKNOWN}
    if b is not None:
        extra["decision_snapshot_id"] = b.snapshot_id or UNKNOWN
        if prov_in.get("run_id"):
            extra["decision_run_id"] = prov_in["run_id"]
    return provenance(limits.settings_hash, inputs, code=limits.code_version or UNKNOWN, **extra)


def _decision_ts(phases: dict[str, int]) -> tuple[int, int, bool]:
    """(reference time, message time, opened) of a session's decisions.

    The reference time (snapshot freshness, NY day of the entries ledger) is PRE_MARKET's time
    (else the first post-open event's); messages carry it too, except after the open, when
    they carry the first post-open event's time.
    """
    post = [phases[p] for p in POST_OPEN if p in phases]
    ref = phases.get("PRE_MARKET", min(post) if post else 0)
    return ref, (min(post) if post else ref), bool(post)


def _dlq_code(st: RiskState, controls: Controls, session: str) -> str | None:
    """The code of a dead-lettered decision batch that belongs to ``session``, if any."""
    best: str | None = None
    starts = sorted((v.get("PRE_MARKET_entry_ms", 0), d) for d, v in st.clock.items() if v.get("PRE_MARKET_entry_ms"))
    for ms, date, code in controls.decision_dlq:
        owner = date
        if not owner:
            owners = [d for start, d in starts if start <= ms]
            owner = owners[-1] if owners else ""
        if owner == session and (best is None or code < best):
            best = code
    return best


def _find_decisions(st: RiskState, batch: CandidateBatch) -> PortfolioDecisionBatch | None:
    linked = [b for b in st.decision_batches.values() if b.candidates_batch_id == batch.batch_id]
    if linked:
        return linked[0]
    same_day = [b for b in st.decision_batches.values() if b.date == batch.scan_date]
    return same_day[0] if same_day else None


def _schema_ok(b: PortfolioDecisionBatch) -> bool:
    ids = [d.decision_id for d in b.decisions]
    cands = [d.candidate_id for d in b.decisions if d.candidate_id]
    if len(set(ids)) != len(ids) or len(set(cands)) != len(cands):
        return False
    for d in b.decisions:
        if d.decision not in ("ALLOW", "BLOCK") or not d.decision_id or not d.symbol or not d.reason_codes:
            return False
        if any(code not in DECISION_REASON_ORDER for code in d.reason_codes):
            return False
    return True


def _match(b: PortfolioDecisionBatch, c: Candidate) -> PortfolioDecision | None:
    for d in b.decisions:
        if d.candidate_id and d.candidate_id == c.candidate_id:
            return d
    by_symbol = [d for d in b.decisions if d.symbol == c.symbol and (not d.candidate_id or d.candidate_id == c.candidate_id)]
    return by_symbol[0] if len(by_symbol) == 1 else None


def _advance(st: RiskState, controls: Controls, limits: Limits, out: Step) -> None:
    """Decide every held batch that is ready (or must fail closed), in batch_id order."""
    session = st.session
    stale = [b for k, b in sorted(st.held.items()) if session and b.scan_date < session]
    current = [b for k, b in sorted(st.held.items()) if b.scan_date == session]
    if stale:
        for b in stale:
            del st.held[b.batch_id]
        ref, ts, _ = _decision_ts(st.clock.get(session, {}))
        _decide(st, stale, session, ref, ts, {"WATCHLIST_STALE"}, None, controls, limits, out, snapshot_ok=False)
    if not current:
        return
    phases = st.clock.get(session, {})
    ref, ts, opened = _decision_ts(phases)
    prereq: set[str] = set()
    waiting = False
    if "PRE_MARKET" not in phases:
        prereq.add("SESSION_NOT_STARTED")
        waiting = True
    snap = st.broker
    if snap is None or snap.trade_date != session:
        prereq.add("SNAPSHOT_MISSING")
        waiting = True
    elif abs(snap.ts - ref) > limits.snapshot_max_age_s * NS:
        prereq.add("SNAPSHOT_STALE")
        waiting = True
    elif not snap.reconciled:
        prereq.add("SNAPSHOT_UNRECONCILED")
    if limits.modulation is not None and session not in st.regimes:
        waiting = True  # the session's Regime: wait until OPEN, then the most conservative row (REGIME_UNKNOWN)
    ready: list[tuple[CandidateBatch, PortfolioDecisionBatch | None, str | None]] = []
    for b in current:
        dec = _find_decisions(st, b)
        dec_code: str | None = None
        b_wait = waiting
        if limits.enforce and dec is None:
            dlq = _dlq_code(st, controls, session)
            dec_code = dlq or "DECISION_FILE_MISSING"
            b_wait = b_wait or dlq is None
        if b_wait and not opened:
            continue
        ready.append((b, dec, dec_code))
    if not ready:
        return
    for b, _, _ in ready:
        del st.held[b.batch_id]
    snapshot_ok = not (prereq & {"SESSION_NOT_STARTED", "SNAPSHOT_MISSING", "SNAPSHOT_STALE"})
    _decide(st, [b for b, _, _ in ready], session, ref, ts, prereq, {b.batch_id: (d, c) for b, d, c in ready},
            controls, limits, out, snapshot_ok=snapshot_ok)


def global_codes(controls: Controls, limits: Limits, today: str) -> set[str]:
    """The codes that refuse every entry right now (kill switch, mode, live gate, Phase C date/allowlist)."""
    codes: set[str] = set()
    if controls.trading_state == "HALTED":
        codes.add("TRADING_HALTED")
    elif controls.kill_switch == "on" or controls.kill_switch_env:
        codes.add("KILL_SWITCH_ON")
    if controls.kill_switch not in ("on", "off"):
        codes.add("KILL_SWITCH_UNREADABLE")
    if controls.mode not in MODES:
        codes.add("MODE_UNKNOWN")
    if controls.mode == "LIVE":
        if not controls.live_trading:
            codes.add("LIVE_TRADING_DISABLED")
        token_code = {"missing": "LIVE_TOKEN_MISSING", "file_missing": "LIVE_TOKEN_FILE_MISSING",
                      "mismatch": "LIVE_TOKEN_MISMATCH"}.get(controls.live_token)
        if controls.live_token != "ok":
            codes.add(token_code or "LIVE_TOKEN_MISMATCH")
    if limits.phase_c_enabled:
        if limits.phase_c_enable_date != today:
            codes.add("phase_c_live_date_not_permitted")
        if len(limits.phase_c_allowlist) != 1:
            codes.add("phase_c_allowlist_must_be_single_symbol")
    return codes


def _candidate_codes(c: Candidate, limits: Limits) -> set[str]:
    codes: set[str] = set()
    sym = c.symbol.upper()
    if limits.phase_c_enabled and sym not in limits.phase_c_allowlist:
        codes.add("phase_c_symbol_not_permitted")
    if limits.allowlist and sym not in limits.allowlist:
        codes.add("SYMBOL_NOT_ALLOWLISTED")
    finite = all(math.isfinite(x) for x in (c.entry_level, c.stop_loss))
    if c.direction != "LONG" or not finite or c.entry_level <= 0 or c.stop_loss <= 0:
        codes.add("INVALID_CANDIDATE")
    elif round(c.entry_level - c.stop_loss, 4) <= 0:
        codes.add("STOP_NOT_BELOW_ENTRY")
    elif round(c.entry_level - c.stop_loss, 4) > limits.max_risk_per_share + EPS:
        codes.add("RISK_PER_SHARE_TOO_HIGH")
    return codes


def _floor(x: float) -> int:
    return max(0, math.floor(x + EPS)) if math.isfinite(x) else 0


def size(entry: float, stop: float, book: Book, limits: Limits, symbol: str) -> tuple[int, set[str], dict[str, int]]:
    """Whole shares = floor(min(risk budget / rps, symbol, gross and cash headroom / entry)) and the zero terms' codes."""
    codes: set[str] = set()
    if book.equity <= 0 or not math.isfinite(book.equity):
        return 0, {"EQUITY_INVALID"}, {}
    rps = round(entry - stop, 4)
    budget = min(limits.max_risk_per_trade, book.equity * limits.max_risk_per_trade_pct / 100.0)
    gross_cap = min(limits.max_gross_exposure, book.equity * limits.max_gross_exposure_pct / 100.0)
    terms = {
        "MAX_RISK_PER_TRADE": _floor(budget / rps) if rps > 0 else 0,
        "MAX_NOTIONAL_PER_SYMBOL": _floor((limits.max_notional_per_symbol - book.by_symbol.get(symbol, 0.0)) / entry),
        "MAX_GROSS_EXPOSURE": _floor((gross_cap - book.gross) / entry),
        "INSUFFICIENT_CASH": _floor(book.cash_free / entry),
    }
    codes = {k for k, v in terms.items() if v <= 0}
    return (0 if codes else min(terms.values())), codes, terms


def _decide(st: RiskState, batches: Iterable[CandidateBatch], session: str, ref: int, ts: int, prereq: set[str],
            decisions: dict[str, tuple[PortfolioDecisionBatch | None, str | None]] | None,
            controls: Controls, limits: Limits, out: Step, *, snapshot_ok: bool) -> None:
    today = ny_day(ref) if ref else session
    blocking = global_codes(controls, limits, today)
    snap = st.broker
    book = build_book(st, snap, today) if snapshot_ok and snap is not None else None
    recs = st.decided.setdefault(session, {})
    eff = effect(limits.modulation, st.regimes.get(session), _drawdown_pct(st, session)) if limits.modulation else None
    items: list[tuple[Candidate, CandidateBatch]] = []
    seen: set[str] = set()
    for b in batches:
        for c in b.candidates:
            if c.candidate_id in seen or _decided_anywhere(st, c.candidate_id):
                continue
            seen.add(c.candidate_id)
            items.append((c, b))
    items.sort(key=lambda cb: (-cb[0].score, cb[0].symbol, cb[0].candidate_id))
    blocked: list[tuple[str, list[str]]] = []
    for c, b in items:
        codes = set(blocking) | set(prereq) | _candidate_codes(c, limits)
        dec_b, dec_code = (decisions or {}).get(b.batch_id, (None, None))
        pd: PortfolioDecision | None = None
        if limits.enforce and "WATCHLIST_STALE" not in prereq:
            if dec_code:
                codes.add(dec_code)
            elif dec_b is not None:
                if not _schema_ok(dec_b):
                    codes.add("DECISION_SCHEMA_INVALID")
                elif dec_b.date != b.scan_date:
                    codes.add("DECISION_DATE_MISMATCH")
                else:
                    pd = _match(dec_b, c)
                    if pd is None:
                        codes.add("DECISION_SYMBOL_NOT_FOUND")
                    elif pd.decision == "BLOCK":
                        codes.add("DECISION_BLOCK")
        qty, terms = 0, {}
        regime_codes: list[str] = []
        if book is not None and "INVALID_CANDIDATE" not in codes:
            sym = c.symbol
            if sym in book.open_symbols:
                codes.add("POSITION_ALREADY_OPEN")
            if len(book.open_symbols) >= limits.max_concurrent_positions:
                codes.add("MAX_CONCURRENT_POSITIONS")
            if book.entries_today >= limits.max_new_entries_per_day:
                codes.add("MAX_NEW_ENTRIES_PER_DAY")
            if "STOP_NOT_BELOW_ENTRY" not in codes:
                qty, size_codes, terms = size(c.entry_level, c.stop_loss, book, limits, sym)
                codes |= size_codes
            if eff is not None:
                qty, regime_codes = _modulate(eff, c, book, limits, codes, qty)
                if qty <= 0:
                    codes |= set(regime_codes)  # the modulation turned an intent into a rejection
        elif book is None and not prereq:
            codes.add("SNAPSHOT_MISSING")  # defensive: never size without a snapshot
        # with enforcement off the decision batch is not an input (whether it arrived yet is a race)
        applied = dec_b if limits.enforce else None
        inputs = {"candidates": b.batch_id,
                  "broker_snapshot": snap.snapshot_id if (snap is not None and snapshot_ok) else UNKNOWN,
                  "portfolio_decisions": applied.batch_id if applied is not None else UNKNOWN}
        if eff is not None:
            inputs["regime"] = eff.regime_id or UNKNOWN
        prov = line_provenance(limits, inputs, applied, pd)
        rps = round(c.entry_level - c.stop_loss, 4) if "INVALID_CANDIDATE" not in codes else 0.0
        base = {"ord": len(recs), "session": session, "trade_date": c.scan_date, "candidate_id": c.candidate_id,
                "symbol": c.symbol, "batch_id": b.batch_id, "decision_ts": ts, "ny_day": today,
                "enforcement": "enforced" if limits.enforce else "shadow",
                "portfolio_decision": pd.decision if pd else "", "portfolio_decision_id": pd.decision_id if pd else "",
                "portfolio_reason_codes": list(pd.reason_codes) if pd else [],
                "provenance": prov}
        if codes or qty <= 0 or book is None:
            reasons = ordered(codes) if codes else ["INSUFFICIENT_CASH"]
            detail = ""
            if pd is not None and pd.decision == "BLOCK":
                detail = "portfolio: " + ",".join(pd.reason_codes)
            if terms:
                detail = (detail + "; " if detail else "") + "sizing: " + ",".join(f"{k}={v}" for k, v in sorted(terms.items()))
            if regime_codes and eff is not None:
                detail = (detail + "; " if detail else "") + _regime_detail(eff)
            rej = Rejection(rejection_id=stable_id("rj", c.candidate_id, c.scan_date, reasons), source="risk", symbol=c.symbol,
                            trade_date=c.scan_date, reasons=reasons, candidate_id=c.candidate_id, detail=detail, ts=ts)
            out.emits.append((REJECTIONS, rej))
            recs[c.candidate_id] = DecisionRecord(outcome="rejection", message_id=rej.rejection_id, reasons=reasons,
                                                  entry_level=c.entry_level, stop_price=c.stop_loss, **base)  # type: ignore[arg-type]
            if set(reasons) & (FAIL_CLOSED | ENFORCEMENT | {"KILL_SWITCH_ON", "TRADING_HALTED"}):
                blocked.append((c.symbol, reasons))
            continue
        notional = round(qty * c.entry_level, 4)
        intent = EntryIntent(intent_id=stable_id("in", c.candidate_id, c.scan_date), candidate_id=c.candidate_id,
                             symbol=c.symbol, trade_date=c.scan_date, qty=qty, entry_level=c.entry_level,
                             stop_price=c.stop_loss, risk_per_share=rps, notional=notional,
                             gates_passed=_passed(limits), ts=ts)
        out.emits.append((INTENTS, intent))
        recs[c.candidate_id] = DecisionRecord(outcome="intent", message_id=intent.intent_id, qty=qty, notional=notional,
                                              entry_level=c.entry_level, stop_price=c.stop_loss, reasons=ordered(regime_codes),
                                              gates_passed=intent.gates_passed, **base)  # type: ignore[arg-type]
        st.pending[intent.intent_id] = PendingEntry(intent_id=intent.intent_id, client_order_id=client_order_id(intent.intent_id),
                                                    symbol=c.symbol, trade_date=c.scan_date, qty=qty, notional=notional)
        st.entries_by_day[today] = st.entries_by_day.get(today, 0) + 1
        assert book is not None
        book.entries_today += 1
        book.gross += notional
        book.cash_free -= notional
        book.by_symbol[c.symbol] = book.by_symbol.get(c.symbol, 0.0) + notional
        book.open_symbols.add(c.symbol)
    if items and session not in out.dates:
        out.dates.append(session)
    if blocked:
        out.emits.append((ALERTS, blocked_alert(session, ts, blocked)))


def _drawdown_pct(st: RiskState, session: str) -> float | None:
    """The portfolio's drawdown (%) from its high-water mark before ``session``: analytics' latest
    snapshot; 0 on the very first session (no earlier session seen); None (unknown) otherwise."""
    if st.portfolio is not None and st.portfolio.date < session:
        return 100.0 * st.portfolio.drawdown
    if not any(d < session for d in st.clock):
        return 0.0
    return None


def _modulate(eff: Effect, c: Candidate, book: Book, limits: Limits, codes: set[str], qty: int) -> tuple[int, list[str]]:
    """(shares, regime codes) of one candidate under the regime's row and the drawdown multiplier.

    The regime's entries cap blocks (REGIME_ENTRY_CAP) only where the base cap did not; the size is
    re-computed with the risk budget and the gross cap multiplied; a size smaller than the base one
    (or zero) is REGIME_THROTTLED. Codes appear only on a decision the modulation changed.
    """
    capped = book.entries_today >= eff.max_entries and "MAX_NEW_ENTRIES_PER_DAY" not in codes
    throttled = False
    new_qty = qty
    if "STOP_NOT_BELOW_ENTRY" not in codes and "INVALID_CANDIDATE" not in codes:
        scaled = msgspec.structs.replace(
            limits, max_risk_per_trade=limits.max_risk_per_trade * eff.risk_mult,
            max_risk_per_trade_pct=limits.max_risk_per_trade_pct * eff.risk_mult,
            max_gross_exposure=limits.max_gross_exposure * eff.gross_mult,
            max_gross_exposure_pct=limits.max_gross_exposure_pct * eff.gross_mult)
        new_qty, _, _ = size(c.entry_level, c.stop_loss, book, scaled, c.symbol)
        throttled = qty > 0 and new_qty < qty and not codes
    if capped and not codes:
        new_qty = 0
    return new_qty, changed_codes(eff, throttled=throttled and not capped, capped=capped and not codes)


def _regime_detail(eff: Effect) -> str:
    return (f"regime: {eff.label} risk x{eff.risk_mult:g} gross x{eff.gross_mult:g} entries/day {eff.max_entries} "
            f"(drawdown x{eff.dd_mult:g})")


def _passed(limits: Limits) -> list[str]:
    from .gates import GATE_NAMES

    skip = set() if limits.phase_c_enabled else {"phase_c"}
    if not limits.allowlist:
        skip.add("allowlist")
    if not limits.enforce:
        skip.add("portfolio_decision")
    return [g for g in GATE_NAMES if g not in skip]


def blocked_alert(session: str, ts: int, blocked: list[tuple[str, list[str]]]) -> Alert:
    """One alert summarising the entries blocked by a fail-closed gate, the kill switch or enforcement."""
    all_codes = sorted({c for _, rs in blocked for c in rs})
    critical = any(c in FAIL_CLOSED for c in all_codes)
    fields = {sym: ",".join(rs) for sym, rs in blocked[:25]}
    title = f"risk: {len(blocked)} entr{'y' if len(blocked) == 1 else 'ies'} blocked on {session} ({', '.join(ordered(all_codes))})"
    return make_alert("risk", "entry_blocked", title, severity="critical" if critical else "warning",
                      text="fail closed: no entry was sent for these candidates", fields=fields,
                      trade_date=session, ts=ts, dedup=str([session, sorted(blocked)]))
