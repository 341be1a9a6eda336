"""Executor decisions: intents + executor/broker state -> order actions and events.

Pure: no Redis, no clock, no env, no network. The worker loads ``ExecState``, calls these
functions, performs the returned ``Action``s through a broker adapter, feeds the results back
(``on_submitted``, ``on_view``, ...), and commits state + events atomically.

Conventions (docs/ARCHITECTURE.md, docs/executor.md):
- ``client_order_id = shared.ids.client_order_id(intent_id)``; every event about an order carries
  that order's client id and the id of the intent that created it.
- Entry fills carry the entry intent's protective stop in ``stop_price``.
- A stop replace emits ``replaced`` for the NEW order, ``reason`` naming the old client id; the
  old order gets no ``cancelled`` event (native replace or cancel-and-new alike).
- An exit cancels every stop holding the symbol's shares first (``cancelled``, reason names the
  exit intent), then sells market (kind="exit").
- Event ids: ``stable_id("ev", client_order_id, event, trade_id)``; fills de-duplicated by trade id.
"""

from __future__ import annotations

import msgspec

from shared.clock import NS, dt_to_ns, ny_datetime
from shared.ids import client_order_id, stable_id
from shared.schemas import (
    BarBatch,
    BarRow,
    BrokerOrder,
    BrokerPosition,
    BrokerSnapshot,
    EntryIntent,
    ExitIntent,
    Message,
    OrderEvent,
    Rejection,
    StopIntent,
)

from .broker import TERMINAL, AccountView, OrderRequest, OrderView, PositionView
from .simulator import SimState

OPEN_LOCAL = ("new", "unknown", "waiting")  # known to the executor, not (yet) at the broker
# records the broker may or may not have: resolved by a lookup by client id (blocked: a resend was refused)
LOOKUP = ("new", "unknown", "blocked")
DONE = frozenset({"filled", "cancelled", "rejected", "replaced", "expired"})

# reason codes of entries the executor refuses
R_UNRECONCILED = "EXECUTOR_UNRECONCILED"
R_KILL_SWITCH = "KILL_SWITCH_ON"
R_KILL_SWITCH_UNREADABLE = "KILL_SWITCH_UNREADABLE"  # the key holds garbage: blocks, named as risk names it
R_EXPIRED = "INTENT_EXPIRED"
R_NOT_CONFIRMED = "ENTRY_NOT_CONFIRMED"
R_BAD_QTY = "INVALID_QTY"
R_LIVE_GATE = "LIVE_GATE_CLOSED"


class Gates(msgspec.Struct, frozen=True, kw_only=True):
    """The entry controls at the moment an entry would be sent (read by the shell, passed in).

    ``kill_switch``: the env switch or the ``avwap:control:kill_switch`` key (unreadable counts as on);
    ``live_gate``: "" when open (or not LIVE), else why the LIVE gate is closed. The ``reconciled``
    flag is part of the executor state. Exits and stops never look at these.
    """

    kill_switch: bool = False
    live_gate: str = ""
    kill_switch_unreadable: bool = False  # the key could not be read or parsed (blocks, reported as such)


OPEN_GATES = Gates()


class Params(msgspec.Struct, frozen=True, kw_only=True):
    mode: str
    confirm_start: str = "09:45"
    confirm_end: str = "15:30"
    confirm_minutes: int = 10


class Bucket(msgspec.Struct, kw_only=True):
    end_ts: int
    open: float
    high: float
    low: float
    close: float


class Pending(msgspec.Struct, kw_only=True):
    """An entry intent waiting for confirmation on its trade date."""

    intent: EntryIntent
    bucket: Bucket | None = None
    closes: list[float] = []  # closes of the last two closed confirmation bars


class OrderRec(msgspec.Struct, kw_only=True):
    """The executor's record of one order (the outbox entry before submit)."""

    client_order_id: str
    intent_id: str
    kind: str  # entry | stop | exit
    symbol: str
    side: str
    qty: int
    order_type: str = "market"
    stop_price: float | None = None
    limit_price: float | None = None
    entry_stop: float | None = None
    trade_date: str = ""
    status: str = "new"
    broker_order_id: str = ""
    filled_qty: int = 0
    avg_fill_price: float | None = None
    fees: float = 0.0
    trade_ids: list[str] = []
    replaces: str = ""  # client id of the order this one replaces (events say "replaced")
    waiting_on: list[str] = []  # client ids that must be done before this one is submitted
    silent_cancel: bool = False  # cancelled as part of a replace: no "cancelled" event
    cancel_reason: str = ""
    candidate_id: str = ""  # entries: the candidate behind the intent (for a Rejection at resend time)
    announced: bool = False  # accepted/replaced event published
    attempts: int = 0  # retries after a 403 insufficient qty (exits)


