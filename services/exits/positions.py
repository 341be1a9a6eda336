"""The position state machine: an entry fill opens (or adds to) a position and resolves its first stop;
order events confirm, reject or cancel its stop; sell fills reduce it and close it at zero."""

from __future__ import annotations

import msgspec

from shared.bars import row_problem
from shared.ids import stable_id
from shared.schemas import BarRow, ExitPositionState, OrderEvent, StopTracker
from shared.stops import SOURCE_INITIAL, ny_date, to_tick, track_daily, track_minute, tracker_candidate

from .model import (
    B_FOREIGN,
    B_HELD,
    C_ORDER_DUP,
    C_ORDER_OTHER,
    EPS,
    FILL_EVENTS,
    KEEP_FILL_KEYS,
    ExitsIndex,
    History,
    Params,
    Result,
    _alert,
    _event,
    _ignore,
    in_window,
)
from .stop_rules import _cancel_orphans, _orphan, _set_desired, _take, sync


# -- opening and closing -------------------------------------------------------------------
def needs_history(pos: ExitPositionState | None, ev: OrderEvent) -> bool:
    """True when ``ev`` opens a position (the shell then reads the symbol's bars from the store)."""
    return (ev.kind == "entry" and ev.side == "buy" and ev.event in FILL_EVENTS and ev.fill_qty > 0
            and (pos is None or pos.closed))


def history_through(index: ExitsIndex, ev: OrderEvent) -> int:
    """Bars the shell reads for an opening position: up to the fill, or to the last bar already handled
    (bars handled before the fill arrived are caught up after the stop is resolved)."""
    return max(ev.ts, index.last_minute_ts, index.last_daily_ts)


def _seed(tr: StopTracker, hist: History, upto: int, p: Params) -> tuple[list[tuple[int, int, BarRow]], int]:
    """Feed the store's bars up to ``upto`` into the tracker; return the later ones (to catch up)."""
    merged = sorted([(b.ts, 0, b) for b in hist.minutes] + [(b.ts, 1, b) for b in hist.daily], key=lambda x: (x[0], x[1]))
    later = []
    last = 0
    for ts, tf, b in merged:
        if ts > upto:
            later.append((ts, tf, b))
            continue
        if row_problem(b) is not None:
            continue
        if track_minute(tr, b, p.rules) if tf == 0 else track_daily(tr, b, p.rules):
            last = ts
    return later, last


def _open(index: ExitsIndex, ev: OrderEvent, hist: History, p: Params, res: Result) -> ExitPositionState:
    price = float(ev.fill_price or 0.0)
    initial = to_tick(float(ev.stop_price or 0.0))
    pos = ExitPositionState(position_id=stable_id("xp", ev.symbol, ev.intent_id), symbol=ev.symbol, qty=0,
                            avg_entry_price=price, opened_ts=ev.ts, opened_date=ev.trade_date, initial_stop=initial,
                            current_stop=0.0, desired_stop=initial, stop_source=SOURCE_INITIAL,
                            entry_intent_id=ev.intent_id, stop_ts=ev.ts)
    later, last = _seed(pos.tracker, hist, ev.ts, p)
    pos.last_bar_ts = last
    c = tracker_candidate(pos.tracker, p.rules)
    reason = ""
    if c is None:
        reason = "no structure yet: the initial stop stands"
    elif not p.rules.resolve_on_entry:
        reason = "resolve on entry is off"
    elif c.stop >= price:
        reason = f"candidate {c.stop} ({c.source}) is not below the fill price {price}"
    elif c.stop <= initial + EPS:
        reason = f"candidate {c.stop} ({c.source}) is not above the initial stop"
    else:
        _set_desired(pos, c.stop, c.source, c.ref_ts, c.ref_low, ev.ts)
    if initial <= 0 and pos.desired_stop <= 0:
        reason = "NO_STOP: the entry carries no protective stop and the bars give no structure"
        _alert(res, "exit_no_stop", f"{ev.symbol}: position opened without any stop", "critical", pos, ev.ts,
               ev.trade_date, text=reason)
    _event(res, pos, "STOP_RESOLVED", ev.ts, ev.trade_date, p, stop_price=pos.desired_stop, previous_stop=initial,
           source=pos.stop_source, ref_bar_ts=pos.stop_ref_ts, ref_low=pos.stop_ref_low, qty=int(ev.fill_qty),
           reason=reason)
    _add_buy(pos, ev)
    for _, tf, b in later:  # bars the service handled before this fill arrived
        _take(pos, b, tf == 0, ny_date(b.ts), p, res)
    if ev.symbol not in index.open:
        index.open = sorted([*index.open, ev.symbol])
        res.index_changed = True
    if index.closed.pop(ev.symbol, None) is not None:  # reopened: the closed state it replaces is gone
        res.index_changed = True
    return pos


