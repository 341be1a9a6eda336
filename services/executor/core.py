"""Executor decisions: intents + executor/broker state -> order actions and events.

Pure: no Redis, no clock, no env, no network. The worker loads ``ExecState``, calls these
functions, performs the returned ``Action``s through a broker adapter, feeds the results back
(``on_submitted``, ``on_view``, ...), and commits state + events atomically.

Conventions (docs/ARCHITECTURE.md, docs/executor.md):
- ``client_order_id = shared.ids.client_order_id(intent_id)``; every event about an order carries
  that order's client id and the id of the intent that created it.
- Entry fills carry the entry intent's protective stop in ``stop_price``.
- A stop replace emits ``replaced`` for the NEW order (``reason_code`` REPLACES, ``replaces_client_order_id``)
  once the broker shows the old one ``replaced`` (or, cancel-and-new, cancelled); the old order gets no
  ``cancelled`` event. Until then the old stop is the live one (the protection invariant).
- Status changes go through ``lifecycle.transition`` (one table); every event carries a ``ReasonCode``.
- An exit cancels every stop holding the symbol's shares first (``cancelled``, reason names the
  exit intent), then sells market (kind="exit").
- Event ids: ``stable_id("ev", client_order_id, event, trade_id)``; fills de-duplicated by trade id.
"""

from __future__ import annotations

import msgspec

from shared.alerts import make_alert
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
    ReasonCode,
    Rejection,
    RejectionCode,
    StopIntent,
)

from . import lifecycle
from .broker import TERMINAL, AccountView, OrderRequest, OrderView, PositionView
from .simulator import SimState

OPEN_LOCAL = ("new", "unknown", "waiting")  # known to the executor, not (yet) at the broker
# records the broker may or may not have: resolved by a lookup by client id (blocked: a resend was refused)
LOOKUP = ("new", "unknown", "blocked")
DONE = frozenset(lifecycle.FINAL)
# docs/runbook.md anchor of the protection alerts (a test checks it exists)
RUNBOOK_PROTECTION = "executor-protection"

# reason codes of entries the executor refuses (shared.schemas.reasons: ExecutorCode, and three of risk's)
R_UNRECONCILED: RejectionCode = "EXECUTOR_UNRECONCILED"
R_KILL_SWITCH: RejectionCode = "KILL_SWITCH_ON"
R_KILL_SWITCH_UNREADABLE: RejectionCode = "KILL_SWITCH_UNREADABLE"  # the key holds garbage: blocks, named as risk names it
R_EXPIRED: RejectionCode = "INTENT_EXPIRED"
R_NOT_CONFIRMED: RejectionCode = "ENTRY_NOT_CONFIRMED"
R_BAD_QTY: RejectionCode = "INVALID_QTY"
R_LIVE_GATE: RejectionCode = "LIVE_GATE_CLOSED"
R_HALTED: RejectionCode = "TRADING_HALTED"  # the trading state is HALTED (shared.controls): entries, exits and stop replaces refused
STOP_RESTORED = "stop restored"  # in an exit's rejected/cancelled reason: its cancelled stop is being put back


class Gates(msgspec.Struct, frozen=True, kw_only=True):
    """The entry controls at the moment an entry would be sent (read by the shell, passed in).

    ``kill_switch``: the env switch or the ``avwap:control:kill_switch`` key (unreadable counts as on);
    ``live_gate``: "" when open (or not LIVE), else why the LIVE gate is closed. The ``reconciled``
    flag is part of the executor state. Exits and stops never look at these.
    """

    kill_switch: bool = False
    live_gate: str = ""
    halted: bool = False  # trading state HALTED: entries refused with TRADING_HALTED (exits/replaces: see below)
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
    cancel_code: str = ""  # ReasonCode of the cancelled event this cancel produces
    cancel_wanted: bool = False  # a cancel was asked for: re-sent by the poll until the broker confirms it
    reprotect: bool = False  # a stop placed by the executor to restore protection (events: REPROTECT)
    protects: list[str] = []  # exits: the stops cancelled for it (restored if it is refused or cancelled)
    restores: str = ""  # stops: the cancelled stop this one puts back (events say "restores <id>")
    gap_start: int = 0  # exits: event time the last of its stops was confirmed cancelled (unprotected since)


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
    sim: SimState | None = None
    protect: dict[str, float] = {}  # symbol -> last stop level the broker accepted (re-protection level)


