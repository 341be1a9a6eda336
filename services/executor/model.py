"""The executor's state and vocabulary (pure): the order records and the state they live in, the gates
and parameters the shell passes in, the actions it performs, the entry reason codes, and the builders
of the events every part of the core publishes (``order_event``, ``reject_entry``)."""

from __future__ import annotations

import msgspec

from shared.ids import stable_id
from shared.schemas import EntryIntent, Message, OrderEvent, ReasonCode, Rejection, RejectionCode

from . import lifecycle
from .broker import OrderRequest
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