def _add_buy(pos: ExitPositionState, ev: OrderEvent) -> None:
    q = int(ev.fill_qty)
    price = float(ev.fill_price or 0.0)
    total = pos.qty + q
    pos.avg_entry_price = round((pos.avg_entry_price * pos.qty + price * q) / total, 6) if total else price
    pos.qty = total
    pos.entry_qty += q
    pos.last_fill_ts = max(pos.last_fill_ts, ev.ts)


def _close(index: ExitsIndex, pos: ExitPositionState, ts: int, trade_date: str, reason: str, p: Params,
           res: Result) -> None:
    pos.closed, pos.closed_ts, pos.closed_date, pos.closed_reason = True, ts, trade_date, reason
    pos.qty = 0
    avg = round(pos.exit_notional / pos.exit_qty, 6) if pos.exit_qty else None
    _event(res, pos, "POSITION_CLOSED", ts, trade_date, p, stop_price=pos.current_stop, qty=pos.exit_qty,
           exit_price=avg, reason=reason, source=pos.stop_source)
    if pos.live_stop_client_order_id and pos.live_stop_qty > 0:  # a stop that would now sell short: cancel it
        _orphan(index, (pos.symbol, pos.live_stop_client_order_id), pos.position_id, f"position closed ({reason})", res)
    pos.pending = None  # an unanswered intent is refused by the broker (nothing to sell); a snapshot catches the rest
    pos.live_stop_client_order_id, pos.live_stop_qty = "", 0
    if pos.symbol in index.open:
        index.open = [s for s in index.open if s != pos.symbol]
        res.index_changed = True
    index.closed[pos.symbol] = trade_date
    res.index_changed = True


def _fill_key(ev: OrderEvent) -> str:
    return ev.trade_id or ev.event_id


def _new_fill(pos: ExitPositionState, ev: OrderEvent) -> bool:
    key = _fill_key(ev)
    if key in pos.fill_keys:
        return False
    pos.fill_keys = [*pos.fill_keys[-(KEEP_FILL_KEYS - 1):], key]
    return True


def on_order(index: ExitsIndex, pos: ExitPositionState | None, ev: OrderEvent, p: Params,
             hist: History | None = None) -> Result:
    """An OrderEvent about the symbol: open/size from entry fills, track our stops, close on sells."""
    res = Result()
    if ev.client_order_id in index.orphans and ev.event in ("cancelled", "filled", "rejected"):
        del index.orphans[ev.client_order_id]
        res.index_changed = True
    if ev.kind == "entry":
        if not (ev.side == "buy" and ev.event in FILL_EVENTS and ev.fill_qty > 0):
            res.count(f"{C_ORDER_OTHER}entry:{ev.event}")
            return res
        if needs_history(pos, ev):
            pos = _open(index, ev, hist or History(), p, res)
            pos.fill_keys = [_fill_key(ev)]
        else:
            assert pos is not None
            if not _new_fill(pos, ev):
                _ignore(res, pos, C_ORDER_DUP)
                return res
            _add_buy(pos, ev)
        res.touch(pos)
    elif pos is None or pos.closed:
        res.count(f"{C_ORDER_OTHER}{ev.kind}:{ev.event}:no_open_position")
        if ev.side == "sell" and ev.event in FILL_EVENTS and ev.fill_qty > 0 and (pos is None or ev.ts > pos.closed_ts):
            _alert(res, "exit_sell_without_position", f"{ev.symbol}: {ev.kind} order sold {ev.fill_qty} shares with no "
                   "open position (check for a short)", "critical", pos or ev.symbol, ev.ts, ev.trade_date,
                   text=f"{ev.client_order_id} {ev.reason}", dedup=["short", ev.event_id])
        return res
    elif ev.kind == "stop":
        _on_stop_event(index, pos, ev, p, res)
    else:  # exit (or any other sell)
        if ev.side == "sell" and ev.event in FILL_EVENTS and ev.fill_qty > 0:
            if not _new_fill(pos, ev):
                _ignore(res, pos, C_ORDER_DUP)
                return res
            _sell(index, pos, ev, p, res, kind=None)
        else:
            res.count(f"{C_ORDER_OTHER}{ev.kind}:{ev.event}")
        if pos.blocked.startswith(B_HELD) and ev.event in ("filled", "cancelled", "rejected") \
                and ev.reason_code != "STOP_RESTORED":  # restored: the restore's accepted event unblocks it
            pos.blocked = ""  # the other sell is done; the next snapshot blocks again if shares are still held
        res.touch(pos)
    if in_window(ev.ts, p.rules):
        if pos is not None and not pos.closed:
            sync(pos, ev.ts, ev.trade_date, p, res, "entry" if ev.kind == "entry" else "order_event")
        _cancel_orphans(index, ev.ts, ev.trade_date, p, res)
    return res


