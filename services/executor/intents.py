"""Intents into orders (pure): entry, stop and exit intents become order records and actions; entries
wait for a bar that confirms them (daily or intraday) and are refused when a gate is closed or the day
ends unconfirmed."""

from __future__ import annotations

from shared.clock import NS, dt_to_ns, ny_datetime
from shared.ids import client_order_id, stable_id
from shared.schemas import BarBatch, EntryIntent, ExitIntent, ReasonCode, Rejection, RejectionCode, StopIntent

from .model import (
    DONE,
    R_BAD_QTY,
    R_EXPIRED,
    R_HALTED,
    R_KILL_SWITCH,
    R_KILL_SWITCH_UNREADABLE,
    R_LIVE_GATE,
    R_NOT_CONFIRMED,
    R_UNRECONCILED,
    Bucket,
    Cancel,
    Ctx,
    ExecState,
    Gates,
    OrderRec,
    Out,
    Params,
    Pending,
    Replace,
    Submit,
    _dry_run_accept,
    live_stops,
    order_event,
    reject_entry,
)


# -- intents -----------------------------------------------------------------
def entry_blocks(st: ExecState, gates: Gates, *, reconciling: bool = False) -> list[RejectionCode]:
    """Reason codes that forbid sending a new entry now (empty: it may go). ``reconciling``: the
    check runs as part of start-up reconciliation, so ``reconciled`` is not (yet) required."""
    reasons: list[RejectionCode] = []
    if gates.live_gate:
        reasons.append(R_LIVE_GATE)
    if not st.reconciled and not reconciling:
        reasons.append(R_UNRECONCILED)
    if gates.halted:
        reasons.append(R_HALTED)
    elif gates.kill_switch_unreadable:
        reasons.append(R_KILL_SWITCH_UNREADABLE)
    elif gates.kill_switch:
        reasons.append(R_KILL_SWITCH)
    return reasons


def _block_detail(reasons: list[str], gates: Gates, when: str) -> str:
    parts = [when]
    if R_LIVE_GATE in reasons:
        parts.append(gates.live_gate)
    return "; ".join(parts)


def on_entry_intent(st: ExecState, intent: EntryIntent, ctx: Ctx, *, gates: Gates, current_date: str) -> Out:
    """Queue an entry for confirmation (or refuse it with reason codes)."""
    if intent.intent_id in st.handled:
        return Out()
    st.handled[intent.intent_id] = intent.trade_date
    reasons = entry_blocks(st, gates)
    if intent.qty <= 0:
        reasons.append(R_BAD_QTY)
    if current_date and intent.trade_date < current_date or f"{intent.trade_date}:CLOSE" in st.sessions:
        reasons.append(R_EXPIRED)
    if reasons:
        return Out(events=[reject_entry(intent, reasons, ctx.ts, detail=_block_detail(reasons, gates, "on arrival")
                                        if R_LIVE_GATE in reasons else "")])
    if st.mode == "DRY_RUN":
        return _dry_run_accept(st, _entry_rec(intent), ctx)
    st.pending[intent.intent_id] = Pending(intent=intent)
    return Out()


