"""The executor's answer to each message (a part of ``worker.Executor``): entry, stop and exit intents,
flatten requests, session events (snapshots, expiry, pruning) and bar batches (the simulator's fills,
entry confirmation, overdue exits). Each runs inside the unit of work ``Executor.handle`` opened; the
executor provides the state (``broker_for``), the controls (``gates``/``halted``) and the actions
(``perform``)."""

from __future__ import annotations

import logging

from shared.alerts import make_alert
from shared.clock import calendar, ny_trade_date
from shared.schemas import BarBatch, EntryIntent, ExitIntent, FlattenRequest, SessionEvent, StopIntent

from . import core
from .broker import Broker, BrokerError
from .core import Ctx, ExecState, Out
from .simulator import SimCosts, Simulator

log = logging.getLogger("services.executor.worker")  # the executor's log, as before the split


class MessageHandlers:
    """What the executor does with each kind of message; ``Executor`` mixes it in."""

    mode: str
    params: core.Params
    costs: SimCosts
    starting_cash: float
    max_gap_ns: int

    def current_date(self, st: ExecState) -> str:
        return max(st.sessions.values(), default="")

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