def _sell(index: ExitsIndex, pos: ExitPositionState, ev: OrderEvent, p: Params, res: Result, kind: str | None) -> None:
    q = min(int(ev.fill_qty), pos.qty)
    price = float(ev.fill_price or 0.0)
    pos.qty -= q
    pos.exit_qty += q
    pos.exit_notional += q * price
    pos.last_fill_ts = max(pos.last_fill_ts, ev.ts)
    if kind == "STOP_TRIGGERED":
        known = ev.client_order_id in pos.stop_client_order_ids
        _event(res, pos, "STOP_TRIGGERED", ev.ts, ev.trade_date, p, stop_price=float(ev.stop_price or 0.0),
               previous_stop=pos.desired_stop, source=pos.stop_source, ref_bar_ts=pos.stop_ref_ts,
               ref_low=pos.stop_ref_low, qty=q, exit_price=price, client_order_id=ev.client_order_id,
               reason="" if known else "a stop order this position did not send")
        if ev.client_order_id == pos.live_stop_client_order_id:
            pos.live_stop_qty = max(pos.live_stop_qty - q, 0)
            if pos.live_stop_qty == 0:  # the stop order is done
                pos.live_stop_client_order_id = ""
    if pos.qty <= 0:
        _close(index, pos, ev.ts, ev.trade_date, "stop" if kind else ev.kind, p, res)


