"""The executor's broker actions (a part of ``worker.Executor``): submit, cancel, replace, and what
each broker answer turns into (``core.on_submitted``, ``on_view``, ``on_rejected``).

Every event goes to the unit of work's journal as it happens; a call that leaves the process is
preceded by the outbox write (``save_outbox``).
"""

from __future__ import annotations

import contextlib
import logging

from shared.alerts import make_alert
from shared.schemas import Message

from . import core
from .broker import (
    Broker,
    BrokerError,
    DuplicateClientOrderId,
    InsufficientQty,
    NotCancelable,
    NotFound,
    ReplaceForbidden,
    StopSide,
    UnknownOutcome,
)
from .core import DONE, OPEN_LOCAL, Cancel, CancelForeign, Ctx, ExecState, Out, Replace, Submit

log = logging.getLogger("services.executor.worker")  # the executor's log, as before the split


class BrokerActions:
    """Performs the core's actions on the broker; the executor provides the journal, the mode and the outbox."""

    mode: str
    _journal: list[Message]

    def save_outbox(self, st: ExecState) -> None:
        raise NotImplementedError

    def perform(self, st: ExecState, broker: Broker | None, out: Out, ctx: Ctx) -> Out:
        """Perform ``out.actions`` (then whatever they unblock). Every event (``out``'s and the
        actions') goes to the journal as it happens; returns an ``Out`` without events."""
        self._journal.extend(out.events)
        queue = list(out.actions)
        guard = 0
        while queue and broker is not None:
            guard += 1
            if guard > 1000:
                raise RuntimeError("action loop did not settle")
            a = queue.pop(0)
            if isinstance(a, Submit):
                step = self._submit(st, broker, a.client_order_id, ctx)
            elif isinstance(a, Cancel):
                step = self._cancel(st, broker, a.client_order_id, ctx)
            elif isinstance(a, Replace):
                step = self._replace(st, broker, a.old_client_order_id, a.new_client_order_id, ctx)
            elif isinstance(a, CancelForeign):
                step = Out()
                try:
                    broker.cancel(a.broker_order_id)
                    log.warning("cancelled broker order %s (unknown to the executor): protection repair", a.broker_order_id)
                except BrokerError as exc:
                    log.warning("cannot cancel %s: %s", a.broker_order_id, exc)
            else:  # pragma: no cover
                continue
            self._journal.extend(step.events)
            queue.extend(step.actions)
            if not queue:
                nxt = core.ready_waiting(st, ctx)
                self._journal.extend(nxt.events)
                queue.extend(nxt.actions)
        return Out()

    def _lookup(self, broker: Broker, coid: str):
        try:
            return broker.get_by_client_id(coid)
        except NotFound:
            return None

    def _submit(self, st: ExecState, broker: Broker, coid: str, ctx: Ctx) -> Out:
        rec = st.orders[coid]
        if rec.status not in OPEN_LOCAL:
            return Out()
        req = core.request_of(rec)
        if broker.external:
            self.save_outbox(st)
        try:
            try:
                view = broker.submit(req)
            except DuplicateClientOrderId:
                view = broker.get_by_client_id(coid)
            except UnknownOutcome as exc:
                log.warning("submit %s: unknown outcome (%s); looking it up", coid, exc.code)
                view = self._lookup(broker, coid)
                if view is None:  # never reached the broker: the same client id makes a resend safe
                    try:
                        view = broker.submit(req)
                    except DuplicateClientOrderId:
                        view = broker.get_by_client_id(coid)
        except UnknownOutcome:
            rec.status = "unknown"
            return Out()
        except InsufficientQty as exc:
            return self._held_by_others(st, broker, rec, exc, ctx)
        except BrokerError as exc:
            reprotect = self._reprotect(st, rec, ctx)
            # a lone stop through the market: sell now (STOP_BREACHED), never re-sent, never naked
            breach = core.breach_exit(st, rec, ctx) if isinstance(exc, StopSide) and not reprotect.actions else Out()
            code = "STOP_BREACHED" if breach.actions else exc.reason
            out = core.on_rejected(st, coid, f"{exc.code}: {exc.detail}", ctx, code)  # type: ignore[arg-type]
            return out.extend(reprotect).extend(breach)
        return core.on_submitted(st, coid, view, ctx)

    def _reprotect(self, st: ExecState, refused: core.OrderRec, ctx: Ctx) -> Out:
        """A new stop of cancel-and-new was refused after the old one was cancelled: protect the position
        again at once at the last accepted level (the old stop's), and alert."""
        old = st.orders.get(refused.replaces) if refused.kind == "stop" and refused.replaces else None
        if refused.reprotect:  # the re-protection itself was refused: not again at the same level (breach_exit)
            return Out()
        if old is None or old.status not in ("cancelled", "expired") or old.filled_qty >= old.qty:
            return Out()
        rec = core.reprotect_rec(st, old, refused)
        alert = make_alert("executor", "stop_reprotected",
                           f"{self.mode} {refused.symbol}: new stop {refused.stop_price} refused after the old one was "
                           f"cancelled; " + (f"re-protecting at {rec.stop_price}" if rec else "NO level to re-protect at"),
                           severity="critical", trade_date=ctx.trade_date, ts=ctx.ts,
                           fields={"client_order_id": refused.client_order_id, "symbol": refused.symbol},
                           dedup=f"reprotect:{refused.client_order_id}", runbook=core.RUNBOOK_PROTECTION)
        return Out(events=[alert], actions=[Submit(rec.client_order_id)] if rec else [])

    def _held_by_others(self, st: ExecState, broker: Broker, rec: core.OrderRec, exc: InsufficientQty, ctx: Ctx) -> Out:
        """403 insufficient qty on a sell: for an exit, cancel whatever holds the shares and retry."""
        related = list(exc.related)
        if rec.kind == "exit" and rec.attempts < 1 and not related:
            # ``related_orders`` is optional in Alpaca's body (alpaca-py's recorded payload has none):
            # the symbol's open sell orders are what holds the shares
            try:
                related = [v.broker_order_id for v in broker.list_open(rec.symbol)
                           if v.side == "sell" and v.symbol == rec.symbol and v.client_order_id != rec.client_order_id]
            except BrokerError as e2:
                log.warning("cannot list the orders holding %s: %s", rec.symbol, e2)
        if rec.kind != "exit" or rec.attempts >= 1 or not related:
            return core.on_rejected(st, rec.client_order_id, f"{exc.code}: {exc.detail}", ctx, "INSUFFICIENT_QTY")
        rec.attempts += 1
        out = Out()
        by_broker_id = {o.broker_order_id: o for o in st.orders.values() if o.broker_order_id}
        for bid in sorted(related):
            known = by_broker_id.get(bid)
            if known is not None and known.status not in DONE:
                known.cancel_reason, known.cancel_code = f"exit_intent={rec.intent_id}", "EXIT_INTENT"
                rec.waiting_on.append(known.client_order_id)
                out.actions.append(Cancel(known.client_order_id))
            elif known is None:
                try:
                    broker.cancel(bid)
                    log.warning("cancelled order %s (unknown to the executor) holding %s shares", bid, rec.symbol)
                except BrokerError as e2:
                    log.warning("cannot cancel %s: %s", bid, e2)
        if rec.waiting_on:
            rec.status = "waiting"
        else:
            rec.status = "new"
            out.actions.append(Submit(rec.client_order_id))
        return out

    def _cancel(self, st: ExecState, broker: Broker, coid: str, ctx: Ctx) -> Out:
        rec = st.orders[coid]
        if rec.status in DONE:
            return Out()
        if rec.status in OPEN_LOCAL and not rec.broker_order_id:
            view = self._lookup(broker, coid) if broker.external else None
            if view is None:
                rec.status = "cancelled"
                if rec.silent_cancel:
                    return Out()
                return Out(events=[core.order_event(rec, "cancelled", ctx, st.mode, code="CANCELLED_BEFORE_SUBMIT",
                                                    reason=rec.cancel_reason or "cancelled before submit")])
            rec.broker_order_id = view.broker_order_id
        core.mark_cancel_requested(st, coid)
        try:
            broker.cancel(rec.broker_order_id)
        except (NotCancelable, NotFound) as exc:
            # final already, or changing (Alpaca: pending_replace "will reject cancel request"): the order's
            # view decides; a cancel still wanted is sent again by the poll
            log.info("cancel %s refused (%s); reading the order", coid, exc.code)
        except BrokerError as exc:
            log.warning("cancel %s: %s; the poll retries", coid, exc.code)
        try:
            view = broker.get(rec.broker_order_id)
        except BrokerError:
            return Out()
        return core.on_view(st, view, ctx)

    def _replace(self, st: ExecState, broker: Broker, old: str, new: str, ctx: Ctx) -> Out:
        """Native replace (PATCH). A 200 does not replace anything yet (Alpaca: "does NOT guarantee the
        existing open order has been replaced"): the old stop stays live (``pending_replace``) until the
        broker shows it ``replaced``; the replacement is announced then. If the old one fills first, its
        fill is booked and the replacement ends ``rejected`` (FILLED_BEFORE_REPLACE). A refused PATCH keeps
        the old stop (only a status refusal turns into cancel-and-new)."""
        old_rec, new_rec = st.orders[old], st.orders[new]
        if new_rec.status not in OPEN_LOCAL:
            return Out()
        if not old_rec.broker_order_id or old_rec.status in ("new", "unknown"):
            return self._cancel_and_new(st, old_rec, new_rec)
        if old_rec.status in DONE:
            return core.on_rejected(st, new, f"TARGET_NOT_OPEN: {old} is {old_rec.status}", ctx, "TARGET_NOT_OPEN")
        if broker.external:
            self.save_outbox(st)
        try:
            try:
                view = broker.replace(old_rec.broker_order_id, qty=new_rec.qty, stop_price=new_rec.stop_price,
                                      limit_price=None, new_client_order_id=new)
            except (DuplicateClientOrderId, UnknownOutcome):
                view = self._lookup(broker, new)
                if view is None:
                    new_rec.status = "unknown"
                    return Out()
        except ReplaceForbidden:
            return self._cancel_and_new(st, old_rec, new_rec)
        except BrokerError as exc:
            code = "REPLACE_REFUSED" if exc.reason == "BROKER_REJECTED" else exc.reason
            out = core.on_rejected(st, new, f"{exc.code}: {exc.detail}", ctx, code)  # type: ignore[arg-type]
            with contextlib.suppress(BrokerError):
                out.extend(core.on_view(st, broker.get(old_rec.broker_order_id), ctx))
            return out
        if old_rec.status not in DONE:
            old_rec.status = "pending_replace"
        out = core.on_submitted(st, new, view, ctx)
        with contextlib.suppress(BrokerError):  # where the old order is now (the poll and the stream follow up)
            out.extend(core.on_view(st, broker.get(old_rec.broker_order_id), ctx))
        return out

    def _cancel_and_new(self, st: ExecState, old_rec: core.OrderRec, new_rec: core.OrderRec) -> Out:
        old_rec.silent_cancel = True
        old_rec.cancel_reason = f"replaced_by={new_rec.client_order_id}"
        new_rec.status = "waiting"
        new_rec.waiting_on = [old_rec.client_order_id]
        return Out(actions=[Cancel(old_rec.client_order_id)])
