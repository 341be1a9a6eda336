"""The trading stand-in's bar-driven market, hours and calendar, through the real alpaca-py client."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest, StopOrderRequest

from shared.clock import dt_to_ns, ny_datetime
from shared.schemas import BarRow
from standins.alpaca_api import AlpacaStandIn, Behaviours
from tests.executor_helpers import KEY, SECRET

D = "2018-03-02"  # a Friday session


class Clock:
    """A settable stand-in clock."""

    def __init__(self, d: str, hhmm: str) -> None:
        self.now = ny_datetime(d, hhmm)

    def __call__(self) -> datetime:
        return self.now

    def set(self, d: str, hhmm: str) -> None:
        self.now = ny_datetime(d, hhmm)


def bar(sym: str, hhmm: str, o: float, h: float, lo: float, c: float, d: str = D, volume: float = 10_000) -> BarRow:
    return BarRow(symbol=sym, ts=dt_to_ns(ny_datetime(d, hhmm)), open=o, high=h, low=lo, close=c, volume=volume)


@pytest.fixture
def clock() -> Clock:
    return Clock(D, "10:00")


@pytest.fixture
def standin(clock: Clock) -> Iterator[AlpacaStandIn]:
    with AlpacaStandIn(clock=clock, behaviours=Behaviours(rate_limit_per_min=0)) as s:
        yield s


def client(s: AlpacaStandIn) -> TradingClient:
    c = TradingClient(KEY, SECRET, paper=True, url_override=s.url)
    c._retry_codes = []  # noqa: SLF001 - one answer per request
    return c


def events(s: AlpacaStandIn, coid: str) -> list[str]:
    return [u["event"] for u in s.updates if u["order"]["client_order_id"] == coid]


def test_market_order_fills_at_the_next_bars_open_and_sets_the_last_price(standin: AlpacaStandIn) -> None:
    c = client(standin)
    standin.on_bars([bar("AAA", "09:59", 50.0, 50.5, 49.8, 50.2)])  # before the order: only a price
    o = c.submit_order(MarketOrderRequest(symbol="AAA", qty=10, side=OrderSide.BUY, time_in_force=TimeInForce.DAY,
                                          client_order_id="m1"))
    assert o.status.value == "new"  # [orders] routed at once while the market is open
    standin.on_bars([bar("AAA", "10:01", 50.4, 50.9, 50.1, 50.7)])
    got = c.get_order_by_client_id("m1")
    assert got.status.value == "filled" and float(got.filled_avg_price) == 50.4
    assert standin.prices["AAA"] == 50.7
    pos = c.get_open_position("AAA")
    assert pos.qty == "10" and float(pos.current_price) == 50.7
    fill = [u for u in standin.updates if u["event"] == "fill"][0]
    assert (fill["price"], fill["qty"], fill["position_qty"]) == ("50.4", "10", "10")
    assert events(standin, "m1") == ["new", "fill"]


def test_sell_stop_triggers_on_the_low_and_a_gap_fills_at_the_open(standin: AlpacaStandIn) -> None:
    c = client(standin)
    standin.set_position("AAA", 20, 50.0)
    standin.on_bars([bar("AAA", "10:00", 50.0, 50.2, 49.9, 50.0)])
    for coid, stop in (("s1", 49.0), ("s2", 48.0)):
        c.submit_order(StopOrderRequest(symbol="AAA", qty=10, side=OrderSide.SELL, time_in_force=TimeInForce.GTC,
                                        stop_price=stop, client_order_id=coid))
    standin.on_bars([bar("AAA", "10:01", 49.5, 49.6, 49.0, 49.2)])  # low touches 49: s1 at its stop
    assert c.get_order_by_client_id("s1").status.value == "filled"
    assert float(c.get_order_by_client_id("s1").filled_avg_price) == 49.0
    assert c.get_order_by_client_id("s2").status.value == "new"
    standin.on_bars([bar("AAA", "10:02", 47.0, 47.5, 46.5, 47.2)])  # gaps through 48: at the open
    assert float(c.get_order_by_client_id("s2").filled_avg_price) == 47.0
    assert "AAA" not in standin.positions


def test_limit_fills_only_when_the_bar_trades_through_it(standin: AlpacaStandIn) -> None:
    c = client(standin)
    standin.on_bars([bar("AAA", "10:00", 50.0, 50.2, 49.9, 50.0)])
    c.submit_order(LimitOrderRequest(symbol="AAA", qty=5, side=OrderSide.BUY, time_in_force=TimeInForce.DAY,
                                     limit_price=49.5, client_order_id="l1"))
    standin.on_bars([bar("AAA", "10:01", 50.0, 50.1, 49.5, 49.8)])  # touches only
    assert c.get_order_by_client_id("l1").status.value == "new"
    standin.on_bars([bar("AAA", "10:02", 49.8, 49.9, 49.3, 49.4)])
    got = c.get_order_by_client_id("l1")
    assert got.status.value == "filled" and float(got.filled_avg_price) == 49.5


def test_partial_fills_by_volume_when_switched_on(clock: Clock) -> None:
    with AlpacaStandIn(clock=clock, behaviours=Behaviours(partial_fill_pct=1.0)) as s:
        c = client(s)
        c.submit_order(MarketOrderRequest(symbol="AAA", qty=150, side=OrderSide.BUY, time_in_force=TimeInForce.DAY,
                                          client_order_id="p1"))
        s.on_bars([bar("AAA", "10:01", 10.0, 10.1, 9.9, 10.0, volume=10_000)])  # 1% of 10,000 = 100
        assert c.get_order_by_client_id("p1").status.value == "partially_filled"
        s.on_bars([bar("AAA", "10:02", 10.2, 10.3, 10.1, 10.2, volume=10_000)])
        got = c.get_order_by_client_id("p1")
        assert got.status.value == "filled" and float(got.filled_avg_price) == pytest.approx((100 * 10.0 + 50 * 10.2) / 150, abs=1e-4)
        assert events(s, "p1") == ["new", "partial_fill", "fill"]


def test_after_the_close_orders_are_accepted_routed_at_the_next_open_and_day_orders_expire(
        standin: AlpacaStandIn, clock: Clock) -> None:
    c = client(standin)
    clock.set(D, "17:00")  # Friday after the close
    assert c.get_clock().is_open is False
    assert c.get_clock().next_open == ny_datetime("2018-03-05", "09:30")  # Monday
    o = c.submit_order(MarketOrderRequest(symbol="AAA", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY,
                                          client_order_id="q1"))
    assert o.status.value == "accepted"  # [orders] queued for the next trading day
    standin.on_bars([bar("AAA", "15:59", 50.0, 50.0, 50.0, 50.0)])  # no fill: not routed yet
    assert c.get_order_by_client_id("q1").status.value == "accepted"
    c.submit_order(LimitOrderRequest(symbol="AAA", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY,
                                     limit_price=1.0, client_order_id="q2"))
    clock.set("2018-03-05", "09:31")
    assert c.get_order_by_client_id("q1").status.value == "new"
    standin.on_bars([bar("AAA", "09:32", 51.0, 51.0, 50.5, 50.8, d="2018-03-05")])
    assert c.get_order_by_client_id("q1").status.value == "filled"
    clock.set("2018-03-05", "16:00")
    assert c.get_order_by_client_id("q2").status.value == "expired"
    assert events(standin, "q2") == ["accepted", "new", "expired"]


def test_gtc_orders_carry_expires_at_and_age_out(standin: AlpacaStandIn, clock: Clock) -> None:
    c = client(standin)
    standin.set_position("AAA", 10, 50.0)
    o = c.submit_order(StopOrderRequest(symbol="AAA", qty=10, side=OrderSide.SELL, time_in_force=TimeInForce.GTC,
                                        stop_price=40.0, client_order_id="g1"))
    assert o.expires_at is not None and o.expires_at - o.created_at == timedelta(days=90)
    clock.set("2018-03-05", "16:00")
    assert c.get_order_by_client_id("g1").status.value == "new"  # GTC survives the close
    clock.now = o.expires_at + timedelta(minutes=1)
    assert c.get_order_by_client_id("g1").status.value == "canceled"


def test_calendar_is_nyse_with_early_closes(standin: AlpacaStandIn) -> None:
    from alpaca.trading.requests import GetCalendarRequest

    days = client(standin).get_calendar(GetCalendarRequest(start="2018-11-21", end="2018-11-26"))
    assert [(str(d.date), d.close.strftime("%H:%M")) for d in days] == [
        ("2018-11-21", "16:00"), ("2018-11-23", "13:00"), ("2018-11-26", "16:00")]


def test_the_stand_in_answers_429_beyond_its_rate_limit(clock: Clock) -> None:
    import requests

    with AlpacaStandIn(clock=clock, behaviours=Behaviours(rate_limit_per_min=5)) as s:
        got = [requests.get(f"{s.url}/v2/clock", timeout=5) for _ in range(6)]
    assert [r.status_code for r in got] == [200] * 5 + [429]
    assert got[-1].json()["code"] == 42910000 and int(got[-1].headers["X-RateLimit-Reset"]) > 0


def test_documented_validations_answer_alpacas_error_bodies(standin: AlpacaStandIn) -> None:
    from alpaca.common.exceptions import APIError

    c = client(standin)
    standin.set_position("AAA", 10, 50.0)
    standin.on_bars([bar("AAA", "10:00", 50.0, 50.2, 49.9, 50.0)])

    def refused(req) -> tuple[int | None, int, str]:
        with pytest.raises(APIError) as exc:
            c.submit_order(req)
        return exc.value.status_code, exc.value.code, exc.value.message

    sell_stop = dict(symbol="AAA", qty=10, side=OrderSide.SELL, time_in_force=TimeInForce.GTC)
    assert refused(StopOrderRequest(stop_price=48.123, **sell_stop))[:2] == (422, 42210000)  # sub-penny
    assert "sub-penny" in refused(StopOrderRequest(stop_price=48.123, **sell_stop))[2]
    assert refused(StopOrderRequest(stop_price=50.5, **sell_stop))[:2] == (422, 42210000)  # above the price
    assert refused(MarketOrderRequest(symbol="AAA", qty=5_000_000, side=OrderSide.BUY,
                                      time_in_force=TimeInForce.DAY)) == (403, 40310000, "insufficient buying power")
    assert refused(MarketOrderRequest(symbol="AAA", qty=11, side=OrderSide.SELL, time_in_force=TimeInForce.DAY))[:2] == (
        403, 40310000)  # more than held, no shorting
    ok = c.submit_order(StopOrderRequest(stop_price=0.5001, **sell_stop))  # < $1: four decimals allowed
    assert ok.status.value == "new"
