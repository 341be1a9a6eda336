"""The simulator's order types bar by bar (pure: a SimState and bars, no Redis)."""

from __future__ import annotations

import pytest

from services.executor.broker import OrderRequest
from services.executor.simulator import SimCosts, SimState, Simulator
from shared.schemas import BarRow


def bar(ts: int, o: float, h: float, lo: float, c: float, volume: float = 1_000_000) -> BarRow:
    return BarRow(symbol="AAA", ts=ts, open=o, high=h, low=lo, close=c, volume=volume)


def sim_with(side: str, limit: float, *, held: int = 0, slippage_bps: float = 25.0) -> Simulator:
    st = SimState(cash=1_000_000.0)
    s = Simulator(st, SimCosts(slippage_bps=slippage_bps))
    if held:
        s.submit(OrderRequest(client_order_id="seed", symbol="AAA", side="buy", qty=held))
        s.on_bars([bar(1, 50.0, 50.0, 50.0, 50.0)])
    s.set_time(1)
    s.submit(OrderRequest(client_order_id="lim", symbol="AAA", side=side, qty=100, order_type="limit", limit_price=limit))
    return s


def fills(s: Simulator) -> list[float]:
    return [f.price for f in s.get_by_client_id("lim").fills]


@pytest.mark.parametrize("o,h,lo,want", [
    (51.0, 51.5, 49.5, 50.0),   # traded through from above: at the limit, not at the low, no slippage
    (49.0, 49.8, 48.5, 49.0),   # opened below the limit (a favourable gap): at the open
    (50.0, 51.0, 49.9, 50.0),   # opened at the limit: marketable at the open
    (51.0, 51.5, 50.0, None),   # only touched the limit: no fill
    (51.0, 51.5, 50.2, None),   # never reached it
])
def test_buy_limit(o: float, h: float, lo: float, want: float | None) -> None:
    s = sim_with("buy", 50.0)
    s.on_bars([bar(10, o, h, lo, (h + lo) / 2)])
    assert fills(s) == ([] if want is None else [want])
    assert all(p <= 50.0 for p in fills(s))  # never worse than the limit


@pytest.mark.parametrize("o,h,lo,want", [
    (49.0, 50.5, 48.5, 50.0),   # traded through from below: at the limit, not at the high
    (51.0, 51.5, 50.5, 51.0),   # gapped above the limit: at the open
    (49.0, 50.0, 48.5, None),   # only touched it
])
def test_sell_limit(o: float, h: float, lo: float, want: float | None) -> None:
    s = sim_with("sell", 50.0, held=100)
    s.on_bars([bar(10, o, h, lo, (h + lo) / 2)])
    assert fills(s) == ([] if want is None else [want])
    assert all(p >= 50.0 for p in fills(s))


def test_an_unfilled_limit_stays_open_and_fills_on_a_later_bar() -> None:
    s = sim_with("buy", 50.0)
    s.on_bars([bar(10, 51.0, 51.5, 50.3, 51.0)])
    assert s.get_by_client_id("lim").status == "new" and [o.client_order_id for o in s.list_open()] == ["lim"]
    s.on_bars([bar(11, 50.6, 50.8, 49.7, 50.0)])
    v = s.get_by_client_id("lim")
    assert v.status == "filled" and fills(s) == [50.0] and s.state.positions["AAA"].qty == 100
    assert s.state.cash == pytest.approx(1_000_000.0 - 100 * 50.0)
