"""Intents (risk and exits -> executor), rejections, and order events."""

from __future__ import annotations

from typing import Literal, get_args

from .base import InvalidPayload, Message, register, register_legacy
from .reasons import REJECTION_CODES, RejectionCode, upcast_codes
from .types import Money, OptPrice, Price, Qty, Shares, Symbol, TradeDate, long_stop_problem


@register
class EntryIntent(Message, frozen=True, kw_only=True, tag="entry_intent"):
    """A sized, gated new entry. ``intent_id`` is a stable hash; the broker client id derives from it."""

    intent_id: str
    candidate_id: str
    symbol: Symbol
    trade_date: TradeDate
    side: Literal["buy"] = "buy"  # long only
    qty: Qty
    order_type: Literal["market", "limit"] = "market"
    limit_price: Price | None = None
    entry_level: Price
    stop_price: Price
    risk_per_share: Price
    notional: Money
    gates_passed: list[str] = []
    ts: int = 0

    def __post_init__(self) -> None:
        # invariants of a long entry; raised on decode too (msgspec turns it into a ValidationError,
        # so the bus dead-letters the intent instead of the executor sending it)
        problem = long_stop_problem(self.entry_level, self.stop_price, self.risk_per_share)
        if problem:
            raise ValueError(f"invalid entry intent {self.symbol}: {problem}")


@register
class StopIntent(Message, frozen=True, kw_only=True, tag="stop_intent"):
    """Place, replace or cancel the protective stop of a position (from exits; never gated)."""

    intent_id: str
    symbol: Symbol
    trade_date: TradeDate
    action: Literal["place", "replace", "cancel"]
    qty: Shares = 0
    stop_price: OptPrice = 0.0
    target_client_order_id: str = ""  # the live stop to replace or cancel
    reason: str = ""
    ts: int = 0


@register
class ExitIntent(Message, frozen=True, kw_only=True, tag="exit_intent"):
    """Sell a position (market). The executor cancels a stop holding the shares first."""

    intent_id: str
    symbol: Symbol
    trade_date: TradeDate
    qty: Qty
    reason: str = ""
    ts: int = 0


class _RejectionFields(Message, frozen=True, kw_only=True):
    rejection_id: str
    source: Literal["risk", "executor"]
    symbol: Symbol
    trade_date: TradeDate
    candidate_id: str = ""
    intent_id: str = ""
    detail: str = ""
    ts: int = 0


@register
class Rejection(_RejectionFields, frozen=True, kw_only=True, tag="rejection"):
    """A refused entry with ordered, stable reason codes.

    Versions: v1 carried ``reasons`` as free strings (three Phase C codes in lower case); v2 (current)
    takes only ``REJECTION_CODES`` (``shared.schemas.reasons``: risk's gate codes, then the executor's).
    v1 entries are upcast on decode (``upcast_rejection_v1``: old spellings mapped, an unknown code is
    an ``InvalidPayload``).
    """

    VERSION = 2
    v: int = 2
    reasons: list[RejectionCode]


class RejectionV1(_RejectionFields, frozen=True, kw_only=True, tag="rejection"):
    """Rejection as written before v2 (free-string codes). Decoded only to be upcast."""

    VERSION = 1
    v: int = 1
    reasons: list[str]


def upcast_rejection_v1(old: RejectionV1) -> Rejection:
    reasons = upcast_codes(old.reasons)
    unknown = [c for c in reasons if c not in REJECTION_CODES]
    if unknown:
        raise InvalidPayload(f"type='rejection' v=1: unknown reason codes {unknown}")
    fields = {f: getattr(old, f) for f in old.__struct_fields__ if f not in ("v", "type", "reasons")}
    return Rejection(**fields, reasons=reasons)  # type: ignore[arg-type]  # checked against REJECTION_CODES above


register_legacy(RejectionV1, upcast_rejection_v1)


OrderEventName = Literal["accepted", "partially_filled", "filled", "cancelled", "rejected", "replaced"]
ORDER_EVENTS: tuple[str, ...] = get_args(OrderEventName)
Side = Literal["buy", "sell"]
OrderKind = Literal["entry", "stop", "exit"]  # what an order is for

