"""Executor worker: the only broker gateway (the shell around ``core``).

Consumes ``avwap:intents``, ``avwap:clock``, ``avwap:bars:1m`` and ``avwap:bars:1d``. For each
message it loads ``ExecState`` from Redis, runs the core, performs the order actions through the
broker adapter, and commits state + events (orders, rejections, snapshots, alerts) + ledger
queue + the message's XACK in one unit of work (``Executor.unit``: one commit script). With the simulator (state in that same blob) a
SIGKILL at any point redelivers the message against the old state: same events, no duplicate.
With an external broker the outbox (the order record) is committed BEFORE the submit, and
start-up reconciliation and the idle poll resolve every record by ``client_order_id``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import msgspec
import redis
from pydantic import ValidationError

from shared import metrics
from shared.alerts import make_alert
from shared.bus import Committed, Delivery, Emit, UnitOfWork
from shared.clock import calendar, ny_trade_date
from shared.controls import read_state
from shared.crash import crash_point
from shared.live_token import read_token_file
from shared.logs import setup_logging
from shared.schemas import (
    Alert,
    BarBatch,
    EntryIntent,
    ExitIntent,
    FlattenRequest,
    Message,
    OrderEvent,
    Rejection,
    SessionEvent,
    StopIntent,
)
from shared.service import (
    ServiceContext,
    ServiceSpec,
    Worker,
    idle_invalid_settings,
    refuse_and_idle,
    run_service,
)
from shared.settings import SECTIONS, Settings, get_settings
from shared.streams import (
    ALERTS,
    BARS_1D,
    BARS_1M,
    BROKER,
    CLOCK,
    CONTROL,
    INTENTS,
    ORDERS,
    REJECTIONS,
    state_key,
)

from . import core, ledger
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
from .modes import live_gate_check, start_check
from .settings import BrokerSettings
from .simulator import SimCosts, SimState, Simulator

if TYPE_CHECKING:  # imported for real only in ALPACA modes (make_updates)
    from .trade_stream import TradeUpdates

log = logging.getLogger(__name__)
GROUP = "executor"
# docs/runbook.md anchors the executor's alerts point at (a test checks each one exists)
RUNBOOK_REFUSED = "executor-refusing-to-start"
RUNBOOK_RECONCILIATION = "executor-start-up-reconciliation"
RUNBOOK_BLOCKED = "executor-entries-blocked-at-submit-time"
RUNBOOK_REJECTED = "executor-rejected-orders"


def stream_for(msg: Message) -> str:
    if isinstance(msg, OrderEvent):
        return ORDERS
    if isinstance(msg, Rejection):
        return REJECTIONS
    if isinstance(msg, Alert):
        return ALERTS
    return BROKER


ORDER_ALERTS = {  # order event -> (alert kind, severity, runbook anchor)
    "accepted": ("order_submitted", "info", ""), "replaced": ("order_submitted", "info", ""),
    "filled": ("order_filled", "info", ""), "partially_filled": ("order_filled", "info", ""),
    "rejected": ("order_rejected", "warning", RUNBOOK_REJECTED), "cancelled": ("order_cancelled", "info", ""),
}


def alerts_for(events: list[Message]) -> list[Alert]:
    """One alert per execution decision: submitted, filled, rejected, cancelled, blocked (an entry's
    Rejection). The alert id is a stable hash of the decision's id, so a re-derived decision (a
    redelivery, a restart) raises the same alert and the notifier sends it once."""
    out = []
    for e in events:
        if isinstance(e, OrderEvent):
            kind, sev, runbook = ORDER_ALERTS[e.event]
            title = f"{e.mode} {e.kind} {e.side} {e.qty} {e.symbol}: {e.event}"
            if e.fill_price is not None:
                title += f" {e.fill_qty}@{e.fill_price}"
            out.append(make_alert("executor", kind, title, severity=sev, text=e.reason, trade_date=e.trade_date,
                                  ts=e.ts, fields={"client_order_id": e.client_order_id, "intent_id": e.intent_id},
                                  dedup=e.event_id, runbook=runbook))
        elif isinstance(e, Rejection):
            routine = e.reasons == [core.R_NOT_CONFIRMED]  # the entry level was simply never confirmed
            out.append(make_alert("executor", "entry_blocked", f"entry {e.symbol} blocked: {', '.join(e.reasons)}",
                                  severity="info" if routine else "warning", text=e.detail, trade_date=e.trade_date,
                                  ts=e.ts, fields={"intent_id": e.intent_id}, dedup=e.rejection_id,
                                  runbook="" if routine else RUNBOOK_BLOCKED))
    return out


TRIGGER_RECONCILE, TRIGGER_POLL, TRIGGER_STREAM = "broker:reconcile", "broker:poll", "broker:trade_update"


def trigger_of(msg: Message) -> str:
    """The stable id of a handled message (ledger provenance ``input:trigger``)."""
    if isinstance(msg, SessionEvent):
        return f"session:{msg.trade_date}:{msg.phase}"
    if isinstance(msg, BarBatch):
        return core.batch_id(msg)
    if isinstance(msg, FlattenRequest):
        return msg.request_id
    return msg.intent_id  # type: ignore[union-attr]


class Executor(Worker):
    """The executor shell over one Redis and one broker adapter (None: DRY_RUN / PAPER_SIM)."""

    def __init__(self, ctx: ServiceContext, bs: BrokerSettings, broker: Broker | None = None,
                 updates: TradeUpdates | None = None) -> None:
        self.ctx = ctx
        self.r: redis.Redis = ctx.r
        self.bs = bs
        self.mode = ctx.settings.core.execution_mode
        self.params = core.Params(mode=self.mode, confirm_start=bs.entry_confirm_start,
                                  confirm_end=bs.entry_confirm_end, confirm_minutes=bs.entry_confirm_minutes)
        self.key = state_key("executor", self.mode, "state")
        self.ledger_key = state_key("executor", self.mode, "ledger")
        self.ledger_dir = ctx.settings.core.ledger_dir
        self.external = broker
        self.costs = SimCosts(slippage_bps=bs.sim_slippage_bps, commission_per_share=bs.sim_commission_per_share,
                              commission_per_order=bs.sim_commission_per_order, sell_fee_bps=bs.sim_sell_fee_bps,
                              max_volume_pct=bs.sim_max_volume_pct)
        self.starting_cash = bs.sim_starting_cash if bs.sim_starting_cash is not None else ctx.settings.analytics.starting_capital
        self._next_poll = 0.0
        self._next_snapshot = 0.0
        self.maxlen = ctx.settings.core.bus_maxlen
        self.updates = updates
        self.settings_hash = ctx.settings.hash()
        self.broker_settings_hash = bs.hash()
        self.run_id = ctx.settings.resolved_run_id()
        self.max_gap_ns = int(bs.exit_max_unprotected_s * 1e9)
        # the unit of work in hand (a message, a poll, reconciliation): its events not queued yet (an
        # outbox write queues and commits them with the state they belong to, the final commit the rest)
        self._uow: UnitOfWork | None = None
        self._journal: list[Message] = []
        self._trigger = ""

    # -- state -----------------------------------------------------------------
    @contextlib.contextmanager
    def unit(self, trigger: str, d: Delivery | None = None, *, crash: bool = True) -> Iterator[UnitOfWork]:
        """One unit of work (``Bus.unit_of_work``; ``trigger``: its provenance): what ``commit`` queues in the
        block (state, events, their alerts and ledger records) is committed on leaving it with ``d``'s XACK,
        in one script. No WATCH: the executor is one process (docs/executor.md), so one attempt commits.
        ``crash``: its commit is a ``before_commit``/``after_commit`` crash point (restart tests)."""
        points = ("before_commit", "after_commit") if crash else None
        for uow in self.ctx.bus.unit_of_work(GROUP, d, crash_points=points):
            with uow:
                self._uow, self._journal, self._trigger = uow, [], trigger
                try:
                    yield uow
                finally:
                    self._uow = None
        self.flush_ledger()

    def load(self) -> ExecState:
        """The committed state."""
        raw = self.r.get(self.key)
        if raw:
            return msgspec.json.decode(raw, type=ExecState)
        st = ExecState(mode=self.mode, reconciled=self.external is None)
        if self.mode == "PAPER_SIM":
            st.sim = SimState(cash=self.starting_cash)
        return st

    def broker_for(self, st: ExecState) -> Broker | None:
        if self.external is not None:
            return self.external
        if st.sim is not None:
            return Simulator(st.sim, self.costs)
        return None

    def save_outbox(self, st: ExecState) -> None:
        """Commit the order records before a call leaves the process (the outbox), together with the
        events produced so far by this unit of work: the state written never runs ahead of its events."""
        events, self._journal = self._journal, []
        self._queue(st, events)
        assert self._uow is not None
        self._uow.checkpoint()
        crash_point("after_outbox")
        self.flush_ledger()

    def commit(self, st: ExecState, events: list[Message]) -> None:
        """The end of a unit of work: state, the journal and ``events``, their alerts and ledger records
        (provenance: the unit's trigger), committed when the unit's block ends."""
        events = [*self._journal, *events]
        self._journal = []
        self._queue(st, events)

    def _queue(self, st: ExecState, events: list[Message]) -> None:
        uow = self._uow
        assert uow is not None, "the executor commits only inside a unit of work"
        uow.set(self.key, msgspec.json.encode(st))
        for m in [*events, *alerts_for(events)]:
            uow.emit(stream_for(m), m)
        prov = ledger.Provenance(settings_hash=self.settings_hash, broker_settings_hash=self.broker_settings_hash,
                                 mode=self.mode, run_id=self.run_id, trigger=self._trigger)
        lines = ledger.queue_lines(events, prov)
        if lines:
            uow.rpush(self.ledger_key, *lines)

    def flush_ledger(self) -> None:
        ledger.flush(self.r, self.ledger_key, self.ledger_dir, self.mode)

    # -- messages ----------------------------------------------------------------
    def handle(self, msg: Message, d: Delivery | None) -> Committed | list[Emit]:
        """Handle one message in a unit of work: state, events, alerts and ledger records are committed
        together with the message's XACK (a crash before leaves it pending, after it nothing is)."""
        if not isinstance(msg, SessionEvent | BarBatch | EntryIntent | StopIntent | ExitIntent | FlattenRequest):
            return []
        with self.unit(trigger_of(msg), d) as uow:
            st = self.load()
            if isinstance(msg, SessionEvent):
                out = self.on_session(st, msg)
            elif isinstance(msg, BarBatch):
                out = self.on_bars(st, msg)
            elif isinstance(msg, FlattenRequest):
                out = self.on_flatten(st, msg)
            else:
                out = self.on_intent(st, msg)
            self.commit(st, out.events)
        assert uow.result is not None
        return uow.result

    def current_date(self, st: ExecState) -> str:
        return max(st.sessions.values(), default="")

    def gates(self) -> core.Gates:
        """The entry controls now: the trading state (``shared.controls``: REDUCING, the kill switch, env
        ``KILL_SWITCH`` or an unreadable key block entries; HALTED blocks every new order but cancels) and
        the LIVE gate (re-checked, token file re-read). Read at every moment an order would be sent."""
        state = read_state(self.r, env_kill_switch=self.ctx.settings.core.kill_switch).state
        return core.Gates(kill_switch=state != "ACTIVE", kill_switch_unreadable=state == "UNREADABLE",
                          live_gate=live_gate(self.ctx.settings), halted=state == "HALTED")

    def halted(self) -> bool:
        return read_state(self.r).state == "HALTED"

    def on_intent(self, st: ExecState, msg: EntryIntent | StopIntent | ExitIntent) -> Out:
        ctx = Ctx(ts=msg.ts, trade_date=msg.trade_date)
        broker = self.broker_for(st)
        if isinstance(broker, Simulator):
            broker.set_time(msg.ts)
        if isinstance(msg, EntryIntent):
            return core.on_entry_intent(st, msg, ctx, gates=self.gates(), current_date=self.current_date(st))
        if isinstance(msg, StopIntent):
            out = core.on_stop_intent(st, msg, ctx, halted=self.halted())
        else:
            held = 0
            if broker is not None:
                held = sum(p.qty for p in self._positions(broker) if p.symbol == msg.symbol)
            out = core.on_exit_intent(st, msg, ctx, held, halted=self.halted())
        return self.perform(st, broker, out, ctx)

    def on_flatten(self, st: ExecState, req: FlattenRequest) -> Out:
        """Market-exit the named positions: each one's stops are cancelled (and the cancel confirmed)
        just before its exit is sent, and restored at once if the exit is refused (``core``)."""
        trade_date = self.current_date(st) or ny_trade_date(req.ts)
        ctx = Ctx(ts=req.ts, trade_date=trade_date)
        broker = self.broker_for(st)
        if isinstance(broker, Simulator):
            broker.set_time(req.ts)
        held: dict[str, int] = {}
        if broker is not None:
            for p in self._positions(broker):
                held[p.symbol] = held.get(p.symbol, 0) + p.qty
        intents, not_held = core.flatten_intents(req.request_id, req.symbols, req.all_positions, held, trade_date,
                                                 req.reason, req.ts)
        halted = self.halted()
        out = Out()
        for it in intents:
            out.extend(self.perform(st, broker, core.on_exit_intent(st, it, ctx, held[it.symbol], halted=halted), ctx))
        what = ", ".join(f"{i.symbol} {i.qty}" for i in intents) or "nothing held"
        out.events.append(make_alert(
            "executor", "flatten", f"flatten {req.request_id}: {what}" + (f"; not held: {', '.join(not_held)}" if not_held else ""),
            severity="warning", text=f"by {req.who}: {req.reason}", trade_date=trade_date, ts=req.ts,
            dedup=f"flatten:{req.request_id}", runbook="flatten"))
        return out

    def _positions(self, broker: Broker):
        try:
            return broker.positions()
        except BrokerError as exc:
            log.warning("positions unavailable: %s", exc)
            return []

    def on_session(self, st: ExecState, ev: SessionEvent) -> Out:
        key = f"{ev.trade_date}:{ev.phase}"
        if key in st.sessions:
            return Out()
        st.sessions[key] = ev.trade_date
        ctx = Ctx(ts=ev.ts, trade_date=ev.trade_date)
        out = Out()
        if ev.phase == "OPEN":
            st.session_open[ev.trade_date] = ev.ts
        if ev.phase == "CLOSE":
            out.extend(core.expire_unconfirmed(st, ev.trade_date, ev.ts))
        if ev.phase in ("PRE_MARKET", "OPEN", "CLOSE"):
            out.events.append(self.snapshot(st, ctx, ev.phase.lower()))
        if ev.phase == "CLOSE":
            if st.sim is not None:
                Simulator(st.sim, self.costs).prune()
            core.prune(st, ev.trade_date)
        return out

    def on_bars(self, st: ExecState, batch: BarBatch) -> Out:
        if batch.trade_date != st.batch_date:
            st.batch_date, st.batches = batch.trade_date, []
        bid = core.batch_id(batch)
        if bid in st.batches or not batch.bars or self.mode == "DRY_RUN":
            return Out()
        st.batches.append(bid)
        ts = max(b.ts for b in batch.bars)
        ctx = Ctx(ts=ts, trade_date=batch.trade_date)
        broker = self.broker_for(st)
        sim = broker if isinstance(broker, Simulator) else None
        out = Out()
        gates = self.gates() if st.pending else core.OPEN_GATES  # nothing to send: no need to read them
        if batch.tf == "1d":
            confirm = core.confirm_daily(st, batch, gates)
            if sim is not None:
                sim.set_time(ts, same_bar=True)
            out.extend(self.perform(st, broker, confirm, ctx))
            if sim is not None:
                intraday = set(st.intraday.get(batch.trade_date, []))
                touched = sim.on_bars([b for b in batch.bars if b.symbol not in intraday])
                sim.on_bars([b for b in batch.bars if b.symbol in intraday], fill=False)
                out.extend(self._after_fills(st, sim, touched, ctx))
        else:
            if sim is not None:
                touched = sim.on_bars(batch.bars)
                out.extend(self._after_fills(st, sim, touched, ctx))
            open_ns = st.session_open.get(batch.trade_date) or calendar().open_close_ns(batch.trade_date)[0]
            confirm = core.confirm_intraday(st, batch, self.params, open_ns, gates)
            if sim is not None:
                sim.set_time(ts)
            out.extend(self.perform(st, broker, confirm, ctx))
        # after this bar's fills: an exit still unfilled too long after its stop's cancel is cancelled (stop restored)
        out.extend(self.perform(st, broker, core.overdue_exits(st, ctx, self.max_gap_ns), ctx))
        return out

    def _after_fills(self, st: ExecState, sim: Simulator, touched: list[str], ctx: Ctx) -> Out:
        out = Out()
        for coid in touched:
            if coid in st.orders:
                out.extend(core.on_view(st, sim.get_by_client_id(coid), ctx))
        return self.perform(st, sim, out, ctx)

    def snapshot(self, st: ExecState, ctx: Ctx, reason: str):
        broker = self.broker_for(st)
        if broker is None:
            return core.snapshot(self.mode, ctx.trade_date, ctx.ts, reason, core.dry_run_account(self.starting_cash),
                                 [], [], st.reconciled)
        try:
            snap = core.snapshot(self.mode, ctx.trade_date, ctx.ts, reason, broker.account(), broker.positions(),
                                 broker.list_open(), st.reconciled)
        except BrokerError as exc:
            log.error("snapshot failed: %s", exc)
            return core.snapshot(self.mode, ctx.trade_date, ctx.ts, reason, core.dry_run_account(0.0), [], [], False)
        if broker.external:  # the protection invariant, checked (and repaired) at every broker snapshot
            self.perform(st, broker, core.repair_protection(st, snap, ctx), ctx)
        return snap

    # -- actions -------------------------------------------------------------------
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

    # -- external broker: reconciliation, polling, periodic snapshots ---------------
    def now_ctx(self) -> Ctx:
        now = self.ctx.clock.now_ns()
        return Ctx(ts=now, trade_date=ny_trade_date(now))

    def start(self, *, reconcile: bool = True) -> None:
        """On process start: flush queued ledger records; with an external broker, start the
        trade-update stream (first, so nothing that happens during reconciliation is missed) and
        refuse entries (``reconciled=False``) until the broker's orders and positions are reconciled."""
        self.flush_ledger()
        if self.external is None:
            return
        if self.updates is not None:
            self.updates.start()
        with self.unit("", crash=False):
            st = self.load()
            st.reconciled = False
            self.commit(st, [])
        if reconcile:
            self.reconcile()

    def stop(self) -> None:
        """On process stop (after the last message): close the trade-update stream."""
        if self.updates is not None:
            self.updates.stop()

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


# -- process entry points --------------------------------------------------------------
def _token_on_file(settings: Settings) -> str | None:
    return read_token_file(settings.core.live_confirm_token_file)  # unreadable: None, the gate is closed


def live_gate(settings: Settings) -> str:
    """"" unless the mode is LIVE and its gate is closed now (then: why). Re-reads the token file."""
    c = settings.core
    if c.execution_mode != "LIVE":
        return ""
    return live_gate_check(live_trading=c.live_trading, token_on_file=_token_on_file(settings),
                           live_token=c.live_confirm_token.get_secret_value() if c.live_confirm_token else None) or ""


def refusal(settings: Settings, bs: BrokerSettings) -> str | None:
    c = settings.core
    return start_check(
        c.execution_mode, base_url=bs.apca_api_base_url, paper_url=bs.apca_paper_url, allow_local=bs.apca_allow_local_url,
        has_keys=bool(bs.apca_api_key_id and bs.apca_api_secret_key), live_trading=c.live_trading,
        live_token=c.live_confirm_token.get_secret_value() if c.live_confirm_token else None,
        token_on_file=_token_on_file(settings), stream_url=bs.apca_stream_url if bs.broker_trade_stream else None)


def make_broker(settings: Settings, bs: BrokerSettings, r: redis.Redis | None = None) -> Broker | None:
    """The broker adapter of the mode; in ALPACA modes every REST call goes through the limiter shared
    (in Redis) with every other process of the key (``rate_limit``)."""
    if settings.core.execution_mode in ("ALPACA_PAPER", "LIVE"):
        from .alpaca import AlpacaBroker
        from .rate_limit import from_settings

        return metrics.MeteredBroker(AlpacaBroker.from_settings(bs, paper=settings.core.execution_mode == "ALPACA_PAPER",
                                                                limiter=from_settings(r, bs)))
    return None


def make_updates(settings: Settings, bs: BrokerSettings) -> TradeUpdates | None:
    """The trade-update stream in ALPACA modes (``BROKER_TRADE_STREAM``), else None."""
    if settings.core.execution_mode in ("ALPACA_PAPER", "LIVE") and bs.broker_trade_stream:
        from .trade_stream import TradeUpdates

        return TradeUpdates.from_settings(bs, paper=settings.core.execution_mode == "ALPACA_PAPER")
    return None


def build_spec(bs: BrokerSettings, broker: Broker | None = None, updates: TradeUpdates | None = None) -> ServiceSpec:
    """The executor as a ``shared.service`` spec (``broker``/``updates``: injected by tests): ``build`` makes
    the ``Executor``, whose ``start``/``idle``/``stop`` are the service's hooks."""

    def build(ctx: ServiceContext) -> Executor:
        return Executor(ctx, bs, broker if broker is not None else make_broker(ctx.settings, bs, ctx.r),
                        updates if updates is not None else make_updates(ctx.settings, bs))

    return ServiceSpec(name=GROUP, streams=[INTENTS, CLOCK, BARS_1M, BARS_1D, CONTROL], build=build,
                       produces=[ORDERS, REJECTIONS, BROKER, ALERTS])


def refuse_to_start(settings: Settings, reason: str) -> int:
    """A start gate failed: one CRITICAL line, one critical ``refused_to_start`` alert, then idle without
    a heartbeat until stopped (``shared.service.refuse_and_idle``: no restart loop; exit code 2)."""
    c = settings.core
    setup_logging(c.log_level, c.log_format, service=GROUP)
    return refuse_and_idle(GROUP, "refused_to_start", f"executor refused to start {c.execution_mode}",
                           f"refusing to start {c.execution_mode}: {reason}", redis_url=c.redis_url,
                           runbook=RUNBOOK_REFUSED)


def main() -> int:
    try:
        settings = get_settings()
        bs = BrokerSettings()
    except ValidationError:  # one line naming every bad variable, an alert, idle (no restart loop)
        return idle_invalid_settings(GROUP, sections=(*SECTIONS, BrokerSettings))
    reason = refusal(settings, bs)
    if reason:
        return refuse_to_start(settings, reason)
    return run_service(build_spec(bs), settings)
