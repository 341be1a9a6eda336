"""Reconciliation with a broker snapshot: exactly one live stop per open position for the held quantity
at the intended price; extra stops and stops of symbols not held become orphans to cancel."""

from __future__ import annotations

from shared.schemas import BrokerOrder, BrokerSnapshot, ExitPositionState
from shared.stops import SOURCE_BROKER, to_tick

from .model import (
    B_FOREIGN,
    B_HELD,
    C_RECON_BLOCKED,
    C_RECON_FOREIGN,
    C_RECON_LOST,
    C_RECON_OUTSIDE,
    C_RECON_PENDING,
    C_RECON_QTY,
    C_RECON_UNTRACKED,
    C_SNAPSHOT_STALE,
    C_SNAPSHOT_UNREC,
    EPS,
    KEEP_STOP_IDS,
    NOT_LIVE,
    STOP_TYPES,
    ExitsIndex,
    Params,
    Result,
    _alert,
    _event,
    in_window,
)
from .positions import _block, _close
from .stop_rules import _cancel_orphans, _orphan, _pending_open, _set_desired, sync


# -- reconciliation --------------------------------------------------------------------------
def _live_sells(snap: BrokerSnapshot) -> dict[str, list[BrokerOrder]]:
    out: dict[str, list[BrokerOrder]] = {}
    for o in snap.open_orders:
        if o.side == "sell" and o.status not in NOT_LIVE:
            out.setdefault(o.symbol, []).append(o)
    return out


def on_snapshot(index: ExitsIndex, positions: dict[str, ExitPositionState], snap: BrokerSnapshot, p: Params) -> Result:
    """Reconcile every open position's stop with the broker's (see the module docstring)."""
    res = Result()
    if snap.ts < index.last_snapshot_ts:
        res.count(C_SNAPSHOT_STALE)
        return res
    if snap.ts > index.last_snapshot_ts:
        index.last_snapshot_ts = snap.ts
        res.index_changed = True
    if not snap.reconciled:
        res.count(C_SNAPSHOT_UNREC)
        return res
    window = in_window(snap.ts, p.rules)
    held = {bp.symbol: bp.qty for bp in snap.positions if bp.qty}
    sells = _live_sells(snap)
    open_coids = {o.client_order_id for o in snap.open_orders if o.status not in NOT_LIVE}
    for sym in sorted(positions):
        pos = positions[sym]
        if not pos.closed:
            _reconcile(index, pos, snap, held.get(sym, 0), sells.get(sym, []), window, p, res)
    for sym in sorted(sells):
        pos = positions.get(sym)
        if pos is not None and not pos.closed:
            continue
        stops = [o for o in sells[sym] if o.order_type in STOP_TYPES]
        if not stops:
            continue
        if held.get(sym, 0) > 0:
            res.count(C_RECON_UNTRACKED)
            _alert(res, "exit_untracked_position", f"{sym}: the broker holds {held[sym]} shares the exits service "
                   "does not track", "warning", sym, snap.ts, snap.trade_date,
                   text="its stop orders are left alone", dedup=["untracked", sym, snap.trade_date])
            continue
        for o in stops:
            _orphan(index, o, pos.position_id if pos is not None else "", "stop for a symbol not held", res)
    for coid in [c for c in index.orphans if c not in open_coids]:
        del index.orphans[coid]  # the broker no longer holds it
        res.index_changed = True
    if window:
        _cancel_orphans(index, snap.ts, snap.trade_date, p, res)
    return res


def _reconcile(index: ExitsIndex, pos: ExitPositionState, snap: BrokerSnapshot, broker_qty: int,
               sells: list[BrokerOrder], window: bool, p: Params, res: Result) -> None:
    ts, d = snap.ts, snap.trade_date
    fresh = snap.ts >= pos.last_fill_ts
    if fresh and broker_qty == 0:
        res.touch(pos)
        for o in sells:
            if o.order_type in STOP_TYPES:
                _orphan(index, o, pos.position_id, "position closed (BROKER_FLAT)", res)
        _close(index, pos, ts, d, "BROKER_FLAT", p, res)
        _alert(res, "exit_broker_flat", f"{pos.symbol}: the broker holds no shares; position closed", "warning",
               pos, ts, d, dedup=["flat", pos.position_id])
        return
    if fresh and broker_qty != pos.qty:
        res.count(C_RECON_QTY)
        _alert(res, "exit_qty_mismatch", f"{pos.symbol}: broker holds {broker_qty}, exits had {pos.qty}", "warning",
               pos, ts, d, text="the stop follows the broker's quantity", dedup=["qty", pos.position_id, broker_qty])
        pos.qty = broker_qty
        res.touch(pos)
    if _pending_open(pos, ts, p, res):
        res.count(C_RECON_PENDING)
        return
    others = [o for o in sells if o.order_type not in STOP_TYPES]
    if others:
        res.count(C_RECON_BLOCKED)
        _block(pos, f"{B_HELD}: {others[0].client_order_id} ({others[0].order_type} {others[0].qty})", ts, d, p, res)
        res.touch(pos)
        return
    stops = sorted((o for o in sells if o.order_type in STOP_TYPES), key=lambda o: (-(o.stop_price or 0.0), o.client_order_id))
    if pos.blocked.startswith(B_FOREIGN) and any(o.client_order_id == pos.live_stop_client_order_id for o in stops):
        res.count(C_RECON_FOREIGN)
        return  # the broker's stop protects it; only someone at the broker can change it (alerted once)
    if pos.blocked:
        pos.blocked = ""
        res.touch(pos)
    mine = next((o for o in stops if o.client_order_id == pos.live_stop_client_order_id), None)
    if pos.live_stop_client_order_id and mine is None and fresh:
        res.count(C_RECON_LOST)
        pos.live_stop_client_order_id, pos.live_stop_price, pos.live_stop_qty = "", 0.0, 0
        pos.current_stop = 0.0
        res.touch(pos)
    if mine is None and stops and not pos.live_stop_client_order_id:
        mine = stops[0]  # adopt the broker's (highest) stop instead of stacking a second one
        pos.live_stop_client_order_id = mine.client_order_id
        res.touch(pos)
    if mine is not None:
        price = to_tick(float(mine.stop_price or 0.0))
        remaining = mine.qty - mine.filled_qty
        if (price, remaining) != (pos.live_stop_price, pos.live_stop_qty):
            pos.live_stop_price, pos.live_stop_qty = price, remaining
            res.touch(pos)
        pos.current_stop = pos.live_stop_price
        if price > pos.desired_stop + EPS:  # never lower a live stop: adopt it as the desired one
            prev = pos.desired_stop
            _set_desired(pos, price, SOURCE_BROKER, 0, 0.0, ts)
            _event(res, pos, "STOP_RATCHET", ts, d, p, stop_price=price, previous_stop=prev, source=SOURCE_BROKER,
                   qty=pos.qty, reason=f"the broker's stop {mine.client_order_id} is higher", client_order_id=mine.client_order_id)
        if mine.client_order_id not in pos.stop_client_order_ids:
            pos.stop_client_order_ids = [*pos.stop_client_order_ids[-(KEEP_STOP_IDS - 1):], mine.client_order_id]
    for o in stops:
        if o is not mine:
            _orphan(index, o, pos.position_id, f"a second stop for {pos.symbol}", res)
    if window:
        sync(pos, ts, d, p, res, "reconcile")
    elif pos.desired_stop > 0 and (pos.live_stop_price != pos.desired_stop or pos.live_stop_qty != pos.qty):
        res.count(C_RECON_OUTSIDE)
