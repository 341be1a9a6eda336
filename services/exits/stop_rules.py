"""The stop rules of one position (bars into the tracker, the ratchet that only rises) and the sending
of its stop (one intent at a time, inside the window, never lower), plus the cancels of orphan stops."""

from __future__ import annotations

from shared.clock import NS
from shared.ids import client_order_id, stable_id
from shared.schemas import BarRow, BrokerOrder, ExitEvent, ExitPositionState, PendingStop, StopIntent
from shared.stops import had_minutes_on, ny_date, track_daily, track_minute, tracker_candidate

from .model import (
    C_BAR_DUP,
    C_BAR_STALE,
    C_HALTED,
    C_REJECT_WAIT,
    C_STOP_SIDE_WAIT,
    C_TIMEOUT,
    C_TRIGGER,
    EPS,
    KEEP_STOP_IDS,
    STOP_SIDE_MARGIN,
    ExitsIndex,
    Orphan,
    Params,
    Result,
    _event,
    _ignore,
)


def _set_desired(pos: ExitPositionState, stop: float, source: str, ref_ts: int, ref_low: float, ts: int) -> None:
    pos.desired_stop, pos.stop_source, pos.stop_ref_ts, pos.stop_ref_low, pos.stop_ts = stop, source, ref_ts, ref_low, ts


def _ratchet(pos: ExitPositionState, ts: int, close: float, trade_date: str, p: Params, res: Result) -> None:
    c = tracker_candidate(pos.tracker, p.rules)
    if c is None or c.stop <= pos.desired_stop + EPS or c.stop >= close:
        return
    prev = pos.desired_stop
    _set_desired(pos, c.stop, c.source, c.ref_ts, c.ref_low, ts)
    _event(res, pos, "STOP_RATCHET", ts, trade_date, p, stop_price=c.stop, previous_stop=prev, source=c.source,
           ref_bar_ts=c.ref_ts, ref_low=c.ref_low, qty=pos.qty)


def _reaches_stop(pos: ExitPositionState, bar: BarRow, res: Result) -> bool:
    if pos.current_stop > 0 and bar.low <= pos.current_stop:
        res.count(C_TRIGGER)
        return True
    return False


def _take(pos: ExitPositionState, bar: BarRow, minute: bool, trade_date: str, p: Params, res: Result) -> None:
    """One bar of a held symbol: into the tracker, then (unless it reaches the stop) the ratchet."""
    tr = pos.tracker
    took = track_minute(tr, bar, p.rules) if minute else track_daily(tr, bar, p.rules)
    if not took:
        _ignore(res, pos, C_BAR_DUP if bar.ts == (tr.last_minute_ts if minute else tr.last_daily_ts) else C_BAR_STALE)
        return
    pos.last_bar_ts = max(pos.last_bar_ts, bar.ts)
    pos.last_close = bar.close
    if not minute and had_minutes_on(tr, ny_date(bar.ts)):
        return  # the session's minutes drove the stop; its daily bar is history for the fallback
    if not _reaches_stop(pos, bar, res):
        _ratchet(pos, bar.ts, bar.close, trade_date, p, res)


# -- sending -------------------------------------------------------------------------------
def _send(pos: ExitPositionState, action: str, price: float, qty: int, ts: int, trade_date: str, p: Params,
          res: Result, why: str, target: str = "") -> None:
    pos.seq += 1
    iid = stable_id("xs", pos.position_id, action, price, qty, pos.seq)
    coid = client_order_id(iid)
    res.intents.append(StopIntent(intent_id=iid, symbol=pos.symbol, trade_date=trade_date, action=action, qty=qty,
                                  stop_price=price, target_client_order_id=target, reason=why, ts=ts))
    pos.pending = PendingStop(intent_id=iid, client_order_id=coid, action=action, price=price, qty=qty, ts=ts,
                              target=target)
    prev = pos.live_stop_price
    pos.current_stop = price
    pos.stop_client_order_ids = [*pos.stop_client_order_ids[-(KEEP_STOP_IDS - 1):], coid]
    kind = "STOP_SUBMITTED" if action == "place" else "STOP_REPLACED"
    _event(res, pos, kind, ts, trade_date, p, stop_price=price, previous_stop=prev, source=pos.stop_source,
           ref_bar_ts=pos.stop_ref_ts, ref_low=pos.stop_ref_low, qty=qty, reason=why, intent_id=iid,
           client_order_id=coid)


