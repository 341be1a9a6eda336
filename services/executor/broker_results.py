"""Broker results into the order lifecycle (pure): a submit's answer, an order's view at the broker
(status changes through ``lifecycle.transition``, fills de-duplicated by trade id, replaces), a rejection
(and the re-protection or market exit it calls for)."""

from __future__ import annotations

from shared.alerts import make_alert
from shared.ids import client_order_id, stable_id
from shared.schemas import Message, ReasonCode

from . import lifecycle
from .broker import OrderView
from .model import (
    DONE,
    LOOKUP,
    OPEN_LOCAL,
    RUNBOOK_PROTECTION,
    STOP_RESTORED,
    Ctx,
    ExecState,
    OrderRec,
    Out,
    Submit,
    order_event,
)
from .protection import _gap_closed, restore_stops


# -- broker results -----------------------------------------------------------
def on_submitted(st: ExecState, coid: str, view: OrderView, ctx: Ctx) -> Out:
    """The broker has the order (submit answered, or a lookup after a timeout/422 found it)."""
    rec = st.orders[coid]
    rec.broker_order_id = view.broker_order_id
    if rec.status in OPEN_LOCAL or rec.status == "blocked":
        rec.status = "accepted"
    return on_view(st, view, ctx)


def _announce(st: ExecState, rec: OrderRec, ctx: Ctx) -> list[Message]:
    """``accepted`` (or ``replaced`` for a replacement) once the order is live at the broker. A native
    replacement is announced only when the broker shows the old order ``replaced`` (Alpaca: the 200 on
    PATCH "does NOT guarantee the existing open order has been replaced"); until then the old stop is live."""
    if rec.announced or rec.status in LOOKUP or rec.status == "waiting" or rec.status in ("rejected", "cancelled",
                                                                                          "expired"):
        return []
    if rec.replaces:
        old = st.orders.get(rec.replaces)
        if old is not None and old.status not in ("replaced", "cancelled", "expired"):
            return []  # the old order is still live (or filled first: the replacement will be rejected)
        rec.announced = True
        _protected(st, rec)
        code: ReasonCode = "REPROTECT" if rec.reprotect else "REPLACES"
        why = f"replaces {rec.replaces}" + ("; re-protected at the last accepted level" if rec.reprotect else "")
        return [order_event(rec, "replaced", ctx, st.mode, reason=why, code=code)]
    rec.announced = True
    _protected(st, rec)
    if rec.restores:  # a stop put back after its exit did not sell: the gap ends here
        why = f"restores {rec.restores}; {_gap_closed(st, rec, ctx)}"
        return [order_event(rec, "accepted", ctx, st.mode, reason=why, code="RESTORES")]
    return [order_event(rec, "accepted", ctx, st.mode)]


def _protected(st: ExecState, rec: OrderRec) -> None:
    if rec.kind == "stop" and rec.side == "sell" and rec.stop_price is not None:
        st.protect[rec.symbol] = rec.stop_price


def on_broker_update(st: ExecState, view: OrderView, ctx: Ctx) -> Out:
    """The broker's current view of one order, however it arrived (poll, lookup, trade-update stream).

    A record still awaiting the broker's answer (``LOOKUP``) is announced (``accepted``/``replaced``)
    first; then fills and status changes (``lifecycle.transition``) become events. Idempotent: fills are
    de-duplicated by trade id and by the cumulative filled quantity, final states stay final, so the same
    view applied twice (by the stream and by a poll) publishes nothing the second time.
    """
    rec = st.orders.get(view.client_order_id)
    if rec is None:
        return Out()
    if rec.status in LOOKUP:
        return on_submitted(st, view.client_order_id, view, ctx)
    return on_view(st, view, ctx)


def on_rejected(st: ExecState, coid: str, reason: str, ctx: Ctx, code: ReasonCode = "BROKER_REJECTED") -> Out:
    rec = st.orders[coid]
    if rec.status in DONE:
        return Out()
    rec.status = "rejected"
    restore = restore_stops(st, rec)
    if restore.actions:
        reason, code = f"{reason}; {STOP_RESTORED}", "STOP_RESTORED"
    out = Out(events=[order_event(rec, "rejected", ctx, st.mode, reason=reason, code=code)]).extend(restore)
    out.events.extend(_restore_refused(rec, ctx, reason))
    return out


