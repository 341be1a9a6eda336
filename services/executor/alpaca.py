"""Alpaca adapter: alpaca-py ``TradingClient`` behind the ``Broker`` protocol.

The only module that imports the broker SDK for trading. Errors are mapped to typed
``BrokerError``s from Alpaca's JSON error bodies (``{"code": ..., "message": ...}``):
422 "client_order_id must be unique" -> DuplicateClientOrderId; 403 "insufficient qty
available for order" -> InsufficientQty (with ``related_orders``); 422 on PATCH -> ReplaceForbidden
(or NotCancelable when the order is already final); 404 -> NotFound; 429, 5xx, timeouts and
connection errors -> UnknownOutcome (the caller looks the order up by client id).
alpaca-py's own retry loop (3 s sleeps on 429/504) is switched off: the executor decides.
Error details are redacted; the keys never reach a message, log line or exception.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import (
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopOrderRequest,
)

from shared.logs import redact

from .broker import (
    AccountView,
    BrokerError,
    BrokerRejected,
    DuplicateClientOrderId,
    InsufficientQty,
    NotCancelable,
    NotFound,
    OrderRequest,
    OrderView,
    PositionView,
    ReplaceForbidden,
    UnknownOutcome,
)
from .settings import BrokerSettings


def _val(x: Any) -> str:
    return str(getattr(x, "value", x)) if x is not None else ""


def _num(x: Any) -> float | None:
    return None if x is None or x == "" else float(x)


def view_of(o: Any) -> OrderView:
    """An alpaca-py ``Order`` as an ``OrderView``."""
    otype = o.order_type if o.order_type is not None else o.type
    return OrderView(broker_order_id=str(o.id), client_order_id=o.client_order_id, symbol=o.symbol or "",
                     side=_val(o.side), qty=int(float(o.qty or 0)), order_type=_val(otype), status=_val(o.status),
                     filled_qty=int(float(o.filled_qty or 0)), filled_avg_price=_num(o.filled_avg_price),
                     stop_price=_num(o.stop_price), limit_price=_num(o.limit_price),
                     replaced_by=str(o.replaced_by) if o.replaced_by else "")


def _body(exc: APIError) -> dict[str, Any]:
    try:
        body = json.loads(str(exc._error))  # noqa: SLF001 - alpaca-py keeps the response text here
        return body if isinstance(body, dict) else {}
    except (ValueError, TypeError):
        return {}


def map_error(exc: Exception, *, replacing: bool = False) -> BrokerError:
    """A typed BrokerError for an alpaca-py/requests exception (details redacted)."""
    if isinstance(exc, requests.exceptions.RequestException):
        return UnknownOutcome(redact(f"{type(exc).__name__}"))
    if not isinstance(exc, APIError):
        return UnknownOutcome(redact(type(exc).__name__))
    status = exc.status_code or 0
    body = _body(exc)
    msg = redact(str(body.get("message", ""))[:200])
    if status == 422 and "client_order_id must be unique" in msg:
        return DuplicateClientOrderId(msg)
    if status == 403 and "insufficient qty" in msg:
        return InsufficientQty(msg, related=[str(x) for x in body.get("related_orders") or []])
    if status == 404:
        return NotFound(msg)
    if status == 429 or status >= 500:
        return UnknownOutcome(f"HTTP {status} {msg}")
    if status == 422 and "already in" in msg:
        return NotCancelable(msg)
    if status == 422 and replacing:
        return ReplaceForbidden(msg)
    return BrokerRejected(f"HTTP {status} {msg}")


def _call(fn, *args: Any, replacing: bool = False, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except (APIError, requests.exceptions.RequestException) as exc:
        raise map_error(exc, replacing=replacing) from None


class AlpacaBroker:
    """``Broker`` over alpaca-py's TradingClient (paper or live; ``base_url`` may be a local stand-in)."""

    name = "alpaca"
    external = True

    def __init__(self, client: TradingClient) -> None:
        self.client = client

    @classmethod
    def from_settings(cls, bs: BrokerSettings, *, paper: bool) -> AlpacaBroker:
        key = bs.apca_api_key_id.get_secret_value() if bs.apca_api_key_id else None
        secret = bs.apca_api_secret_key.get_secret_value() if bs.apca_api_secret_key else None
        return cls.connect(key, secret, base_url=bs.apca_api_base_url, paper=paper, timeout_s=bs.broker_timeout_s)

    @classmethod
    def connect(cls, key: str | None, secret: str | None, *, base_url: str, paper: bool, timeout_s: float) -> AlpacaBroker:
        client = TradingClient(key, secret, paper=paper, url_override=base_url.rstrip("/"))
        # every request gets a timeout (alpaca-py sets none); no SDK-side retries
        client._session.request = functools.partial(client._session.request, timeout=timeout_s)  # type: ignore[method-assign]  # noqa: SLF001
        client._retry_codes = []  # noqa: SLF001
        return cls(client)

    def submit(self, req: OrderRequest) -> OrderView:
        common = dict(symbol=req.symbol, qty=req.qty, side=OrderSide(req.side), client_order_id=req.client_order_id,
                      time_in_force=TimeInForce(req.time_in_force))
        if req.order_type == "stop":
            order = StopOrderRequest(stop_price=req.stop_price, **common)
        elif req.order_type == "limit":
            order = LimitOrderRequest(limit_price=req.limit_price, **common)
        else:
            order = MarketOrderRequest(**common)
        return view_of(_call(self.client.submit_order, order))

    def get_by_client_id(self, client_order_id: str) -> OrderView:
        return view_of(_call(self.client.get_order_by_client_id, client_order_id))

    def get(self, broker_order_id: str) -> OrderView:
        return view_of(_call(self.client.get_order_by_id, broker_order_id))

    def list_open(self) -> list[OrderView]:
        rows = _call(self.client.get_orders, GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=500))
        return [view_of(o) for o in rows]

    def replace(self, broker_order_id: str, *, qty: int, stop_price: float | None, limit_price: float | None,
                new_client_order_id: str) -> OrderView:
        req = ReplaceOrderRequest(qty=qty, stop_price=stop_price, limit_price=limit_price, client_order_id=new_client_order_id)
        return view_of(_call(self.client.replace_order_by_id, broker_order_id, req, replacing=True))

    def cancel(self, broker_order_id: str) -> None:
        _call(self.client.cancel_order_by_id, broker_order_id)

    def positions(self) -> list[PositionView]:
        rows = _call(self.client.get_all_positions)
        return [PositionView(symbol=p.symbol, qty=int(float(p.qty)), avg_entry_price=float(p.avg_entry_price),
                             current_price=float(p.current_price or 0.0)) for p in rows]

    def account(self) -> AccountView:
        a = _call(self.client.get_account)
        return AccountView(equity=float(a.equity or 0.0), cash=float(a.cash or 0.0), buying_power=float(a.buying_power or 0.0))