def on_stop_intent(st: ExecState, intent: StopIntent, ctx: Ctx, *, halted: bool = False) -> Out:
    """Place, replace or cancel a stop. ``halted`` (trading state HALTED): a replace is refused (the live
    stop stays at the broker); a cancel and a first stop for a position go through."""
    if intent.intent_id in st.handled:
        return Out()
    st.handled[intent.intent_id] = intent.trade_date
    coid = client_order_id(intent.intent_id)
    if intent.action == "cancel":
        target = st.orders.get(intent.target_client_order_id)
        if target is None or target.status in DONE:
            return Out()
        target.cancel_reason = f"cancel_intent={intent.intent_id} {intent.reason}".strip()
        target.cancel_code = "CANCEL_INTENT"
        if st.mode == "DRY_RUN":
            target.status = "cancelled"
            return Out(events=[order_event(target, "cancelled", ctx, st.mode, reason=target.cancel_reason,
                                           code="CANCEL_INTENT")])
        return Out(actions=[Cancel(target.client_order_id)])
    rec = OrderRec(client_order_id=coid, intent_id=intent.intent_id, kind="stop", symbol=intent.symbol, side="sell",
                   qty=intent.qty, order_type="stop", stop_price=round(intent.stop_price, 2), trade_date=intent.trade_date)
    if intent.action == "replace":
        rec.replaces = intent.target_client_order_id
        target = st.orders.get(intent.target_client_order_id)
        if target is None or target.status in DONE:
            rec.status = "rejected"
            st.orders[coid] = rec
            why = f"TARGET_NOT_OPEN: {intent.target_client_order_id} is {target.status if target else 'unknown'}"
            code: ReasonCode = "TARGET_NOT_OPEN" if target is not None else "TARGET_UNKNOWN"
            return Out(events=[order_event(rec, "rejected", ctx, st.mode, reason=why, code=code)])
        if halted:
            rec.status = "rejected"
            st.orders[coid] = rec
            why = f"{R_HALTED}: no stop replace while HALTED; {target.client_order_id} stays at the broker"
            return Out(events=[order_event(rec, "rejected", ctx, st.mode, reason=why, code="TRADING_HALTED")])
        if st.mode == "DRY_RUN":
            target.status, target.silent_cancel = "replaced", True
            rec.status, rec.announced = "accepted", True
            st.orders[coid] = rec
            return Out(events=[order_event(rec, "replaced", ctx, st.mode, reason=f"replaces {rec.replaces}; DRY_RUN",
                                           code="REPLACES")])
        st.orders[coid] = rec
        return Out(actions=[Replace(target.client_order_id, coid)])
    if intent.action != "place" or intent.qty <= 0:
        rec.status = "rejected"
        st.orders[coid] = rec
        return Out(events=[order_event(rec, "rejected", ctx, st.mode, code="INVALID_STOP_INTENT",
                                       reason=f"INVALID_STOP_INTENT: action={intent.action} qty={intent.qty}")])
    if st.mode == "DRY_RUN":
        return _dry_run_accept(st, rec, ctx)
    st.orders[coid] = rec
    return Out(actions=[Submit(coid)])


def on_exit_intent(st: ExecState, intent: ExitIntent, ctx: Ctx, position_qty: int, *, halted: bool = False) -> Out:
    """Cancel the stops holding the shares, then sell market (once every cancel is confirmed). The
    cancelled stops are remembered (``protects``): if the exit is refused, or cancelled unfilled,
    they are put back at once (``restore_stops``). ``halted``: refused (``TRADING_HALTED``), the
    stops untouched."""
    if intent.intent_id in st.handled:
        return Out()
    st.handled[intent.intent_id] = intent.trade_date
    coid = client_order_id(intent.intent_id)
    qty = min(intent.qty, position_qty) if st.mode != "DRY_RUN" else intent.qty
    rec = OrderRec(client_order_id=coid, intent_id=intent.intent_id, kind="exit", symbol=intent.symbol, side="sell",
                   qty=max(qty, 0), trade_date=intent.trade_date)
    if st.mode == "DRY_RUN" and not halted:
        return _dry_run_accept(st, rec, ctx)
    if qty <= 0 or halted:
        rec.status = "rejected"
        st.orders[coid] = rec
        if halted:
            return Out(events=[order_event(rec, "rejected", ctx, st.mode, reason=f"{R_HALTED}: no exit while HALTED; "
                                           "the stops stay", code="TRADING_HALTED")])
        return Out(events=[order_event(rec, "rejected", ctx, st.mode, reason="NO_POSITION", code="NO_POSITION")])
    out = Out()
    for stop in sorted(live_stops(st, intent.symbol), key=lambda o: o.client_order_id):
        stop.cancel_reason, stop.cancel_code = f"exit_intent={intent.intent_id}", "EXIT_INTENT"
        rec.waiting_on.append(stop.client_order_id)
        rec.protects.append(stop.client_order_id)
        out.actions.append(Cancel(stop.client_order_id))
    rec.status = "waiting" if rec.waiting_on else "new"
    st.orders[coid] = rec
    if not rec.waiting_on:
        out.actions.append(Submit(coid))
    return out


