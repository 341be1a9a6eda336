"""Protection (pure): every held share covered by exactly one live stop (``coverage``, ``repair_protection``),
and the stops an exit cancelled put back when the exit does not sell (``restore_stops``, ``overdue_exits``),
plus the exit intents of a flatten request."""

from __future__ import annotations

import msgspec

from shared.alerts import make_alert
from shared.ids import client_order_id, stable_id
from shared.schemas import BrokerOrder, BrokerSnapshot, ExitIntent

from .model import (
    DONE,
    LOOKUP,
    RUNBOOK_PROTECTION,
    Cancel,
    CancelForeign,
    Ctx,
    ExecState,
    OrderRec,
    Out,
    Submit,
)


# -- protection ------------------------------------------------------------------------
class Gap(msgspec.Struct, frozen=True, kw_only=True):
    """A symbol whose live sell stops at the broker do not cover its position exactly."""

    symbol: str
    position_qty: int
    stop_qty: int
    stops: list[str] = []  # broker ids of the open sell stops, oldest client id first


STOP_TYPES = ("stop", "stop_limit", "trailing_stop")


def coverage(snap: BrokerSnapshot) -> list[Gap]:
    """Every symbol (held, or with open sell stops) whose open sell stops' remaining quantity differs from
    the position: under-covered (a share without a stop) or over-covered (a stop that would open a short)."""
    held = {p.symbol: p.qty for p in snap.positions}
    stops: dict[str, list[BrokerOrder]] = {}
    for o in snap.open_orders:
        if o.side == "sell" and o.order_type in STOP_TYPES:
            stops.setdefault(o.symbol, []).append(o)
    gaps = []
    for sym in sorted(set(held) | set(stops)):
        mine = sorted(stops.get(sym, []), key=lambda o: o.client_order_id)
        covered = sum(o.qty - o.filled_qty for o in mine)
        if covered != held.get(sym, 0):
            gaps.append(Gap(symbol=sym, position_qty=held.get(sym, 0), stop_qty=covered,
                            stops=[o.broker_order_id for o in mine]))
    return gaps


def in_flight(st: ExecState, symbol: str) -> bool:
    """Some order of the symbol is changing (outbox, waiting, pending replace/cancel, an unannounced
    replacement, an exit under way): coverage is checked again at the next snapshot."""
    for o in st.orders.values():
        if o.symbol != symbol or o.status in DONE:
            continue
        if o.status in (*LOOKUP, "waiting", "pending_cancel", "pending_replace") or o.kind == "exit" or not o.announced:
            return True
    return False


def repair_protection(st: ExecState, snap: BrokerSnapshot, ctx: Ctx) -> Out:
    """At a broker snapshot: each gap of a symbol the executor protected before (``st.protect``) and not
    in flight raises a critical ``protection_mismatch`` alert and is repaired: excess stops cancelled
    (orders unknown to the executor first, then the oldest), missing shares covered by a stop at the last
    accepted level. A symbol with neither position nor stop is forgotten."""
    out = Out()
    gaps = {g.symbol: g for g in coverage(snap)}
    held = {p.symbol for p in snap.positions if p.qty}
    for sym in [s for s in st.protect if s not in held and s not in gaps and not in_flight(st, s)]:
        del st.protect[sym]
    by_broker = {o.broker_order_id: o for o in st.orders.values() if o.broker_order_id}
    for sym, g in sorted(gaps.items()):
        if sym not in st.protect or in_flight(st, sym):
            continue
        out.events.append(make_alert(
            "executor", "protection_mismatch",
            f"{st.mode} {sym}: position {g.position_qty}, live sell stops {g.stop_qty}: repairing",
            severity="critical", trade_date=ctx.trade_date, ts=ctx.ts,
            fields={"symbol": sym, "position_qty": str(g.position_qty), "stop_qty": str(g.stop_qty)},
            dedup=f"protection:{sym}:{g.position_qty}:{g.stop_qty}:{ctx.ts}", runbook=RUNBOOK_PROTECTION))
        if g.stop_qty > g.position_qty:
            excess = g.stop_qty - g.position_qty
            remaining = {o.broker_order_id: o.qty - o.filled_qty for o in snap.open_orders if o.symbol == sym}
            order = sorted(g.stops, key=lambda b: (b in by_broker, by_broker[b].client_order_id if b in by_broker else b))
            for bid in order:
                if excess <= 0:
                    break
                excess -= remaining.get(bid, 0)
                rec = by_broker.get(bid)
                if rec is None:
                    out.actions.append(CancelForeign(bid))
                else:
                    rec.cancel_reason, rec.cancel_code = "protection repair: over-covered", "PROTECTION_REPAIR"
                    out.actions.append(Cancel(rec.client_order_id))
            if excess < 0:  # cancelling whole orders uncovered some shares: the next snapshot re-covers them
                continue
        else:
            last = sorted((o for o in st.orders.values() if o.symbol == sym and o.kind == "stop" and o.announced),
                          key=lambda o: o.client_order_id)
            iid = stable_id("pr", sym, ctx.ts, g.position_qty, g.stop_qty)
            rec = OrderRec(client_order_id=client_order_id(iid), intent_id=iid, kind="stop", symbol=sym, side="sell",
                           qty=g.position_qty - g.stop_qty, order_type="stop", stop_price=st.protect[sym],
                           trade_date=ctx.trade_date, reprotect=True,
                           replaces=last[-1].client_order_id if last and last[-1].status in DONE else "")
            if rec.client_order_id not in st.orders:
                st.orders[rec.client_order_id] = rec
                out.actions.append(Submit(rec.client_order_id))
    return out