class ExecState(msgspec.Struct, kw_only=True):
    mode: str
    orders: dict[str, OrderRec] = {}
    pending: dict[str, Pending] = {}
    handled: dict[str, str] = {}  # intent id -> trade date (de-dup of redelivered intents)
    sessions: dict[str, str] = {}  # "D:PHASE" -> D
    batches: list[str] = []  # bar batch ids handled on ``batch_date``
    batch_date: str = ""
    intraday: dict[str, list[str]] = {}  # trade date -> symbols seen on 1m bars
    session_open: dict[str, int] = {}
    reconciled: bool = True
    applied: dict[str, str] = {}  # stream -> id of the last entry whose effects are committed
    sim: SimState | None = None


# -- actions -----------------------------------------------------------------
class Submit(msgspec.Struct, frozen=True, tag="submit"):
    client_order_id: str


class Cancel(msgspec.Struct, frozen=True, tag="cancel"):
    client_order_id: str


class Replace(msgspec.Struct, frozen=True, tag="replace"):
    old_client_order_id: str
    new_client_order_id: str


Action = Submit | Cancel | Replace


class Ctx(msgspec.Struct, frozen=True, kw_only=True):
    """Event time of what is being handled."""

    ts: int
    trade_date: str


class Out(msgspec.Struct, kw_only=True):
    events: list[Message] = []
    actions: list[Action] = []

    def extend(self, other: Out) -> Out:
        self.events.extend(other.events)
        self.actions.extend(other.actions)
        return self


# -- helpers -----------------------------------------------------------------
def request_of(rec: OrderRec) -> OrderRequest:
    return OrderRequest(client_order_id=rec.client_order_id, symbol=rec.symbol, side=rec.side, qty=rec.qty,
                        order_type=rec.order_type, stop_price=rec.stop_price, limit_price=rec.limit_price,
                        time_in_force="gtc" if rec.kind == "stop" else "day")


def order_event(rec: OrderRec, event: str, ctx: Ctx, mode: str, *, reason: str = "", trade_id: str = "",
                fill_qty: int = 0, fill_price: float | None = None, fees: float = 0.0) -> OrderEvent:
    return OrderEvent(
        event_id=stable_id("ev", rec.client_order_id, event, trade_id), event=event, mode=mode,
        intent_id=rec.intent_id, client_order_id=rec.client_order_id, broker_order_id=rec.broker_order_id,
        symbol=rec.symbol, side=rec.side, kind=rec.kind, qty=rec.qty, order_type=rec.order_type,
        stop_price=rec.entry_stop if rec.kind == "entry" else rec.stop_price, limit_price=rec.limit_price,
        filled_qty=rec.filled_qty, fill_qty=fill_qty, fill_price=fill_price, avg_fill_price=rec.avg_fill_price,
        trade_id=trade_id, fees=fees, reason=reason, trade_date=ctx.trade_date, ts=ctx.ts)


def reject_entry(intent: EntryIntent, reasons: list[str], ts: int, detail: str = "") -> Rejection:
    return Rejection(rejection_id=stable_id("rj", "executor", intent.intent_id, reasons), source="executor",
                     symbol=intent.symbol, trade_date=intent.trade_date, reasons=reasons,
                     candidate_id=intent.candidate_id, intent_id=intent.intent_id, detail=detail, ts=ts)


def live_stops(st: ExecState, symbol: str) -> list[OrderRec]:
    """Open sell orders that hold the symbol's shares (stops, at the broker or about to be)."""
    return [o for o in st.orders.values()
            if o.symbol == symbol and o.side == "sell" and o.kind == "stop" and o.status not in DONE]


def _dry_run_accept(st: ExecState, rec: OrderRec, ctx: Ctx) -> Out:
    rec.status = "accepted"
    rec.announced = True
    st.orders[rec.client_order_id] = rec
    return Out(events=[order_event(rec, "accepted", ctx, st.mode, reason="DRY_RUN: no order sent")])


# -- intents -----------------------------------------------------------------
def entry_blocks(st: ExecState, gates: Gates, *, reconciling: bool = False) -> list[str]:
    """Reason codes that forbid sending a new entry now (empty: it may go). ``reconciling``: the
    check runs as part of start-up reconciliation, so ``reconciled`` is not (yet) required."""
    reasons: list[str] = []
    if gates.live_gate:
        reasons.append(R_LIVE_GATE)
    if not st.reconciled and not reconciling:
        reasons.append(R_UNRECONCILED)
    if gates.kill_switch_unreadable:
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