def ready_waiting(st: ExecState, ctx: Ctx) -> Out:
    """Orders whose blockers are done: submit them (or reject an exit whose stop filled first)."""
    out = Out()
    for rec in sorted(st.orders.values(), key=lambda o: o.client_order_id):
        if rec.status != "waiting":
            continue
        blockers = [st.orders.get(c) for c in rec.waiting_on]
        if any(b is not None and b.status not in DONE for b in blockers):
            continue
        rec.waiting_on = []
        if rec.kind == "exit" and any(b is not None and b.status == "filled" for b in blockers):
            rec.status = "rejected"
            out.events.append(order_event(rec, "rejected", ctx, st.mode, reason="STOP_FILLED_FIRST",
                                          code="STOP_FILLED_FIRST"))
            continue
        if rec.kind == "exit" and rec.protects:
            rec.gap_start = ctx.ts  # the cancels are confirmed: unprotected from now until the fill (or a restore)
        rec.status = "new"
        out.actions.append(Submit(rec.client_order_id))
    return out


# -- confirmation ---------------------------------------------------------------
def _entry_rec(intent: EntryIntent) -> OrderRec:
    return OrderRec(client_order_id=client_order_id(intent.intent_id), intent_id=intent.intent_id, kind="entry",
                    symbol=intent.symbol, side=intent.side, qty=intent.qty, order_type=intent.order_type,
                    limit_price=intent.limit_price, entry_stop=intent.stop_price, trade_date=intent.trade_date,
                    candidate_id=intent.candidate_id)


def _send_confirmed(st: ExecState, it: EntryIntent, gates: Gates, ts: int) -> Out:
    """A confirmed entry leaves ``pending``: re-gated now, it becomes an order (Submit) or a Rejection."""
    del st.pending[it.intent_id]
    reasons = entry_blocks(st, gates)
    if reasons:
        return Out(events=[reject_entry(it, reasons, ts, detail=_block_detail(reasons, gates, "blocked at submit time"))])
    rec = _entry_rec(it)
    st.orders[rec.client_order_id] = rec
    return Out(actions=[Submit(rec.client_order_id)])


def resend_or_block(st: ExecState, rec: OrderRec, gates: Gates, ctx: Ctx, *, reconciling: bool) -> Out:
    """An outbox record the broker does not know (lookup: not found) would be sent again now.

    Stops and exits always are. An entry is re-gated first: kill switch, LIVE gate, its trade date
    closed (``INTENT_EXPIRED``), and ``reconciled`` outside reconciliation. A blocked entry becomes
    ``blocked`` (never sent again; still looked up, in case the first request lands late) with one
    ``Rejection`` for its intent.
    """
    if rec.kind != "entry":
        old = st.orders.get(rec.replaces) if rec.replaces else None
        native = old is not None and old.status not in DONE and not rec.reprotect  # else: cancel-and-new, re-protection
        return Out(actions=[Replace(rec.replaces, rec.client_order_id)] if native else [Submit(rec.client_order_id)])
    reasons = entry_blocks(st, gates, reconciling=reconciling)
    current = max(st.sessions.values(), default="")
    if (current and rec.trade_date < current) or f"{rec.trade_date}:CLOSE" in st.sessions:
        reasons.append(R_EXPIRED)
    if not reasons:
        return Out(actions=[Submit(rec.client_order_id)])
    rec.status = "blocked"
    rj = Rejection(rejection_id=stable_id("rj", "executor", rec.intent_id, reasons), source="executor", symbol=rec.symbol,
                   trade_date=rec.trade_date, reasons=reasons, candidate_id=rec.candidate_id, intent_id=rec.intent_id,
                   detail=_block_detail(reasons, gates, f"resend of {rec.client_order_id} blocked"), ts=ctx.ts)
    return Out(events=[rj])


