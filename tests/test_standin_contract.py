"""Contract: every response and trade update the Alpaca stand-in produced in a session that walks its
behaviours is checked against the official OpenAPI schemas (``tests/fixtures/alpaca_openapi_subset.json``:
required fields, property types, nullability, enums copied as data from ``oas/trading/openapi.yaml``; the
trade_updates event set from the streaming page) and parsed by alpaca-py's own models."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.models import Calendar, Clock, Order, Position, TradeAccount, TradeUpdate
from alpaca.trading.requests import (
    GetCalendarRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopOrderRequest,
)

from standins.alpaca_api import AlpacaStandIn, Behaviours
from tests.executor_helpers import KEY, SECRET
from tests.test_standin_market import Clock as SetClock
from tests.test_standin_market import bar

SPEC = json.loads((Path(__file__).parent / "fixtures" / "alpaca_openapi_subset.json").read_text())
PY_TYPES = {"string": str, "boolean": bool, "integer": int, "number": (int, float), "array": list, "object": dict}


def check(schema_name: str, body: Any, where: str) -> None:
    schema = SPEC["schemas"][schema_name]
    assert isinstance(body, dict), where
    for f in schema["required"]:
        assert f in body, f"{where}: {schema_name} requires {f}"
    for name, prop in schema["properties"].items():
        if name not in body:
            continue
        v = body[name]
        if v is None:
            assert prop.get("nullable") or name in schema["null_in_example"], f"{where}: {schema_name}.{name} is null"
            continue
        assert isinstance(v, PY_TYPES[prop["type"]]), f"{where}: {schema_name}.{name}={v!r} is not {prop['type']}"
        if "enum" in prop:
            assert v in prop["enum"], f"{where}: {schema_name}.{name}={v!r} not in {prop['enum']}"
        if name == "legs" and v:
            for leg in v:
                check("Order", leg, where + ".legs")


def run_session(s: AlpacaStandIn, clock: SetClock) -> None:
    """Walk the behaviours: fills, partial fills, replace (async and refused), cancel (pending, refused),
    expiry, queued after-hours orders, validations, errors."""
    c = TradingClient(KEY, SECRET, paper=True, url_override=s.url)
    c._retry_codes = []  # noqa: SLF001
    c.get_account()
    c.get_clock()
    c.get_calendar(GetCalendarRequest(start="2018-03-01", end="2018-03-06"))
    s.on_bars([bar("AAA", "10:00", 50.0, 50.2, 49.9, 50.0)])
    c.submit_order(MarketOrderRequest(symbol="AAA", qty=150, side=OrderSide.BUY, time_in_force=TimeInForce.DAY,
                                      client_order_id="buy"))
    s.on_bars([bar("AAA", "10:01", 50.1, 50.3, 50.0, 50.2, volume=10_000)])  # partial (1% of volume)
    s.on_bars([bar("AAA", "10:02", 50.2, 50.4, 50.1, 50.3, volume=10_000)])
    c.get_all_positions()
    c.get_open_position("AAA")
    stop = c.submit_order(StopOrderRequest(symbol="AAA", qty=100, side=OrderSide.SELL, time_in_force=TimeInForce.GTC,
                                           stop_price=48.0, client_order_id="stop1"))
    for req in (StopOrderRequest(symbol="AAA", qty=10, side=OrderSide.SELL, time_in_force=TimeInForce.GTC,
                                 stop_price=48.005, client_order_id="subpenny"),  # 422 sub-penny
                StopOrderRequest(symbol="AAA", qty=10, side=OrderSide.SELL, time_in_force=TimeInForce.GTC,
                                 stop_price=51.0, client_order_id="above"),  # 422 stop side
                MarketOrderRequest(symbol="AAA", qty=5_000_000, side=OrderSide.BUY, time_in_force=TimeInForce.DAY,
                                   client_order_id="huge"),  # 403 buying power
                MarketOrderRequest(symbol="AAA", qty=100, side=OrderSide.SELL, time_in_force=TimeInForce.DAY,
                                   client_order_id="held")):  # 403 insufficient qty
        with contextlib.suppress(APIError):
            c.submit_order(req)
    for req in (ReplaceOrderRequest(stop_price=48.0),):  # unchanged: 403
        with contextlib.suppress(APIError):
            c.replace_order_by_id(stop.id, req)
    new = c.replace_order_by_id(stop.id, ReplaceOrderRequest(stop_price=48.5, client_order_id="stop2"))
    with contextlib.suppress(APIError):
        c.cancel_order_by_id(stop.id)  # pending_replace: refused
    s.on_bars([bar("AAA", "10:03", 50.3, 50.4, 50.2, 50.3)])  # the replace settles
    c.get_order_by_id(new.id)
    c.cancel_order_by_id(new.id)  # pending_cancel, then canceled on the next bar
    s.on_bars([bar("AAA", "10:04", 50.3, 50.4, 50.2, 50.3)])
    race = c.submit_order(StopOrderRequest(symbol="AAA", qty=100, side=OrderSide.SELL, time_in_force=TimeInForce.GTC,
                                           stop_price=49.0, client_order_id="race"))
    c.replace_order_by_id(race.id, ReplaceOrderRequest(stop_price=49.5, client_order_id="race2"))
    s.on_bars([bar("AAA", "10:05", 48.9, 49.0, 48.5, 48.6)])  # fills first: the replacement is rejected
    c.submit_order(LimitOrderRequest(symbol="AAA", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY,
                                     limit_price=1.0, client_order_id="lowball"))
    clock.set("2018-03-02", "17:00")
    c.get_clock()
    c.submit_order(MarketOrderRequest(symbol="AAA", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY,
                                      client_order_id="queued"))
    c.get_orders()
    c.get_order_by_client_id("queued")
    with contextlib.suppress(APIError):
        c.get_order_by_client_id("nope")


def test_every_response_and_trade_update_matches_the_openapi_schemas_and_alpaca_pys_models() -> None:
    clock = SetClock("2018-03-02", "10:00")
    with AlpacaStandIn(clock=clock, behaviours=Behaviours(replace_steps=1, cancel_steps=1, partial_fill_pct=1.0)) as s:
        run_session(s, clock)
        responses, updates = list(s.responses), list(s.updates)
    statuses = {st for _, _, st, _ in responses}
    assert {200, 204, 403, 404, 422} <= statuses
    seen_schemas = set()
    for method, path, status, body in responses:
        where = f"{method} {path} {status}"
        if status >= 400:
            assert isinstance(body.get("code"), int) and isinstance(body.get("message"), str), where
            continue
        if status == 204:
            assert body is None, where
            continue
        if path == "/v2/account":
            check("Account", body, where)
            TradeAccount(**body)
            seen_schemas.add("Account")
        elif path == "/v2/clock":
            check("Clock", body, where)
            Clock(**body)
            seen_schemas.add("Clock")
        elif path == "/v2/calendar":
            for d in body:
                check("Calendar", d, where)
                Calendar(**d)
            seen_schemas.add("Calendar")
        elif path.startswith("/v2/positions"):
            for p in body if isinstance(body, list) else [body]:
                check("Position", p, where)
                Position(**p)
            seen_schemas.add("Position")
        elif path.startswith("/v2/orders"):
            for o in body if isinstance(body, list) else [body]:
                check("Order", o, where)
                Order(**o)
            seen_schemas.add("Order")
    assert seen_schemas == {"Account", "Clock", "Calendar", "Position", "Order"}
    events = SPEC["trade_update_events"]
    for u in updates:
        assert u["event"] in events["events"], u["event"]
        for f in events["fields"].get(u["event"], []):
            assert f in u, (u["event"], f)
        check("Order", u["order"], f"trade_update {u['event']}")
        TradeUpdate(**u)
    produced = {u["event"] for u in updates}
    assert {"new", "accepted", "partial_fill", "fill", "pending_replace", "replaced", "pending_cancel", "canceled",
            "order_cancel_rejected", "rejected"} <= produced, produced
    assert {o["status"] for _, p, st, body in responses if p.startswith("/v2/orders") and st == 200
            for o in (body if isinstance(body, list) else [body])} <= set(SPEC["enums"]["OrderStatus"])
