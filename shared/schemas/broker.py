"""Broker snapshots on ``avwap:broker``: account, positions, open orders."""

from __future__ import annotations

import msgspec

from .base import Message, register
from .types import Symbol, TradeDate


class BrokerPosition(msgspec.Struct, frozen=True, kw_only=True):
    symbol: Symbol
    qty: int
    avg_entry_price: float
    market_value: float = 0.0
    current_price: float = 0.0


class BrokerOrder(msgspec.Struct, frozen=True, kw_only=True):
    client_order_id: str
    broker_order_id: str
    symbol: Symbol
    side: str
    order_type: str  # market | limit | stop | stop_limit
    qty: int
    status: str
    filled_qty: int = 0
    stop_price: float | None = None
    limit_price: float | None = None


@register
class BrokerSnapshot(Message, frozen=True, kw_only=True, tag="broker_snapshot"):
    snapshot_id: str
    mode: str
    trade_date: TradeDate
    ts: int
    equity: float
    cash: float
    buying_power: float
    positions: list[BrokerPosition] = []
    open_orders: list[BrokerOrder] = []
    reconciled: bool = True
    reason: str = "periodic"  # start | pre_market | open | periodic | close | reconcile
