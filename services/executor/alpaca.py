"""Alpaca adapter: alpaca-py ``TradingClient`` behind the ``Broker`` protocol.

The only module that imports the broker SDK for trading. Errors are mapped to typed
``BrokerError``s from Alpaca's JSON error bodies (``{"code": ..., "message": ...}``):
matched on (HTTP status, Alpaca code, message) together (``ERROR_CASES``): a 422 on PATCH is
``ReplaceForbidden`` (cancel-and-new) only when Alpaca says the order's status forbids it; a sub-penny
price, a stop on the wrong side or a wash trade is a refusal of that request (the old stop stays). 404 ->
NotFound; 429, 5xx, timeouts and connection errors -> UnknownOutcome (the caller looks the order up).
alpaca-py's own retry loop (3 s sleeps on 429/504) is switched off; every request goes through the shared
rate limiter (``rate_limit.RateLimiter``: 429s pause every caller of the key and are retried there).
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
    BuyingPower,
    DuplicateClientOrderId,
    InsufficientQty,
    NotCancelable,
    NotFound,
    OrderRequest,
    OrderView,
    PositionView,
    ReplaceForbidden,
    StopSide,
    SubPenny,
    Unchanged,
    UnknownOutcome,
    WashTrade,
)
from .rate_limit import RateLimiter
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


# Alpaca's error bodies mapped on (HTTP status, Alpaca code, message) together; first match wins. Sources:
# docs "Orders at Alpaca" (sub-penny 42210000, buying power), the trading API reference (PATCH/DELETE 422),
# alpaca-py's recorded payloads (40010001 duplicate client id, 40310000 insufficient qty). docs/executor.md
# lists each case with its test.
ERROR_CASES: tuple[tuple[int, int | None, str, type[BrokerError], bool | None], ...] = (
    # (status, code or None: any, message fragment, error, replacing: None any / True PATCH only / False not PATCH)
    (422, 40010001, "client_order_id must be unique", DuplicateClientOrderId, None),
    (403, 40310000, "insufficient qty", InsufficientQty, None),
    (403, 40310000, "insufficient buying power", BuyingPower, None),
    (403, 40310000, "order parameters are not changed", Unchanged, None),
    (403, None, "wash trade", WashTrade, None),
    (422, None, "wash trade", WashTrade, None),
    (422, 42210000, "sub-penny", SubPenny, None),
    (422, 42210000, "stop price must", StopSide, None),
    (422, 42210000, "already in", NotCancelable, None),
    (422, 42210000, "not cancelable", NotCancelable, None),
    (422, 42210000, "isn't sent to exchange yet", ReplaceForbidden, True),
    (422, 42210000, "pending", ReplaceForbidden, True),
)


def map_error(exc: Exception, *, replacing: bool = False) -> BrokerError:
    """A typed BrokerError for an alpaca-py/requests exception (details redacted)."""
    if isinstance(exc, requests.exceptions.RequestException):
        return UnknownOutcome(redact(f"{type(exc).__name__}"))
    if not isinstance(exc, APIError):
        return UnknownOutcome(redact(type(exc).__name__))
    status = exc.status_code or 0
    body = _body(exc)
    msg = redact(str(body.get("message", ""))[:200])
    code = body.get("code")
    if status == 404:
        return NotFound(msg)
    if status == 429 or status >= 500:
        return UnknownOutcome(f"HTTP {status} {msg}")
    low = msg.lower()
    for st, c, fragment, err, when in ERROR_CASES:
        if status == st and (c is None or code == c) and fragment in low and (when is None or when == replacing):
            related = [str(x) for x in body.get("related_orders") or []] if err is InsufficientQty else None
            return err(msg, related=related)
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
    def from_settings(cls, bs: BrokerSettings, *, paper: bool, limiter: RateLimiter | None = None) -> AlpacaBroker:
        key = bs.apca_api_key_id.get_secret_value() if bs.apca_api_key_id else None
        secret = bs.apca_api_secret_key.get_secret_value() if bs.apca_api_secret_key else None
        return cls.connect(key, secret, base_url=bs.apca_api_base_url, paper=paper, timeout_s=bs.broker_timeout_s,
                           limiter=limiter)

    @classmethod
    def connect(cls, key: str | None, secret: str | None, *, base_url: str, paper: bool, timeout_s: float,
                limiter: RateLimiter | None = None) -> AlpacaBroker:
        client = TradingClient(key, secret, paper=paper, url_override=base_url.rstrip("/"))
        # every request gets a timeout (alpaca-py sets none); no SDK-side retries
        client._session.request = functools.partial(client._session.request, timeout=timeout_s)  # type: ignore[method-assign]  # noqa: SLF001
        client._retry_codes = []  # noqa: SLF001
        if limiter is not None:
            limiter.install(client)
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

    def list_open(self, symbol: str | None = None) -> list[OrderView]:
        req = GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=500, symbols=[symbol] if symbol else None)
        return [view_of(o) for o in _call(self.client.get_orders, req)]

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