def on_stop_intent(st: ExecState, intent: StopIntent, ctx: Ctx) -> Out:
    if intent.intent_id in st.handled:
        return Out()
    st.handled[intent.intent_id] = intent.trade_date
    coid = client_order_id(intent.intent_id)
    if intent.action == "cancel":
        target = st.orders.get(intent.target_client_order_id)
        if target is None or target.status in DONE:
            return Out()
        target.cancel_reason = f"cancel_intent={intent.intent_id} {intent.reason}".strip()
        if st.mode == "DRY_RUN":
            target.status = "cancelled"
            return Out(events=[order_event(target, "cancelled", ctx, st.mode, reason=target.cancel_reason)])
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
            return Out(events=[order_event(rec, "rejected", ctx, st.mode, reason=why)])
        if st.mode == "DRY_RUN":
            target.status, target.silent_cancel = "replaced", True
            rec.status, rec.announced = "accepted", True
            st.orders[coid] = rec
            return Out(events=[order_event(rec, "replaced", ctx, st.mode, reason=f"replaces {rec.replaces}; DRY_RUN")])
        st.orders[coid] = rec
        return Out(actions=[Replace(target.client_order_id, coid)])
    if intent.action != "place" or intent.qty <= 0:
        rec.status = "rejected"
        st.orders[coid] = rec
        return Out(events=[order_event(rec, "rejected", ctx, st.mode, reason=f"INVALID_STOP_INTENT: action={intent.action} qty={intent.qty}")])
    if st.mode == "DRY_RUN":
        return _dry_run_accept(st, rec, ctx)
    st.orders[coid] = rec
    return Out(actions=[Submit(coid)])


def on_exit_intent(st: ExecState, intent: ExitIntent, ctx: Ctx, position_qty: int) -> Out:
    """Cancel the stops holding the shares, then sell market."""
    if intent.intent_id in st.handled:
        return Out()
    st.handled[intent.intent_id] = intent.trade_date
    coid = client_order_id(intent.intent_id)
    qty = min(intent.qty, position_qty) if st.mode != "DRY_RUN" else intent.qty
    rec = OrderRec(client_order_id=coid, intent_id=intent.intent_id, kind="exit", symbol=intent.symbol, side="sell",
                   qty=max(qty, 0), trade_date=intent.trade_date)
    if st.mode == "DRY_RUN":
        return _dry_run_accept(st, rec, ctx)
    if qty <= 0:
        rec.status = "rejected"
        st.orders[coid] = rec
        return Out(events=[order_event(rec, "rejected", ctx, st.mode, reason="NO_POSITION")])
    out = Out()
    for stop in sorted(live_stops(st, intent.symbol), key=lambda o: o.client_order_id):
        stop.cancel_reason = f"exit_intent={intent.intent_id}"
        rec.waiting_on.append(stop.client_order_id)
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
            out.events.append(order_event(rec, "rejected", ctx, st.mode, reason="STOP_FILLED_FIRST"))
            continue
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
        return Out(actions=[Replace(rec.replaces, rec.client_order_id)] if rec.replaces else [Submit(rec.client_order_id)])
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


# -- broker results -----------------------------------------------------------
def on_submitted(st: ExecState, coid: str, view: OrderView, ctx: Ctx) -> Out:
    """The broker has the order (submit answered, or a lookup after a timeout/422 found it)."""
    rec = st.orders[coid]
    rec.broker_order_id = view.broker_order_id
    if rec.status in OPEN_LOCAL or rec.status == "blocked":
        rec.status = "accepted"
    out = Out()
    if not rec.announced:
        rec.announced = True
        if rec.replaces:
            out.events.append(order_event(rec, "replaced", ctx, st.mode, reason=f"replaces {rec.replaces}"))
        else:
            out.events.append(order_event(rec, "accepted", ctx, st.mode))
    return out.extend(on_view(st, view, ctx))


def on_broker_update(st: ExecState, view: OrderView, ctx: Ctx) -> Out:
    """The broker's current view of one order, however it arrived (poll, lookup, trade-update stream).

    A record still awaiting the broker's answer (``LOOKUP``) is announced (``accepted``/``replaced``)
    first; then fills and terminal states become events. Idempotent: fills are de-duplicated by
    trade id and by the cumulative filled quantity, terminal states are final, so the same view
    applied twice (by the stream and by a poll) publishes nothing the second time.
    """
    rec = st.orders.get(view.client_order_id)
    if rec is None:
        return Out()
    if rec.status in LOOKUP:
        return on_submitted(st, view.client_order_id, view, ctx)
    return on_view(st, view, ctx)


def on_rejected(st: ExecState, coid: str, reason: str, ctx: Ctx) -> Out:
    rec = st.orders[coid]
    if rec.status in DONE:
        return Out()
    rec.status = "rejected"
    return Out(events=[order_event(rec, "rejected", ctx, st.mode, reason=reason)])