# -- actions -----------------------------------------------------------------
class Submit(msgspec.Struct, frozen=True, tag="submit"):
    client_order_id: str


class Cancel(msgspec.Struct, frozen=True, tag="cancel"):
    client_order_id: str


class Replace(msgspec.Struct, frozen=True, tag="replace"):
    old_client_order_id: str
    new_client_order_id: str


class CancelForeign(msgspec.Struct, frozen=True, tag="cancel_foreign"):
    """Cancel a broker order the executor has no record of (protection repair)."""

    broker_order_id: str


Action = Submit | Cancel | Replace | CancelForeign


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
                fill_qty: int = 0, fill_price: float | None = None, fees: float = 0.0,
                code: ReasonCode = "NONE") -> OrderEvent:
    return OrderEvent(
        event_id=stable_id("ev", rec.client_order_id, event, trade_id), event=event, mode=mode,
        intent_id=rec.intent_id, client_order_id=rec.client_order_id, broker_order_id=rec.broker_order_id,
        symbol=rec.symbol, side=rec.side, kind=rec.kind, qty=rec.qty, order_type=rec.order_type,
        stop_price=rec.entry_stop if rec.kind == "entry" else rec.stop_price, limit_price=rec.limit_price,
        filled_qty=rec.filled_qty, fill_qty=fill_qty, fill_price=fill_price, avg_fill_price=rec.avg_fill_price,
        trade_id=trade_id, fees=fees, reason=reason, trade_date=ctx.trade_date, ts=ctx.ts, reason_code=code,
        replaces_client_order_id=rec.replaces if event == "replaced" else "")


def reject_entry(intent: EntryIntent, reasons: list[RejectionCode], ts: int, detail: str = "") -> Rejection:
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
    return Out(events=[order_event(rec, "accepted", ctx, st.mode, reason="DRY_RUN: no order sent", code="DRY_RUN")])


# -- intents -----------------------------------------------------------------
def entry_blocks(st: ExecState, gates: Gates, *, reconciling: bool = False) -> list[RejectionCode]:
    """Reason codes that forbid sending a new entry now (empty: it may go). ``reconciling``: the
    check runs as part of start-up reconciliation, so ``reconciled`` is not (yet) required."""
    reasons: list[RejectionCode] = []
    if gates.live_gate:
        reasons.append(R_LIVE_GATE)
    if not st.reconciled and not reconciling:
        reasons.append(R_UNRECONCILED)
    if gates.halted:
        reasons.append(R_HALTED)
    elif gates.kill_switch_unreadable:
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


def on_stop_intent(st: ExecState, intent: StopIntent, ctx: Ctx, *, halted: bool = False) -> Out:
    """Place, replace or cancel a stop. ``halted`` (trading state HALTED): a replace is refused (the live
    stop stays at the broker); a cancel and a first stop for a position go through."""
    if intent.intent_id in st.handled:
        return Out()
    st.handled[intent.intent_id] = intent.trade_date
    coid = client_order_id(intent.intent_id)
    if intent.action == "cancel":
        target = st.orders.get(intent.target_client_order_id)
        if target is None or target.status in DONE:
            return Out()
        target.cancel_reason = f"cancel_intent={intent.intent_id} {intent.reason}".strip()
        target.cancel_code = "CANCEL_INTENT"
        if st.mode == "DRY_RUN":
            target.status = "cancelled"
            return Out(events=[order_event(target, "cancelled", ctx, st.mode, reason=target.cancel_reason,
                                           code="CANCEL_INTENT")])
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
            code: ReasonCode = "TARGET_NOT_OPEN" if target is not None else "TARGET_UNKNOWN"
            return Out(events=[order_event(rec, "rejected", ctx, st.mode, reason=why, code=code)])
        if halted:
            rec.status = "rejected"
            st.orders[coid] = rec
            why = f"{R_HALTED}: no stop replace while HALTED; {target.client_order_id} stays at the broker"
            return Out(events=[order_event(rec, "rejected", ctx, st.mode, reason=why, code="TRADING_HALTED")])
        if st.mode == "DRY_RUN":
            target.status, target.silent_cancel = "replaced", True
            rec.status, rec.announced = "accepted", True
            st.orders[coid] = rec
            return Out(events=[order_event(rec, "replaced", ctx, st.mode, reason=f"replaces {rec.replaces}; DRY_RUN",
                                           code="REPLACES")])
        st.orders[coid] = rec
        return Out(actions=[Replace(target.client_order_id, coid)])
    if intent.action != "place" or intent.qty <= 0:
        rec.status = "rejected"
        st.orders[coid] = rec
        return Out(events=[order_event(rec, "rejected", ctx, st.mode, code="INVALID_STOP_INTENT",
                                       reason=f"INVALID_STOP_INTENT: action={intent.action} qty={intent.qty}")])
    if st.mode == "DRY_RUN":
        return _dry_run_accept(st, rec, ctx)
    st.orders[coid] = rec
    return Out(actions=[Submit(coid)])