def _on_stop_event(index: ExitsIndex, pos: ExitPositionState, ev: OrderEvent, p: Params, res: Result) -> None:
    coid = ev.client_order_id
    pend = pos.pending
    res.touch(pos)
    if ev.event in FILL_EVENTS and ev.fill_qty > 0:
        if not _new_fill(pos, ev):
            _ignore(res, pos, C_ORDER_DUP)
            return
        if pend is not None and pend.client_order_id == coid:  # filled as soon as placed
            _confirm(pos, ev)
        _sell(index, pos, ev, p, res, kind="STOP_TRIGGERED")
        return
    if pend is not None and pend.client_order_id == coid:
        if ev.event in ("accepted", "replaced"):
            _confirm(pos, ev)
        elif ev.event == "rejected":
            pos.pending, pos.last_reject = None, msgspec.structs.replace(pend, reason_code=ev.reason_code)
            pos.current_stop = pos.live_stop_price
            _event(res, pos, "STOP_REJECTED", ev.ts, ev.trade_date, p, stop_price=pend.price,
                   previous_stop=pos.live_stop_price, qty=pend.qty, reason=ev.reason, intent_id=pend.intent_id,
                   client_order_id=coid, source=pos.stop_source)
            if ev.reason_code == "STOP_BREACHED":  # the executor is selling the shares at market
                pos.blocked = f"{B_HELD}: stop breached, the executor sells at market"
            elif ev.reason_code == "INSUFFICIENT_QTY":
                _block(pos, f"{B_HELD}: the broker refused the stop (insufficient qty)", ev.ts, ev.trade_date, p, res)
            elif (ev.reason_code in ("TARGET_NOT_OPEN", "TARGET_UNKNOWN") and pend.target
                  and pend.target == pos.live_stop_client_order_id):
                if ev.reason_code == "TARGET_UNKNOWN":  # a stop the executor never made: it cannot change it
                    _block(pos, f"{B_FOREIGN}: {pend.target} is not an order of the executor", ev.ts, ev.trade_date,
                           p, res)
                else:  # the stop we meant to replace is gone (filled or cancelled): place a new one next time
                    pos.live_stop_client_order_id, pos.live_stop_price, pos.live_stop_qty = "", 0.0, 0
                    pos.current_stop, pos.last_reject = 0.0, None
            unprotected = not pos.live_stop_client_order_id and ev.reason_code != "STOP_BREACHED"
            _alert(res, "exit_stop_rejected", f"{pos.symbol}: stop {pend.action} {pend.qty}@{pend.price} rejected"
                   + (" (no live stop)" if unprotected else ""), "critical" if unprotected else "warning", pos, ev.ts,
                   ev.trade_date, text=ev.reason, dedup=["rejected", pend.intent_id])
        elif ev.event == "cancelled":  # cancelled before it was confirmed
            pos.pending = None
            pos.current_stop = pos.live_stop_price
        return
    if ev.event == "accepted" and ev.reason_code == "RESTORES" and not pos.live_stop_client_order_id:
        # the executor put back a stop it had cancelled for an exit that did not sell (flatten refused)
        pos.live_stop_client_order_id, pos.live_stop_price, pos.live_stop_qty = coid, float(ev.stop_price or 0.0), int(ev.qty)
        pos.current_stop = pos.live_stop_price
        if pos.blocked.startswith(B_HELD):
            pos.blocked = ""
        _event(res, pos, "STOP_SUBMITTED", ev.ts, ev.trade_date, p, stop_price=pos.live_stop_price, previous_stop=0.0,
               qty=int(ev.qty), reason=ev.reason, client_order_id=coid, source=pos.stop_source)
        return
    if (ev.event == "replaced" and ev.reason_code == "REPROTECT" and ev.replaces_client_order_id
            and ev.replaces_client_order_id in (pos.live_stop_client_order_id, pend.target if pend else "")):
        # the executor re-protected the position at the last accepted level after a refused new stop
        pos.live_stop_client_order_id, pos.live_stop_qty = coid, int(ev.qty)
        pos.live_stop_price = pos.current_stop = float(ev.stop_price or pos.live_stop_price)
        return
    if coid == pos.live_stop_client_order_id and ev.event == "cancelled":
        pos.live_stop_client_order_id, pos.live_stop_price, pos.live_stop_qty = "", 0.0, 0
        if pos.pending is None:
            pos.current_stop = 0.0
        if ev.reason_code == "EXIT_INTENT":  # an exit order sells the shares now: no new stop meanwhile
            pos.blocked = f"{B_HELD}: an exit order is selling the shares"
        else:
            _alert(res, "exit_stop_cancelled", f"{pos.symbol}: live stop cancelled outside the exits service",
                   "warning", pos, ev.ts, ev.trade_date, text=ev.reason, dedup=["cancelled", coid])
        return
    res.count(f"{C_ORDER_OTHER}stop:{ev.event}")


def _confirm(pos: ExitPositionState, ev: OrderEvent) -> None:
    pend = pos.pending
    price = float(ev.stop_price) if ev.stop_price is not None else (pend.price if pend else pos.current_stop)
    pos.live_stop_client_order_id, pos.live_stop_price, pos.live_stop_qty = ev.client_order_id, price, int(ev.qty)
    pos.current_stop = price
    pos.pending, pos.last_reject = None, None


def _block(pos: ExitPositionState, why: str, ts: int, trade_date: str, p: Params, res: Result) -> None:
    if pos.blocked == why:
        return
    pos.blocked = why
    _event(res, pos, "STOP_BLOCKED", ts, trade_date, p, stop_price=pos.desired_stop, previous_stop=pos.live_stop_price,
           qty=pos.qty, reason=why, source=pos.stop_source)
    _alert(res, "exit_stop_blocked", f"{pos.symbol}: stop cannot be sent", "warning", pos, ts, trade_date, text=why,
           dedup=["blocked", pos.position_id, why])