def batch_id(batch: BarBatch) -> str:
    first = batch.bars[0].ts if batch.bars else 0
    last = batch.bars[-1].ts if batch.bars else 0
    return stable_id("bb", batch.tf, batch.trade_date, first, last, len(batch.bars), batch.final)


def confirm_daily(st: ExecState, batch: BarBatch, gates: Gates) -> Out:
    """Daily approximation: an entry of D is sent at D's open when the open >= the entry level
    (re-gated at that moment: ``gates``)."""
    out = Out()
    intraday = set(st.intraday.get(batch.trade_date, []))
    bars = {b.symbol: b for b in batch.bars}
    for iid in sorted(st.pending):
        p = st.pending[iid]
        it = p.intent
        if it.trade_date != batch.trade_date or it.symbol in intraday:
            continue
        bar = bars.get(it.symbol)
        if bar is None or bar.open < it.entry_level:
            continue
        out.extend(_send_confirmed(st, it, gates, bar.ts))
    return out


def confirm_intraday(st: ExecState, batch: BarBatch, p: Params, session_open_ns: int, gates: Gates) -> Out:
    """10-minute confirmation on 1m bars: the earlier of the last two closed bars closes above the
    entry level and the later one closes at or above it, the later one closing inside the window.
    A confirmed entry is re-gated (``gates``) at that moment."""
    out = Out()
    d = batch.trade_date
    seen = st.intraday.setdefault(d, [])
    for b in batch.bars:
        if b.symbol not in seen:
            seen.append(b.symbol)
    seen.sort()
    step = p.confirm_minutes * 60 * NS
    w_start = dt_to_ns(ny_datetime(d, p.confirm_start))
    w_end = dt_to_ns(ny_datetime(d, p.confirm_end))
    bars = {b.symbol: b for b in batch.bars}
    for iid in sorted(st.pending):
        pend = st.pending[iid]
        it = pend.intent
        bar = bars.get(it.symbol)
        if it.trade_date != d or bar is None:
            continue
        end = session_open_ns + ((bar.ts - session_open_ns + step - 1) // step) * step
        confirmed = False
        if pend.bucket is not None and pend.bucket.end_ts != end:  # a bucket closed without its last minute
            confirmed = _close_bucket(pend, it, w_start, w_end) or confirmed
        if pend.bucket is None:
            pend.bucket = Bucket(end_ts=end, open=bar.open, high=bar.high, low=bar.low, close=bar.close)
        else:
            bk = pend.bucket
            bk.high, bk.low, bk.close = max(bk.high, bar.high), min(bk.low, bar.low), bar.close
        if bar.ts >= end:
            confirmed = _close_bucket(pend, it, w_start, w_end) or confirmed
        if confirmed:
            out.extend(_send_confirmed(st, it, gates, bar.ts))
    return out


def _close_bucket(pend: Pending, it: EntryIntent, w_start: int, w_end: int) -> bool:
    bk = pend.bucket
    assert bk is not None
    pend.closes = [*pend.closes[-1:], bk.close]
    pend.bucket = None
    if len(pend.closes) < 2 or not (w_start <= bk.end_ts <= w_end):
        return False
    earlier, later = pend.closes
    return earlier > it.entry_level and later >= it.entry_level


def expire_unconfirmed(st: ExecState, d: str, ts: int) -> Out:
    out = Out()
    for iid in sorted(st.pending):
        it = st.pending[iid].intent
        if it.trade_date <= d:
            del st.pending[iid]
            out.events.append(reject_entry(it, [R_NOT_CONFIRMED], ts, detail=f"entry level {it.entry_level} not confirmed on {it.trade_date}"))
    return out