def on_exit_intent(st: ExecState, intent: ExitIntent, ctx: Ctx, position_qty: int, *, halted: bool = False) -> Out:
    """Cancel the stops holding the shares, then sell market (once every cancel is confirmed). The
    cancelled stops are remembered (``protects``): if the exit is refused, or cancelled unfilled,
    they are put back at once (``restore_stops``). ``halted``: refused (``TRADING_HALTED``), the
    stops untouched."""
    if intent.intent_id in st.handled:
        return Out()
    st.handled[intent.intent_id] = intent.trade_date
    coid = client_order_id(intent.intent_id)
    qty = min(intent.qty, position_qty) if st.mode != "DRY_RUN" else intent.qty
    rec = OrderRec(client_order_id=coid, intent_id=intent.intent_id, kind="exit", symbol=intent.symbol, side="sell",
                   qty=max(qty, 0), trade_date=intent.trade_date)
    if st.mode == "DRY_RUN" and not halted:
        return _dry_run_accept(st, rec, ctx)
    if qty <= 0 or halted:
        rec.status = "rejected"
        st.orders[coid] = rec
        if halted:
            return Out(events=[order_event(rec, "rejected", ctx, st.mode, reason=f"{R_HALTED}: no exit while HALTED; "
                                           "the stops stay", code="TRADING_HALTED")])
        return Out(events=[order_event(rec, "rejected", ctx, st.mode, reason="NO_POSITION", code="NO_POSITION")])
    out = Out()
    for stop in sorted(live_stops(st, intent.symbol), key=lambda o: o.client_order_id):
        stop.cancel_reason, stop.cancel_code = f"exit_intent={intent.intent_id}", "EXIT_INTENT"
        rec.waiting_on.append(stop.client_order_id)
        rec.protects.append(stop.client_order_id)
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
            out.events.append(order_event(rec, "rejected", ctx, st.mode, reason="STOP_FILLED_FIRST",
                                          code="STOP_FILLED_FIRST"))
            continue
        if rec.kind == "exit" and rec.protects:
            rec.gap_start = ctx.ts  # the cancels are confirmed: unprotected from now until the fill (or a restore)
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
        old = st.orders.get(rec.replaces) if rec.replaces else None
        native = old is not None and old.status not in DONE and not rec.reprotect  # else: cancel-and-new, re-protection
        return Out(actions=[Replace(rec.replaces, rec.client_order_id)] if native else [Submit(rec.client_order_id)])
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


def _days_before(d: str, n: int) -> str:
    from datetime import date, timedelta

    return (date.fromisoformat(d) - timedelta(days=n)).isoformat()


__all__ = [
    "Action", "BarRow", "breach_exit", "Cancel", "CancelForeign", "Gap", "coverage", "repair_protection", "reprotect_rec", "Ctx", "ExecState", "Gates", "OPEN_GATES", "OrderRec", "Out", "Params", "Replace",
    "Submit", "TERMINAL", "batch_id", "confirm_daily", "confirm_intraday", "entry_blocks", "expire_unconfirmed",
    "flatten_intents", "overdue_exits", "restore_stops",
    "on_broker_update", "on_entry_intent", "on_exit_intent", "on_rejected", "on_stop_intent", "on_submitted", "on_view",
    "prune", "ready_waiting", "request_of", "resend_or_block", "snapshot",
]