# -- flatten and restore ----------------------------------------------------------------
def restore_stops(st: ExecState, exit_rec: OrderRec) -> Out:
    """An exit that ended without selling everything (refused, cancelled, expired): put back at once each
    stop that was cancelled for it, for the shares still held (its quantity less what the exit sold)."""
    if exit_rec.kind != "exit" or not exit_rec.protects or exit_rec.filled_qty >= exit_rec.qty:
        return Out()
    out = Out()
    left = exit_rec.qty - exit_rec.filled_qty
    for old_id in exit_rec.protects:
        old = st.orders.get(old_id)
        if old is None or old.status != "cancelled" or left <= 0:
            continue  # a stop that filled (or is still live) needs no restore
        qty = min(old.qty - old.filled_qty, left)
        left -= qty
        iid = stable_id("rs", old.client_order_id, exit_rec.client_order_id)
        rec = OrderRec(client_order_id=client_order_id(iid), intent_id=iid, kind="stop", symbol=old.symbol, side="sell",
                       qty=qty, order_type="stop", stop_price=old.stop_price, trade_date=old.trade_date,
                       restores=old.client_order_id)
        if rec.client_order_id in st.orders:
            continue
        st.orders[rec.client_order_id] = rec
        out.actions.append(Submit(rec.client_order_id))
    exit_rec.protects = []
    return out


def _gap_closed(st: ExecState, rec: OrderRec, ctx: Ctx) -> str:
    """The unprotected gap of an exit, measured from its stops' confirmed cancel to its fill or to the
    restore of its stop (``rec``: the exit, or the restore), as the event's reason says it."""
    exit_rec = rec
    if rec.kind == "stop":  # a restore: the gap of the exit it follows
        exit_rec = next((o for o in st.orders.values() if o.kind == "exit" and o.gap_start
                         and rec.intent_id == stable_id("rs", rec.restores, o.client_order_id)), rec)
    if not exit_rec.gap_start:
        return "unprotected gap not measured"
    gap_ms = max(ctx.ts - exit_rec.gap_start, 0) // 1_000_000
    exit_rec.gap_start = 0
    return f"unprotected {gap_ms} ms since the stop's confirmed cancel"


def overdue_exits(st: ExecState, ctx: Ctx, max_gap_ns: int) -> Out:
    """Bound the unprotected gap: an exit sent after its stops were cancelled and still unfilled
    ``max_gap_ns`` of open market later (event time; the gap counts from the session's OPEN for an
    exit sent outside it) is cancelled; its cancel restores the stops (``on_view``)."""
    d = ctx.trade_date
    if f"{d}:OPEN" not in st.sessions or f"{d}:CLOSE" in st.sessions:
        return Out()  # the market is closed: nothing can fill, neither the exit nor the stop
    out = Out()
    for rec in sorted(st.orders.values(), key=lambda o: o.client_order_id):
        if rec.kind == "exit" and rec.gap_start and rec.status in ("accepted", "partially_filled"):
            start = max(rec.gap_start, st.session_open.get(d, rec.gap_start))
            if ctx.ts - start > max_gap_ns:
                rec.cancel_reason = f"unprotected for more than {max_gap_ns // 1_000_000_000} s: exit cancelled"
                out.actions.append(Cancel(rec.client_order_id))
    return out


def flatten_intents(req_id: str, symbols: list[str], all_positions: bool, held: dict[str, int], trade_date: str,
                    reason: str, ts: int) -> tuple[list[ExitIntent], list[str]]:
    """The exits of a flatten request: one per named (or, for ALL, every) held symbol; and the named
    symbols that are not held."""
    want = sorted(held) if all_positions else sorted(set(symbols))
    intents = [ExitIntent(intent_id=stable_id("fx", req_id, sym), symbol=sym, trade_date=trade_date, qty=held[sym],
                          reason=f"flatten {req_id}: {reason}", ts=ts)
               for sym in want if held.get(sym, 0) > 0]
    return intents, [s for s in want if held.get(s, 0) <= 0]
