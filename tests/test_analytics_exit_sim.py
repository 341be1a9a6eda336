"""The broker-independent exit simulator on crafted and real bars."""

from __future__ import annotations

import pytest

from services.analytics.exit_sim import (
    Entry,
    StopRules,
    daily_swing_low,
    five_minute_bars,
    intraday_higher_low,
    simulate_exit,
)
from shared.clock import calendar, ny_trade_date
from shared.schemas import BarRow
from tests.test_analytics_helpers import at, close_ns, daily_bar, real_store

DAYS = calendar().sessions_in_range("2018-10-01", "2018-10-12")


def crafted_daily() -> list[BarRow]:
    rows = [(10.0, 10.5, 9.8, 10.2), (10.2, 10.6, 9.5, 10.4), (10.4, 10.9, 10.0, 10.8), (10.8, 11.2, 10.5, 11.0),
            (11.0, 11.3, 10.4, 11.1), (11.1, 11.5, 10.9, 11.4), (10.2, 10.4, 10.0, 10.1), (10.1, 10.3, 9.0, 9.2)]
    return [daily_bar("T", d, *r) for d, r in zip(DAYS, rows, strict=False)]


def test_daily_swing_low_ratchet_window_and_gap_fill() -> None:
    bars = crafted_daily()
    res = simulate_exit(Entry(symbol="T", ts=close_ns(DAYS[3]), price=10.8, qty=100, initial_stop=9.0), bars)
    # on entry: swing low of Oct 2 (9.5) - 0.10; not live until the next window opens
    desired = [(c.stop, c.source) for c in res.changes if not c.live]
    assert desired == [(9.0, "initial"), (9.4, "daily_swing_low"), (10.3, "daily_swing_low")]
    w = [calendar().window_bounds(d, "09:35", "15:55")[0] for d in DAYS]
    live = [(c.ts, c.stop) for c in res.changes if c.live]
    assert live == [(w[4], 9.4), (w[6], 10.3)]  # a stop from D's bar goes live at D+1's window open
    assert res.exited and res.exit_date == DAYS[6]
    assert res.exit_price == pytest.approx(10.2)  # opened below the 10.30 stop: filled at the open
    assert res.exit_reason == "STOP_TRIGGERED"


def test_no_exit_while_bars_hold_and_stop_never_falls() -> None:
    bars = crafted_daily()[:6]
    res = simulate_exit(Entry(symbol="T", ts=close_ns(DAYS[3]), price=10.8, qty=100, initial_stop=9.0), bars)
    assert not res.exited and res.desired_stop == pytest.approx(10.3) and res.live_stop == pytest.approx(9.4)
    stops = [c.stop for c in res.changes if not c.live]
    assert stops == sorted(stops)


def _minute_bars(day: str, lows5: list[float]) -> list[BarRow]:
    out = []
    start = at(day, "09:30")
    for j, lo in enumerate(lows5):
        for k in range(5):
            ts = start + (5 * j + k + 1) * 60_000_000_000
            out.append(BarRow(symbol="T", ts=ts, open=lo + 0.1, high=lo + 0.3, low=lo, close=lo + 0.2, volume=100.0))
    return out


def test_intraday_higher_low_on_five_minute_bars() -> None:
    day = DAYS[0]
    lows = [10.0, 9.8, 9.9, 9.7, 9.9, 10.1, 9.95, 10.2, 10.3, 9.7]
    minutes = _minute_bars(day, lows)
    b5 = five_minute_bars(minutes)
    assert [b.low for b in b5] == lows and b5[0].ts == at(day, "09:35")
    assert intraday_higher_low(b5[:9], 6).low == pytest.approx(9.95)
    assert intraday_higher_low(b5[:5], 6) is None  # fewer than hl_min_bars
    entry = Entry(symbol="T", ts=minutes[0].ts, price=10.1, qty=10, initial_stop=9.0)
    res = simulate_exit(entry, [], minutes, StopRules())
    hl = [c for c in res.changes if c.source == "intraday_higher_low"]
    assert hl and hl[0].stop == pytest.approx(9.85) and hl[0].ts == at(day, "10:10")
    assert res.exited and res.exit_price == pytest.approx(9.8)  # that minute opened at 9.80, below the 9.85 stop
    assert res.exit_ts == at(day, "09:30") + 46 * 60_000_000_000  # the first minute of the last 5-minute bar


def test_daily_swing_low_definition() -> None:
    bars = crafted_daily()
    assert daily_swing_low(bars[:4], 20).low == pytest.approx(9.5)
    assert daily_swing_low(bars[:6], 20).low == pytest.approx(10.4)
    assert daily_swing_low(bars[:6], 2) is None


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return real_store(tmp_path_factory.mktemp("bars"), start="2018-08-01", end="2018-12-31")


def _recheck_daily(res, bars: list[BarRow], entry: Entry) -> None:
    """Independent walk: the exit bar is the first after entry touching the live stop of its day."""
    cal = calendar()
    live_at = sorted((c.ts, c.stop) for c in res.changes if c.live)
    for ts, _ in live_at:
        d = ny_trade_date(ts)
        assert ts == cal.window_bounds(d, "09:35", "15:55")[0]  # daily mode: only at window opens
    assert [s for _, s in live_at] == sorted(s for _, s in live_at)
    for b in bars:
        if b.ts <= entry.ts:
            continue
        live = [s for t, s in live_at if t <= b.ts]
        if live and b.low <= live[-1]:
            assert res.exited and res.exit_ts == b.ts
            assert res.exit_price == pytest.approx(min(b.open, live[-1]))
            return
    assert not res.exited