def on_view(st: ExecState, view: OrderView, ctx: Ctx) -> Out:
    """Events for what changed in the broker's view of an order (fills by trade id, terminal states)."""
    rec = st.orders.get(view.client_order_id)
    out = Out()
    if rec is None or rec.status in DONE:
        return out
    if not rec.broker_order_id:
        rec.broker_order_id = view.broker_order_id
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
        rec.status = event
        out.events.append(order_event(rec, event, ctx, st.mode, trade_id=f.trade_id, fill_qty=f.qty,
                                      fill_price=f.price, fees=f.fees))
    status = view.status
    if status in ("canceled", "cancelled", "expired", "done_for_day") and rec.status not in DONE:
        rec.status = "expired" if status == "expired" else "cancelled"
        if not rec.silent_cancel:
            reason = rec.cancel_reason or status
            out.events.append(order_event(rec, "cancelled", ctx, st.mode, reason=reason))
    elif status == "replaced" and rec.status not in DONE:
        rec.status, rec.silent_cancel = "replaced", True
    elif status == "rejected" and rec.status not in DONE:
        rec.status = "rejected"
        out.events.append(order_event(rec, "rejected", ctx, st.mode, reason="rejected by broker"))
    elif status == "pending_cancel" and rec.status not in DONE:
        rec.status = "pending_cancel"
    return out


def _synthetic_fill(view: OrderView, qty: int, price: float):
    from .broker import Fill

    return Fill(trade_id=stable_id("tr", view.broker_order_id, view.filled_qty), qty=qty, price=price)


def mark_cancel_requested(st: ExecState, coid: str, *, silent: bool = False) -> None:
    rec = st.orders[coid]
    rec.silent_cancel = rec.silent_cancel or silent
    if rec.status not in DONE:
        rec.status = "pending_cancel"


# -- snapshots ----------------------------------------------------------------
def snapshot(mode: str, trade_date: str, ts: int, reason: str, account: AccountView, positions: list[PositionView],
             open_orders: list[OrderView], reconciled: bool) -> BrokerSnapshot:
    pos = [BrokerPosition(symbol=p.symbol, qty=p.qty, avg_entry_price=round(p.avg_entry_price, 4),
                          market_value=round(p.qty * p.current_price, 2), current_price=round(p.current_price, 4))
           for p in sorted(positions, key=lambda p: p.symbol)]
    orders = [BrokerOrder(client_order_id=o.client_order_id, broker_order_id=o.broker_order_id, symbol=o.symbol,
                          side=o.side, order_type=o.order_type, qty=o.qty, status=o.status, filled_qty=o.filled_qty,
                          stop_price=o.stop_price, limit_price=o.limit_price)
              for o in sorted(open_orders, key=lambda o: (o.symbol, o.client_order_id))]
    return BrokerSnapshot(snapshot_id=stable_id("bs", mode, trade_date, reason, ts), mode=mode, trade_date=trade_date,
                          ts=ts, equity=round(account.equity, 2), cash=round(account.cash, 2),
                          buying_power=round(account.buying_power, 2), positions=pos, open_orders=orders,
                          reconciled=reconciled, reason=reason)


def dry_run_account(equity: float) -> AccountView:
    return AccountView(equity=equity, cash=equity, buying_power=equity)


def prune(st: ExecState, d: str, keep_days: int = 10) -> None:
    """At D's close: forget finished orders of earlier dates (and blocked entries of earlier dates:
    day orders that never reached the broker) and old de-dup keys."""
    for coid in [k for k, o in st.orders.items() if (o.status in DONE or o.status == "blocked") and o.trade_date < d]:
        del st.orders[coid]
    cutoff = _days_before(d, keep_days)
    st.handled = {k: v for k, v in st.handled.items() if v >= cutoff}
    st.sessions = {k: v for k, v in st.sessions.items() if v >= cutoff}
    st.intraday = {k: v for k, v in st.intraday.items() if k >= d}
    st.session_open = {k: v for k, v in st.session_open.items() if k >= d}


def _days_before(d: str, n: int) -> str:
    from datetime import date, timedelta

    return (date.fromisoformat(d) - timedelta(days=n)).isoformat()


__all__ = [
    "Action", "BarRow", "Cancel", "Ctx", "ExecState", "Gates", "OPEN_GATES", "OrderRec", "Out", "Params", "Replace",
    "Submit", "TERMINAL", "batch_id", "confirm_daily", "confirm_intraday", "entry_blocks", "expire_unconfirmed",
    "on_broker_update", "on_entry_intent", "on_exit_intent", "on_rejected", "on_stop_intent", "on_submitted", "on_view",
    "prune", "ready_waiting", "request_of", "resend_or_block", "snapshot",
]
