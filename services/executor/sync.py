"""Following the external broker (a part of ``worker.Executor``): start-up reconciliation, applying the
trade-update stream, polling, periodic snapshots. Each is one unit of work without an entry to ack."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from shared.alerts import make_alert
from shared.bus import Emit
from shared.clock import ny_trade_date
from shared.schemas import Message

from . import core, ledger
from .alerts import RUNBOOK_RECONCILIATION
from .broker import (
    Broker,
    BrokerError,
)
from .core import DONE, Cancel, Ctx, ExecState, Out
from .settings import BrokerSettings

if TYPE_CHECKING:
    from shared.service import ServiceContext

    from .trade_stream import TradeUpdates

log = logging.getLogger("services.executor.worker")  # the executor's log, as before the split
TRIGGER_RECONCILE, TRIGGER_POLL, TRIGGER_STREAM = "broker:reconcile", "broker:poll", "broker:trade_update"


class BrokerSync:
    """Reconciles with, applies updates from and polls the external broker; the executor provides its
    state (``load``/``commit``/``unit``), the actions (``perform``) and the settings."""

    ctx: ServiceContext
    bs: BrokerSettings
    mode: str
    external: Broker | None
    updates: TradeUpdates | None
    ledger_dir: str
    max_gap_ns: int
    _journal: list[Message]
    _next_poll: float
    _next_snapshot: float

    def now_ctx(self) -> Ctx:
        now = self.ctx.clock.now_ns()
        return Ctx(ts=now, trade_date=ny_trade_date(now))

    def reconcile(self) -> bool:
        """Resolve every outbox record by client id, refresh open orders, flag unknown broker orders."""
        broker = self.external
        if broker is None:
            return True
        with self.unit(TRIGGER_RECONCILE):
            return self._reconcile(broker)

    def _reconcile(self, broker: Broker) -> bool:
        st = self.load()
        ctx = self.now_ctx()
        out = Out()
        try:
            self._resolve(st, broker, ctx, reconciling=True)
            known = {o.client_order_id for o in st.orders.values()}
            for v in broker.list_open():
                if v.client_order_id not in known:
                    out.events.append(make_alert(
                        "executor", "recon_mismatch",
                        f"broker order {v.client_order_id} ({v.symbol} {v.side} {v.qty}) is unknown to the executor",
                        severity="warning", trade_date=ctx.trade_date, ts=ctx.ts, dedup=f"recon:{v.broker_order_id}",
                        runbook=RUNBOOK_RECONCILIATION))
            want = ledger.expected_positions(self.ledger_dir, self.mode)
            have = {p.symbol: p.qty for p in broker.positions()}
            for sym in sorted(set(want) | set(have)):
                if want.get(sym, 0) != have.get(sym, 0):
                    out.events.append(make_alert(
                        "executor", "recon_mismatch",
                        f"position {sym}: broker holds {have.get(sym, 0)}, the ledger says {want.get(sym, 0)}",
                        severity="warning", trade_date=ctx.trade_date, ts=ctx.ts,
                        dedup=f"recon:pos:{sym}:{have.get(sym, 0)}:{want.get(sym, 0)}", runbook=RUNBOOK_RECONCILIATION))
            st.reconciled = True  # the broker is the truth: mismatches are reported, not blocking
            out.events.append(self.snapshot(st, ctx, "reconcile"))
        except BrokerError as exc:
            log.error("reconciliation failed (%s); entries are refused until it succeeds", exc)
            st.reconciled = False
            self.commit(st, [])  # whatever was resolved before the failure, with its events
            return False
        self.commit(st, out.events)
        return True

    def _resolve(self, st: ExecState, broker: Broker, ctx: Ctx, *, reconciling: bool = False) -> None:
        """Bring every unfinished record up to the broker's view: look up records without an answer
        (resending, re-gated, those the broker never got), refresh the others from ONE list of the open
        orders (a GET by id only for those that left it: the request count per poll does not grow with the
        number of open stops), re-send cancels still wanted. Events go to the journal at once, so a broker
        failure half-way loses none of them."""
        actions: list[core.Action] = []
        gates: core.Gates | None = None
        live = [c for c, o in st.orders.items() if o.status not in DONE and o.status not in core.LOOKUP
                and o.broker_order_id]
        open_views = {v.client_order_id: v for v in broker.list_open()} if live else {}
        for coid in sorted(st.orders):
            rec = st.orders[coid]
            if rec.status in core.LOOKUP:
                view = self._lookup(broker, coid)
                if view is not None:
                    step = core.on_submitted(st, coid, view, ctx)
                elif rec.status != "blocked":
                    gates = gates or self.gates()
                    step = core.resend_or_block(st, rec, gates, ctx, reconciling=reconciling)
                else:
                    continue
            elif rec.status not in DONE and rec.broker_order_id:
                view = open_views.get(coid)
                step = core.on_view(st, view if view is not None else broker.get(rec.broker_order_id), ctx)
                if rec.cancel_wanted and rec.status not in DONE and rec.status not in ("pending_cancel",
                                                                                      "pending_replace"):
                    step.actions.append(Cancel(coid))
            else:
                continue
            self._journal.extend(step.events)
            actions.extend(step.actions)
        self.perform(st, broker, Out(actions=actions), ctx)
        self.perform(st, broker, core.ready_waiting(st, ctx), ctx)

    def apply_updates(self) -> int:
        """Apply what the trade-update stream delivered (``core.on_broker_update``: the path polling
        takes), then submit what it unblocked; one commit. Returns the number of updates applied."""
        broker = self.external
        items = self.updates.drain() if self.updates is not None else []
        if broker is None or not items:
            return 0
        with self.unit(TRIGGER_STREAM):
            st = self.load()
            ctx = self.now_ctx()
            try:
                for ts, view in items:
                    ctx = Ctx(ts=ts, trade_date=ny_trade_date(ts))
                    self._journal.extend(core.on_broker_update(st, view, ctx).events)
                self.perform(st, broker, core.ready_waiting(st, ctx), ctx)
            except BrokerError as exc:
                log.warning("acting on trade updates failed: %s; the poll retries", exc)
            except Exception:  # a bug must not stop the worker: drop this batch, the poll re-derives it
                log.exception("trade updates could not be applied; polling instead")
                self._next_poll = 0.0
                return 0
            self.commit(st, [])
        return len(items)

    def idle(self) -> list[Emit]:
        """Between messages: flush the ledger queue; with an external broker, apply streamed trade
        updates, then poll every ``BROKER_POLL_S`` (``BROKER_POLL_STREAMING_S`` while the stream is
        connected; at once after it (re)connects or lost a message) and publish periodic snapshots."""
        self.flush_ledger()
        if self.external is None:
            return []
        self.apply_updates()
        now = time.monotonic()
        streaming = self.updates is not None and self.updates.connected
        if self.updates is not None and self.updates.take_resync():
            self._next_poll = 0.0  # events may have been missed while it was down
        if now < self._next_poll:
            return []
        self._next_poll = now + (self.bs.broker_poll_streaming_s if streaming else self.bs.broker_poll_s)
        st = self.load()
        if not st.reconciled:
            self._next_poll = now + self.bs.broker_poll_s  # retried at the fast pace until it succeeds
            self.reconcile()
            return []
        with self.unit(TRIGGER_POLL):
            ctx = self.now_ctx()
            out = Out()
            try:
                self._resolve(st, self.external, ctx)
                self.perform(st, self.external, core.overdue_exits(st, ctx, self.max_gap_ns), ctx)
                if now >= self._next_snapshot:
                    self._next_snapshot = now + self.bs.broker_snapshot_interval_s
                    out.events.append(self.snapshot(st, ctx, "periodic"))
            except BrokerError as exc:
                log.warning("poll failed: %s", exc)
            self.commit(st, out.events)
        return []