@pytest.mark.parametrize("symbol,entry_day,stop", [("AAPL", "2018-10-01", 220.0), ("JPM", "2018-09-04", 108.0),
                                                    ("MSFT", "2018-11-01", 100.0)])
def test_exit_sim_on_real_daily_bars(store, symbol: str, entry_day: str, stop: float) -> None:
    bars = store.daily(symbol, through="2018-12-31")
    bar = next(b for b in bars if ny_trade_date(b.ts) == entry_day)
    entry = Entry(symbol=symbol, ts=bar.ts, price=bar.open, qty=100, initial_stop=stop)
    res = simulate_exit(entry, bars)
    _recheck_daily(res, bars, entry)
    assert res.exited  # Q4 2018: every one of these is stopped out by year end


def test_exit_sim_on_real_intraday_bars(store) -> None:
    start, end = at("2019-02-11", "09:30"), at("2019-02-15", "16:00")
    minutes = store.intraday("AAPL", start, end)
    first = next(b for b in minutes if b.ts >= at("2019-02-11", "10:00"))
    res = simulate_exit(Entry(symbol="AAPL", ts=first.ts, price=first.close, qty=10, initial_stop=first.close - 3), [],
                        minutes)
    cal = calendar()
    for c in res.changes:
        if c.live:
            assert cal.in_window(c.ts, "09:35", "15:55")
    desired = [c.stop for c in res.changes if not c.live]
    assert desired == sorted(desired) and any(c.source == "intraday_higher_low" for c in res.changes)
    if res.exited:
        hit = next(b for b in minutes if b.ts == res.exit_ts)
        assert hit.low <= res.exit_price + 1e-9


def test_daily_entry_stamped_at_the_open_starts_after_the_bar() -> None:
    bars = crafted_daily()
    at_open = simulate_exit(Entry(symbol="T", ts=at(DAYS[3], "09:30"), price=10.8, qty=100, initial_stop=9.0), bars)
    at_close = simulate_exit(Entry(symbol="T", ts=close_ns(DAYS[3]), price=10.8, qty=100, initial_stop=9.0), bars)
    assert (at_open.exit_ts, at_open.exit_price) == (at_close.exit_ts, at_close.exit_price)
    assert [c for c in at_open.changes if c.live] == [c for c in at_close.changes if c.live]


def test_parity_against_reconstructed_trades() -> None:
    from services.analytics.exit_sim import parity, rules_from
    from services.analytics.trades import build_trades, fills_from_orders
    from shared.settings import load_settings
    from tests.test_analytics_helpers import fill

    bars = crafted_daily()
    good = [fill("T", "buy", 100, 10.8, close_ns(DAYS[3]), DAYS[3], stop=9.0, tid="e"),
            fill("T", "sell", 100, 10.2, close_ns(DAYS[6]), DAYS[6], kind="stop", tid="x")]
    rules = rules_from(load_settings().exits)
    (row,) = parity(build_trades(fills_from_orders(good)), bars, [], rules)
    assert row.agree and row.sim_exit_price == pytest.approx(10.2)
    late = [good[0], fill("T", "sell", 100, 9.0, close_ns(DAYS[7]), DAYS[7], kind="stop", tid="y")]
    (row,) = parity(build_trades(fills_from_orders(late)), bars, [], rules)
    assert not row.agree


def test_a_stop_going_live_at_the_window_open_does_not_act_on_the_minutes_before_it() -> None:
    """09:31-09:35 bars come before WINDOW_OPEN (feed and replay driver): the stop sent at the open
    protects only the bars after it; before it the position has only its previous live stop (none here)."""
    d1, d2, d3, d4 = calendar().sessions_in_range("2018-03-05", "2018-03-08")
    daily = [daily_bar("T", d1, 101, 102, 100, 101), daily_bar("T", d2, 100, 101, 98, 100.5),
             daily_bar("T", d3, 100.5, 102, 99, 101)]  # d2's low is a swing low: desired stop 97.90

    def minute(hhmm: str, lo: float) -> BarRow:
        return BarRow(symbol="T", ts=at(d4, hhmm), open=100, high=100.5, low=lo, close=100, volume=1e4)

    early = [minute("09:31", 97.5), minute("09:32", 99.5), minute("09:35", 99.6)]
    later = [minute("09:36", 99.0), minute("09:40", 97.8)]
    entry = Entry(symbol="T", ts=close_ns(d3), price=101, qty=10, initial_stop=90)
    w0 = calendar().window_bounds(d4, "09:35", "15:55")[0]

    res = simulate_exit(entry, daily, early + later[:1])
    assert not res.exited  # 97.50 at 09:31 is below 97.90, but that stop was not live yet
    assert [(c.ts, c.stop) for c in res.changes if c.live] == [(w0, 97.9)]
    res = simulate_exit(entry, daily, early + later)
    assert res.exited and res.exit_ts == at(d4, "09:40") and res.exit_price == pytest.approx(97.9)


def test_the_replay_driver_publishes_window_open_after_the_minutes_ending_at_its_start() -> None:
    from avwap.replay import session_steps

    d = "2018-03-08"
    minutes = [(at(d, t), [BarRow(symbol="T", ts=at(d, t), open=1, high=1, low=1, close=1, volume=1)])
               for t in ("09:31", "09:35", "09:36")]
    labels = [s.label for s in session_steps(d, [daily_bar("T", d, 1, 1, 1, 1)], minutes)]
    assert labels == ["pre_market", "open", f"1m@{at(d, '09:31')}", f"1m@{at(d, '09:35')}", "window_open",
                      f"1m@{at(d, '09:36')}", "daily", "close"]