# Why an order event happened, as a closed code another service may branch on (``reason`` is the human text).
ReasonCode = Literal[
    "NONE",  # nothing to explain (an acceptance, a fill)
    "DRY_RUN",  # DRY_RUN: no order sent
    "REPLACES",  # a replacement stop is live (native replace, or cancel-and-new once the cancel was confirmed)
    "REPROTECT",  # the new stop was refused after the old one was cancelled: re-protected at the last accepted level
    "CANCEL_INTENT",  # cancelled by a StopIntent(cancel)
    "EXIT_INTENT",  # cancelled so that an exit can sell the shares
    "CANCELLED_BEFORE_SUBMIT",  # cancelled while only in the outbox
    "BROKER_CANCELED",  # cancelled by the broker (or outside the system)
    "EXPIRED",  # the broker expired it (time in force)
    "TARGET_NOT_OPEN",  # replace/cancel of an order that is done (filled, cancelled, ...)
    "TARGET_UNKNOWN",  # replace of an order the executor never made
    "INVALID_STOP_INTENT",
    "NO_POSITION",  # exit with nothing held
    "STOP_FILLED_FIRST",  # exit dropped: the stop sold the shares before its cancel landed
    "FILLED_BEFORE_REPLACE",  # replacement rejected: the old order filled first (Alpaca's documented race)
    "REPLACE_REFUSED",  # the broker refused the replacement (the old order stays live)
    "REPLACE_UNCHANGED",  # the replacement changed nothing (Alpaca 403 "order parameters are not changed")
    "INSUFFICIENT_QTY",  # Alpaca 403 40310000: shares held by other orders
    "BUYING_POWER",  # Alpaca 403 40310000: insufficient buying power
    "SUB_PENNY",  # Alpaca 422 42210000: sub-penny increment
    "STOP_SIDE",  # Alpaca 422 42210000: stop on the wrong side of the price (a replace: the old stop stays live)
    "STOP_BREACHED",  # a first stop / re-protection refused as through the market (STOP_SIDE): the executor sells at market
    "WASH_TRADE",  # Alpaca 403: potential wash trade
    "PROTECTION_REPAIR",  # cancelled or placed by the executor to make the stops cover the position exactly
    "BROKER_REJECTED",  # any other refusal or rejection by the broker
    "TRADING_HALTED",  # an exit or a stop replace refused: the trading state is HALTED (shared.controls)
    "STOP_RESTORED",  # an exit ended without selling (refused, cancelled, expired): its cancelled stop is being put back
    "RESTORES",  # a stop that puts back one cancelled for an exit that did not sell (``reason``: restores <id>)
]
REASON_CODES: tuple[str, ...] = get_args(ReasonCode)


class _OrderEventFields(Message, frozen=True, kw_only=True):
    event_id: str
    event: OrderEventName
    mode: str
    intent_id: str
    client_order_id: str
    broker_order_id: str = ""
    symbol: Symbol
    side: Side
    kind: OrderKind
    qty: Shares
    order_type: str = "market"
    stop_price: float | None = None  # stop orders: the trigger; entries: the intent's protective stop
    limit_price: float | None = None
    filled_qty: int = 0  # cumulative
    fill_qty: int = 0  # this fill
    fill_price: float | None = None
    avg_fill_price: float | None = None
    trade_id: str = ""
    fees: float = 0.0
    reason: str = ""
    trade_date: TradeDate
    ts: int


@register
class OrderEvent(_OrderEventFields, frozen=True, kw_only=True, tag="order_event"):
    """One broker order event, published once (fills de-duplicated by ``trade_id``).

    Versions: v1 carried only the free-text ``reason``; v2 (current) adds ``reason_code`` (closed:
    ``REASON_CODES``; consumers branch on it, never on ``reason``) and ``replaces_client_order_id``
    (a ``replaced`` event: the order it replaces). v1 entries are upcast on decode (``upcast_order_event_v1``).
    """

    VERSION = 2
    v: int = 2
    reason_code: ReasonCode = "NONE"
    replaces_client_order_id: str = ""


class OrderEventV1(_OrderEventFields, frozen=True, kw_only=True, tag="order_event"):
    """OrderEvent as written before v2 (free-text reason only). Decoded only to be upcast."""

    VERSION = 1
    v: int = 1


def reason_code_of_v1(event: str, reason: str) -> ReasonCode:
    """The code a v1 event's text stood for (the executor's v1 f-strings); the only reader of that text."""
    text = reason.strip()
    if text.startswith("DRY_RUN"):
        return "DRY_RUN"
    if event == "replaced" or text.startswith("replaces "):
        return "REPLACES"
    if text.startswith("cancel_intent="):
        return "CANCEL_INTENT"
    if text.startswith("exit_intent="):
        return "EXIT_INTENT"
    if text.startswith("TARGET_NOT_OPEN"):
        return "TARGET_UNKNOWN" if text.endswith("unknown") else "TARGET_NOT_OPEN"
    for code in ("INSUFFICIENT_QTY", "NO_POSITION", "STOP_FILLED_FIRST", "INVALID_STOP_INTENT"):
        if code in text:
            return code  # type: ignore[return-value]
    if event == "cancelled":
        return "EXPIRED" if text == "expired" else "BROKER_CANCELED" if text else "NONE"
    if event == "rejected":
        return "BROKER_REJECTED"
    return "NONE"


def upcast_order_event_v1(old: OrderEventV1) -> OrderEvent:
    fields = {f: getattr(old, f) for f in old.__struct_fields__ if f not in ("v", "type")}
    replaces = old.reason.strip()[len("replaces "):].split(";")[0].strip() if old.event == "replaced" else ""
    return OrderEvent(**fields, reason_code=reason_code_of_v1(old.event, old.reason), replaces_client_order_id=replaces)


register_legacy(OrderEventV1, upcast_order_event_v1)
