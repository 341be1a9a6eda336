"""What the Alpaca stand-in (``standins/alpaca_api.py``) knows of Alpaca's trading API: the order statuses,
the error bodies, the documented behaviours (each a switch of ``Behaviours``), and the order and position
records with their JSON. Sources as in ``alpaca_api.py``: [orders] docs "Orders at Alpaca"; [api] the
trading API reference and ``oas/trading/openapi.yaml`` (alpacahq/alpaca-docs); [py] alpaca-py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

# [orders] "Order Lifecycle": every status an order can have; the open ones are those GET ?status=open lists.
STATUSES = ("new", "partially_filled", "filled", "done_for_day", "canceled", "expired", "replaced", "pending_cancel",
            "pending_replace", "accepted", "pending_new", "accepted_for_bidding", "stopped", "rejected", "suspended",
            "calculated", "held")
OPEN_STATES = {"new", "accepted", "pending_new", "partially_filled", "pending_cancel", "pending_replace", "held",
               "accepted_for_bidding", "done_for_day", "stopped", "suspended", "calculated"}
# [api] patchOrderByOrderId: "Order cannot be replaced when the status is accepted, pending_new, pending_cancel or
# pending_replace" (plus the exchange-side holds).
NO_REPLACE = {"accepted", "pending_new", "pending_cancel", "pending_replace", "accepted_for_bidding", "held"}
# Routed to the exchange: these work against the market (the old order of a pending replace or cancel is still live).
WORKING = {"new", "partially_filled", "pending_replace", "pending_cancel"}

# Alpaca's error bodies, by case: (HTTP status, code, message). Sources in the comments.
ERRORS: dict[str, tuple[int, int, str]] = {
    "not_found": (404, 40410000, "order not found"),  # [api] getOrderByOrderID
    "position_not_found": (404, 40410000, "position does not exist"),
    "endpoint": (404, 40400000, "endpoint not found"),
    "duplicate_client_id": (422, 40010001, "client_order_id must be unique"),  # [py] tests' recorded payload
    "insufficient_qty": (403, 40310000, "insufficient qty available for order (requested: {req}, available: {avail})"),
    "buying_power": (403, 40310000, "insufficient buying power"),  # [orders] "Buying Power"
    "unchanged": (403, 40310000, "order parameters are not changed"),  # PATCH that changes nothing
    "sub_penny": (422, 42210000,  # [orders] "Sub-penny increments for limit/stop orders"
                  "invalid {field} {price}. sub-penny increment does not fulfill minimum pricing criteria"),
    "stop_side": (422, 42210000, "stop price must not be greater than base price / 1.001 ({base})"),
    "stop_side_buy": (422, 42210000, "stop price must not be less than base price * 1.001 ({base})"),
    "not_replaceable": (422, 42210000, "unable to replace order, order isn't sent to exchange yet"),
    "final": (422, 42210000, 'order is already in "{status}" state'),
    "not_cancelable": (422, 42210000, 'order is not cancelable while in "{status}" state'),  # [orders] pending_replace
    "wash_trade": (403, 40310000, "potential wash trade detected. use complex orders"),
    "rate_limit": (429, 42910000, "rate limit exceeded"),  # [api] "Rate Limit": 200/min per key, HTTP 429
    "no_shorting": (403, 40310000, "account is not allowed to short"),
}


@dataclass
class Behaviours:
    """Alpaca's documented behaviours, each switchable per test. Defaults are Alpaca's; 0 steps = at once."""

    market_hours: bool = True  # [orders] Time in Force/Lifecycle: closed market -> accepted, routed at the open
    day_expiry: bool = True  # [orders] "day": unfilled day orders expire at the close (event expired)
    gtc_age_days: int = 90  # [py] Order.expires_at: GTC orders are cancelled once aged (0: never)
    done_for_day: bool = False  # [orders] done_for_day: GTC orders rest at the close, resume at the next open
    sub_penny: bool = True  # [orders] Sub-penny increments: >= $1 two decimals, < $1 four; 422 42210000
    stop_side: bool = True  # a sell stop at/above the last price (buy stop below it) is refused, 422
    buying_power: bool = True  # [orders] Buying Power: buys need cash net of open buy orders; 403 40310000
    related_orders: bool = True  # the 403 insufficient-qty body lists related_orders (alpaca-py's payload: none)
    unchanged_patch: bool = True  # a PATCH that changes nothing: 403 40310000 "order parameters are not changed"
    # asynchronous transitions last N steps (each on_bars call, or step(), is one; settle() ends them all)
    replace_steps: int = 0  # [api] patchOrderByOrderId is asynchronous: pending_replace for N steps
    cancel_steps: int = 0  # [orders] pending_cancel for N steps before canceled
    pending_new_steps: int = 0  # [orders] pending_new for N steps before new (rare)
    partial_fill_pct: float = 0.0  # at most this % of a bar's volume fills per bar (0: whole order)
    rate_limit_per_min: int = 200  # [api] Rate Limit: 200 requests per minute per key, then 429
    shorting_enabled: bool = False  # account flag; without it a sell beyond the position is refused


def num(x: float | int | None) -> str | None:
    """A number as Alpaca writes it in JSON: a string (integers without a decimal point)."""
    return None if x is None else (str(int(x)) if float(x).is_integer() else repr(float(x)))


def iso(dt: datetime | None) -> str | None:
    """A timestamp as Alpaca writes it: ISO 8601 UTC with microseconds and ``Z``."""
    return None if dt is None else dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def decimals(text: str) -> int:
    """How many decimals a price is written with (99: not a number)."""
    try:
        exp = Decimal(text).normalize().as_tuple().exponent
    except InvalidOperation:
        return 99
    return -exp if isinstance(exp, int) and exp < 0 else 0


@dataclass
class Order:
    """One order as the stand-in keeps it; ``json`` is Alpaca's order object [api]."""

    id: str
    client_order_id: str
    symbol: str
    side: str
    qty: int
    type: str
    time_in_force: str
    created_at: datetime
    stop_price: float | None = None
    limit_price: float | None = None
    status: str = "accepted"
    filled_qty: int = 0
    filled_avg_price: float | None = None
    updated_at: datetime | None = None
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    expired_at: datetime | None = None
    replaced_at: datetime | None = None
    failed_at: datetime | None = None
    expires_at: datetime | None = None
    session: str = ""  # the session a day order lives in (it expires at that session's close)
    replaced_by: str | None = None
    replaces: str | None = None
    stick_cancel: bool = False
    # asynchronous transitions in flight: (kind, steps left); kind "replace" | "cancel" | "route"
    pending: tuple[str, int] | None = None
    resume: str = ""  # the status to return to after done_for_day / a refused replace

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id, "client_order_id": self.client_order_id, "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at or self.created_at), "submitted_at": iso(self.created_at),
            "filled_at": iso(self.filled_at), "expired_at": iso(self.expired_at), "expires_at": iso(self.expires_at),
            "canceled_at": iso(self.canceled_at), "failed_at": iso(self.failed_at),
            "replaced_at": iso(self.replaced_at), "replaced_by": self.replaced_by,
            "replaces": self.replaces, "asset_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, self.symbol)),
            "symbol": self.symbol, "asset_class": "us_equity", "notional": None, "qty": num(self.qty),
            "filled_qty": num(self.filled_qty), "filled_avg_price": num(self.filled_avg_price), "order_class": "simple",
            "order_type": self.type, "type": self.type, "side": self.side, "time_in_force": self.time_in_force,
            "limit_price": num(self.limit_price), "stop_price": num(self.stop_price), "status": self.status,
            "extended_hours": False, "legs": None, "trail_percent": None, "trail_price": None, "hwm": None,
            "position_intent": "buy_to_open" if self.side == "buy" else "sell_to_close",
        }


@dataclass
class Position:
    """One position: shares, average entry price, last price."""

    qty: int = 0
    avg: float = 0.0
    price: float = 0.0
