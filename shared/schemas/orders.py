"""Intents (risk and exits -> executor), rejections, and order events."""

from __future__ import annotations

from typing import Literal

from .base import Message, register
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


@register
class Rejection(Message, frozen=True, kw_only=True, tag="rejection"):
    """A refused entry with ordered, stable reason codes."""

    rejection_id: str
    source: str  # risk | executor
    symbol: Symbol
    trade_date: TradeDate
    reasons: list[str]
    candidate_id: str = ""
    intent_id: str = ""
    detail: str = ""
    ts: int = 0


ORDER_EVENTS = ("accepted", "partially_filled", "filled", "cancelled", "rejected", "replaced")


@register
class OrderEvent(Message, frozen=True, kw_only=True, tag="order_event"):
    """One broker order event, published once (fills de-duplicated by ``trade_id``)."""

    event_id: str
    event: str  # one of ORDER_EVENTS
    mode: str
    intent_id: str
    client_order_id: str
    broker_order_id: str = ""
    symbol: Symbol
    side: str  # buy | sell
    kind: str  # entry | stop | exit
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
