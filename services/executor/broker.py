"""The broker interface every adapter implements (Alpaca, the simulator), and its error types.

Adapters speak in ``OrderRequest`` / ``OrderView`` / ``AccountView`` structs so the core never
sees an SDK object. Errors are typed so the worker can act on them:

- ``DuplicateClientOrderId`` (Alpaca 422 "client_order_id must be unique"): resolve by lookup.
- ``InsufficientQty`` (Alpaca 403 "insufficient qty available for order"): shares held by
  another order (a stop); cancel that order first.
- ``ReplaceForbidden`` (Alpaca 422 42210000 on PATCH because of the order's status): cancel-and-new.
- ``Unchanged``, ``SubPenny``, ``StopSide``, ``WashTrade``, ``BuyingPower``: definite refusals of that
  request (a refused replace keeps the old order live); ``reason`` is the event's reason code.
- ``NotFound`` (404), ``UnknownOutcome`` (timeout, 5xx, connection reset: the request may or may
  not have reached the broker; look the order up by ``client_order_id``), ``BrokerRejected``
  (any other definite refusal).
"""

from __future__ import annotations

from typing import Protocol

import msgspec

# Alpaca order statuses after which an order never changes again.
TERMINAL = frozenset({"filled", "canceled", "cancelled", "expired", "rejected", "replaced"})
# Statuses in which Alpaca refuses PATCH (replace): the order is not at the exchange yet or is changing.
REPLACE_FORBIDDEN = frozenset({"pending_new", "accepted_for_bidding", "pending_cancel", "pending_replace", "held"})


class OrderRequest(msgspec.Struct, frozen=True, kw_only=True):
    client_order_id: str
    symbol: str
    side: str  # buy | sell
    qty: int
    order_type: str = "market"  # market | limit | stop
    stop_price: float | None = None
    limit_price: float | None = None
    time_in_force: str = "day"  # entries/exits: day; stops: gtc


class Fill(msgspec.Struct, frozen=True, kw_only=True):
    trade_id: str
    qty: int
    price: float
    fees: float = 0.0
    ts: int = 0


class OrderView(msgspec.Struct, frozen=True, kw_only=True):
    """The broker's view of one order. ``fills`` lists individual fills when the adapter knows them."""

    broker_order_id: str
    client_order_id: str
    symbol: str
    side: str
    qty: int
    order_type: str
    status: str
    filled_qty: int = 0
    filled_avg_price: float | None = None
    stop_price: float | None = None
    limit_price: float | None = None
    replaced_by: str = ""  # broker id of the order that replaced this one
    fills: list[Fill] = []


class PositionView(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    qty: int
    avg_entry_price: float
    current_price: float = 0.0


class AccountView(msgspec.Struct, frozen=True, kw_only=True):
    equity: float
    cash: float
    buying_power: float


class BrokerError(Exception):
    """A broker call failed. ``code`` is a stable reason code, ``reason`` the ``OrderEvent.reason_code`` a
    refusal becomes; ``detail`` never holds a secret."""

    code = "BROKER_ERROR"
    reason = "BROKER_REJECTED"

    def __init__(self, detail: str = "", *, related: list[str] | None = None) -> None:
        super().__init__(f"{self.code}: {detail}")
        self.detail = detail
        self.related = related or []


class DuplicateClientOrderId(BrokerError):
    code = "DUPLICATE_CLIENT_ORDER_ID"


class InsufficientQty(BrokerError):
    code = reason = "INSUFFICIENT_QTY"


class BuyingPower(BrokerError):
    code = reason = "BUYING_POWER"


class SubPenny(BrokerError):
    code = reason = "SUB_PENNY"


class StopSide(BrokerError):
    code = reason = "STOP_SIDE"


class WashTrade(BrokerError):
    code = reason = "WASH_TRADE"


class Unchanged(BrokerError):
    """PATCH that changes nothing (Alpaca 403 40310000 "order parameters are not changed")."""

    code = "UNCHANGED"
    reason = "REPLACE_UNCHANGED"


class ReplaceForbidden(BrokerError):
    """PATCH refused because of the order's status (not at the exchange yet, or changing): cancel-and-new."""

    code = "REPLACE_FORBIDDEN"


class NotFound(BrokerError):
    code = "NOT_FOUND"


class NotCancelable(BrokerError):
    """DELETE refused (422): the order is final, or changing (``pending_replace`` rejects cancels)."""

    code = "NOT_CANCELABLE"


class UnknownOutcome(BrokerError):
    code = "UNKNOWN_OUTCOME"


class BrokerRejected(BrokerError):
    code = "BROKER_REJECTED"


class Broker(Protocol):
    """What the executor needs from a broker. Every method may raise a ``BrokerError``."""

    name: str
    external: bool  # True: calls leave the process (outbox before submit); False: state is in-process

    def submit(self, req: OrderRequest) -> OrderView: ...

    def get_by_client_id(self, client_order_id: str) -> OrderView: ...

    def get(self, broker_order_id: str) -> OrderView: ...

    def list_open(self, symbol: str | None = None) -> list[OrderView]: ...

    def replace(self, broker_order_id: str, *, qty: int, stop_price: float | None,
                limit_price: float | None, new_client_order_id: str) -> OrderView: ...

    def cancel(self, broker_order_id: str) -> None: ...

    def positions(self) -> list[PositionView]: ...

    def account(self) -> AccountView: ...