def breach_exit(st: ExecState, refused: OrderRec, ctx: Ctx) -> Out:
    """A sell stop that would be the only protection of its shares (a first stop, a re-protection, a repair)
    was refused as already through the market (Alpaca 422 "stop price must not be greater than base price /
    1.001"): the stop level is breached, so the shares are sold at market now (DESIGN: a breached stop means
    exit) instead of being left naked or re-sent. Empty when another live stop or exit holds the symbol's
    shares, for a restore (its exit was just refused: the critical alert stands) and for anything but a stop."""
    sym = refused.symbol
    if refused.kind != "stop" or refused.side != "sell" or refused.restores or refused.qty <= 0:
        return Out()
    others = [o for o in st.orders.values() if o.symbol == sym and o.side == "sell" and o.status not in DONE
              and o.client_order_id != refused.client_order_id and o.kind in ("stop", "exit")]
    if others:
        return Out()
    iid = stable_id("sb", refused.client_order_id)
    rec = OrderRec(client_order_id=client_order_id(iid), intent_id=iid, kind="exit", symbol=sym, side="sell",
                   qty=refused.qty, trade_date=refused.trade_date or ctx.trade_date)
    if rec.client_order_id in st.orders:
        return Out()
    st.orders[rec.client_order_id] = rec
    alert = make_alert("executor", "stop_breached",
                       f"{st.mode} {sym}: stop {refused.stop_price} refused, already through the market; selling "
                       f"{rec.qty} at market", severity="critical", trade_date=ctx.trade_date, ts=ctx.ts,
                       fields={"client_order_id": refused.client_order_id, "symbol": sym,
                               "exit_client_order_id": rec.client_order_id},
                       dedup=f"breach:{refused.client_order_id}", runbook=RUNBOOK_PROTECTION)
    return Out(events=[alert], actions=[Submit(rec.client_order_id)])


def _restore_refused(rec: OrderRec, ctx: Ctx, why: str) -> list[Message]:
    """A stop that was to restore protection after a refused exit was itself refused: a critical alert."""
    if not rec.restores:
        return []
    return [make_alert("executor", "restore_refused", f"{rec.symbol}: restoring its stop was refused; the position "
                       "has NO stop", severity="critical", text=why, trade_date=ctx.trade_date, ts=ctx.ts,
                       dedup=f"restore:{rec.client_order_id}", runbook="flatten")]


def impossible_alert(rec: OrderRec, exc: lifecycle.ImpossibleTransition, ctx: Ctx, mode: str) -> Message:
    return make_alert("executor", "order_transition_impossible",
                      f"{mode} {rec.kind} {rec.symbol} {rec.client_order_id}: {rec.status} -> broker {exc.broker}",
                      severity="critical", text=str(exc), trade_date=ctx.trade_date, ts=ctx.ts,
                      fields={"client_order_id": rec.client_order_id, "broker_status": exc.broker},
                      dedup=f"impossible:{rec.client_order_id}:{exc.record}:{exc.broker}", runbook=RUNBOOK_PROTECTION)


