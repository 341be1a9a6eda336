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

The parts: ``limits`` (the settings and controls as values), ``state`` (the state and a step's
result), ``telemetry`` (the decision records and their provenance), ``gates`` (the table of
reason codes) and ``checks`` (the gate checks), ``sizing`` (exposure, shares, regime modulation),
``decisions`` (analytics' ALLOW/BLOCK batches under enforcement). This module is the reducer.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.ids import client_order_id, stable_id
from shared.regime import effect
from shared.schemas import (
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
from shared.streams import ALERTS, INTENTS, REJECTIONS

from .checks import blocked_alert, candidate_codes, gates_passed, global_codes
from .decisions import dlq_code, find_decisions, match_decision, schema_ok
from .gates import ENFORCEMENT, FAIL_CLOSED, ordered
from .limits import MODES, Controls, Limits
from .sizing import Book, build_book, drawdown_pct, modulate, regime_detail, size
from .state import PendingEntry, RiskState, Step, copy_state, decode_state, encode_state, ny_day
from .telemetry import UNKNOWN, DecisionRecord, ShadowRecord, line_provenance

NS = 1_000_000_000
POST_OPEN = ("OPEN", "WINDOW_OPEN", "CLOSE")
KEEP_DATES = 5  # sessions of decisions / clock / decision batches kept in the state
KEEP_DAYS = 10  # NY days of the new-entries ledger kept in the state


def step(state: RiskState, msg: Message, controls: Controls, limits: Limits, entry_ms: int = 0,
         copy: bool = True) -> Step:
    """Apply one input message; return the new state and what to publish (pure).

    ``copy=False`` lets the step change ``state`` in place: for a caller that decoded it for this
    step only and never looks at it again (the worker), it saves a full encode + decode.
    """
    st = copy_state(state) if copy else state
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


def _decision_ts(phases: dict[str, int]) -> tuple[int, int, bool]:
    """(reference time, message time, opened) of a session's decisions.

    The reference time (snapshot freshness, NY day of the entries ledger) is PRE_MARKET's time
    (else the first post-open event's); messages carry it too, except after the open, when
    they carry the first post-open event's time.
    """
    post = [phases[p] for p in POST_OPEN if p in phases]
    ref = phases.get("PRE_MARKET", min(post) if post else 0)
    return ref, (min(post) if post else ref), bool(post)


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
        dec = find_decisions(st, b)
        dec_code: str | None = None
        b_wait = waiting
        if limits.enforce and dec is None:
            dlq = dlq_code(st, controls, session)
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


def _decide(st: RiskState, batches: Iterable[CandidateBatch], session: str, ref: int, ts: int, prereq: set[str],
            decisions: dict[str, tuple[PortfolioDecisionBatch | None, str | None]] | None,
            controls: Controls, limits: Limits, out: Step, *, snapshot_ok: bool) -> None:
    today = ny_day(ref) if ref else session
    blocking = global_codes(controls, limits, today)
    snap = st.broker
    book = build_book(st, snap, today) if snapshot_ok and snap is not None else None
    recs = st.decided.setdefault(session, {})
    eff = effect(limits.modulation, st.regimes.get(session), drawdown_pct(st, session)) if limits.modulation else None
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
        codes = set(blocking) | set(prereq) | candidate_codes(c, limits)
        dec_b, dec_code = (decisions or {}).get(b.batch_id, (None, None))
        pd: PortfolioDecision | None = None
        if limits.enforce and "WATCHLIST_STALE" not in prereq:
            if dec_code:
                codes.add(dec_code)
            elif dec_b is not None:
                if not schema_ok(dec_b):
                    codes.add("DECISION_SCHEMA_INVALID")
                elif dec_b.date != b.scan_date:
                    codes.add("DECISION_DATE_MISMATCH")
                else:
                    pd = match_decision(dec_b, c)
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
                qty, regime_codes = modulate(eff, c, book, limits, codes, qty)
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
                detail = (detail + "; " if detail else "") + regime_detail(eff)
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
                             gates_passed=gates_passed(limits), ts=ts)
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


__all__ = [
    "MODES", "Book", "Controls", "DecisionRecord", "Limits", "PendingEntry", "RiskState", "ShadowRecord", "Step",
    "blocked_alert", "build_book", "decode_state", "encode_state", "global_codes", "line_provenance", "ny_day",
    "size", "step",
]