def _pending_open(pos: ExitPositionState, ts: int, p: Params, res: Result) -> bool:
    """True while an intent waits for its answer; a timed-out one is forgotten (and may be re-sent)."""
    if pos.pending is None:
        return False
    if ts - pos.pending.ts < p.intent_timeout_s * NS:
        return True
    res.count(C_TIMEOUT)
    pos.pending = None
    pos.current_stop = pos.live_stop_price
    res.touch(pos)
    return False


def sync(pos: ExitPositionState, ts: int, trade_date: str, p: Params, res: Result, why: str) -> None:
    """Inside the window: make the broker's stop the intended one (one intent at a time; never lower)."""
    if pos.closed or pos.qty <= 0 or pos.blocked or pos.desired_stop <= 0:
        return
    if _pending_open(pos, ts, p, res):
        return
    live = pos.live_stop_client_order_id
    price = max(pos.desired_stop, pos.live_stop_price if live else 0.0)
    if live and abs(pos.live_stop_price - price) < EPS and pos.live_stop_qty == pos.qty:
        return
    action = "replace" if live else "place"
    if p.halted and live:
        res.count(C_HALTED)
        return
    rj = pos.last_reject
    if rj is not None and rj.action == action and abs(rj.price - price) < EPS and rj.qty == pos.qty \
            and ts - rj.ts < p.intent_timeout_s * NS:
        res.count(C_REJECT_WAIT)
        return
    if rj is not None and rj.reason_code == "STOP_SIDE" and action == "replace" and price >= rj.price - EPS \
            and not (pos.last_bar_ts > rj.ts and price * STOP_SIDE_MARGIN <= pos.last_close):
        res.count(C_STOP_SIDE_WAIT)  # the old stop stays live; the ratchet waits for a bar that closes above it
        return
    if live and pos.live_stop_qty != pos.qty and abs(pos.live_stop_price - price) < EPS:
        why = f"{why}: qty {pos.live_stop_qty}->{pos.qty}"
    res.touch(pos)
    _send(pos, action, price, pos.qty, ts, trade_date, p, res, why, target=live)


def _cancel_orphans(index: ExitsIndex, ts: int, trade_date: str, p: Params, res: Result) -> None:
    for coid in sorted(index.orphans):
        o = index.orphans[coid]
        if o.sent:
            continue
        iid = stable_id("xs", "cancel", coid)
        res.intents.append(StopIntent(intent_id=iid, symbol=o.symbol, trade_date=trade_date, action="cancel",
                                      target_client_order_id=coid, reason=o.reason, ts=ts))
        res.events.append(ExitEvent(event_id=stable_id("xe", "cancel", coid), kind="STOP_CANCELLED", symbol=o.symbol,
                                    position_id=o.position_id, trade_date=trade_date, ts=ts, reason=o.reason,
                                    intent_id=iid, client_order_id=coid, buffer=p.rules.buffer))
        o.sent = True
        res.index_changed = True


def _orphan(index: ExitsIndex, o: BrokerOrder | tuple[str, str], position_id: str, reason: str, res: Result) -> None:
    symbol, coid = (o.symbol, o.client_order_id) if isinstance(o, BrokerOrder) else o
    if coid and coid not in index.orphans:
        index.orphans[coid] = Orphan(symbol=symbol, client_order_id=coid, position_id=position_id, reason=reason)
        res.index_changed = True