def on_view(st: ExecState, view: OrderView, ctx: Ctx) -> Out:
    """Events for what changed in the broker's view of an order: fills (always booked, never lost), then
    the status through the state machine (an impossible change: a critical alert, the record unchanged)."""
    rec = st.orders.get(view.client_order_id)
    out = Out()
    if rec is None:
        return out
    if not rec.broker_order_id:
        rec.broker_order_id = view.broker_order_id
    out.events.extend(_announce(st, rec, ctx))
    fills = list(view.fills)
    if not fills and view.filled_qty > rec.filled_qty and view.filled_avg_price is not None:
        # the broker reports cumulative fills only: synthesise one fill per increase
        prev = (rec.avg_fill_price or 0.0) * rec.filled_qty
        qty = view.filled_qty - rec.filled_qty
        price = round((view.filled_avg_price * view.filled_qty - prev) / qty, 4)
        fills = [_synthetic_fill(view, qty, price)]
    for f in fills:
        if f.trade_id in rec.trade_ids:
            continue
        rec.trade_ids.append(f.trade_id)
        prev = (rec.avg_fill_price or 0.0) * rec.filled_qty
        rec.filled_qty += f.qty
        rec.avg_fill_price = round((prev + f.qty * f.price) / rec.filled_qty, 4)
        rec.fees = round(rec.fees + f.fees, 2)
        event = "filled" if rec.filled_qty >= rec.qty else "partially_filled"
        if rec.status not in DONE:
            rec.status = event
        gap = _gap_closed(st, rec, ctx) if event == "filled" and rec.kind == "exit" and rec.gap_start else ""
        out.events.append(order_event(rec, event, ctx, st.mode, trade_id=f.trade_id, fill_qty=f.qty,
                                      fill_price=f.price, fees=f.fees, reason=gap))
    before = rec.status
    try:
        after = lifecycle.transition(before, view.status)
    except lifecycle.ImpossibleTransition as exc:
        out.events.append(impossible_alert(rec, exc, ctx, st.mode))
        return out
    if after == "filled" and rec.filled_qty < rec.qty:
        after = before  # the fill itself has not been seen yet (no cumulative quantity): wait for it
    rec.status = after
    if after == before:
        return out
    if after in DONE:
        rec.cancel_wanted = False
    if after in ("cancelled", "expired") and not rec.announced and rec.replaces:
        after = rec.status = "rejected"  # a replacement that never went live
    # an exit that ended without selling everything puts back the stops cancelled for it, at once
    restore = restore_stops(st, rec) if after in ("cancelled", "expired", "rejected") else Out()
    restored = f"; {STOP_RESTORED}" if restore.actions else ""
    if after in ("cancelled", "expired"):
        if not rec.silent_cancel:
            code: ReasonCode = (rec.cancel_code or ("EXPIRED" if after == "expired" else "BROKER_CANCELED"))  # type: ignore[assignment]
            if restored:
                code = "STOP_RESTORED"
            out.events.append(order_event(rec, "cancelled", ctx, st.mode, reason=(rec.cancel_reason or view.status) + restored,
                                          code=code))
        out.events.extend(_announce_replacements(st, rec, ctx))
    elif after == "rejected":
        old = st.orders.get(rec.replaces) if rec.replaces else None
        if old is not None and old.status == "filled":
            out.events.append(order_event(rec, "rejected", ctx, st.mode, code="FILLED_BEFORE_REPLACE",
                                          reason=f"replacement rejected: {old.client_order_id} filled first"))
        else:
            code = "STOP_RESTORED" if restored else ("REPLACE_REFUSED" if rec.replaces else "BROKER_REJECTED")
            out.events.append(order_event(rec, "rejected", ctx, st.mode, reason="rejected by broker" + restored,
                                          code=code))
            out.events.extend(_restore_refused(rec, ctx, "rejected by broker"))
    elif after == "replaced":
        rec.silent_cancel = True
        out.events.extend(_announce_replacements(st, rec, ctx))
    out.extend(restore)
    return out


def _announce_replacements(st: ExecState, old: OrderRec, ctx: Ctx) -> list[Message]:
    events: list[Message] = []
    for rec in sorted(st.orders.values(), key=lambda o: o.client_order_id):
        if rec.replaces == old.client_order_id and not rec.announced and rec.broker_order_id:
            events.extend(_announce(st, rec, ctx))
    return events


def _synthetic_fill(view: OrderView, qty: int, price: float):
    from .broker import Fill

    return Fill(trade_id=stable_id("tr", view.broker_order_id, view.filled_qty), qty=qty, price=price)


def mark_cancel_requested(st: ExecState, coid: str, *, silent: bool = False) -> None:
    rec = st.orders[coid]
    rec.silent_cancel = rec.silent_cancel or silent
    if rec.status not in DONE:
        rec.cancel_wanted = True
        if rec.status != "pending_replace":
            rec.status = "pending_cancel"


def reprotect_rec(st: ExecState, old: OrderRec, refused: OrderRec) -> OrderRec | None:
    """After cancel-and-new, the new stop was refused: a stop at the last accepted level (``old``'s), at
    once, for the shares ``old`` covered. None when there is no level to go back to."""
    level = old.stop_price if old.stop_price is not None else st.protect.get(old.symbol)
    qty = old.qty - old.filled_qty
    if level is None or qty <= 0:
        return None
    iid = stable_id("rp", refused.client_order_id)
    rec = OrderRec(client_order_id=client_order_id(iid), intent_id=refused.intent_id, kind="stop", symbol=old.symbol,
                   side="sell", qty=qty, order_type="stop", stop_price=level, trade_date=refused.trade_date,
                   replaces=old.client_order_id, reprotect=True)
    if rec.client_order_id in st.orders:
        return None
    st.orders[rec.client_order_id] = rec
    return rec
