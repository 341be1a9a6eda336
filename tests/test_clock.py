"""NY calendar: DST switch days, a holiday, an early close; the replay clock."""

from __future__ import annotations

import pytest

from shared.clock import NY, ReplayClock, calendar, dt_to_ns, ns_to_dt, ny_datetime, ny_trade_date


def test_dst_switch_days_keep_0930_ny_open() -> None:
    cal = calendar()
    for day in ("2018-03-09", "2018-03-12", "2018-11-02", "2018-11-05"):
        o, c = cal.open_close_ns(day)
        assert ns_to_dt(o, NY).strftime("%H:%M") == "09:30"
        assert ns_to_dt(c, NY).strftime("%H:%M") == "16:00"
    # the UTC open moves by one hour across the spring switch
    assert ns_to_dt(cal.open_close_ns("2018-03-09")[0]).hour == 14
    assert ns_to_dt(cal.open_close_ns("2018-03-12")[0]).hour == 13


def test_holidays_and_sessions() -> None:
    cal = calendar()
    assert not cal.is_session("2018-07-04")
    assert not cal.is_session("2018-12-25")
    assert not cal.is_session("2018-12-05")  # national day of mourning (G.H.W. Bush)
    assert cal.next_session("2018-07-03") == "2018-07-05"
    assert cal.previous_session("2018-07-05") == "2018-07-03"
    assert cal.sessions_in_range("2018-12-21", "2018-12-27") == ["2018-12-21", "2018-12-24", "2018-12-26", "2018-12-27"]


def test_early_close_and_window_shrinks() -> None:
    cal = calendar()
    assert cal.is_early_close("2018-11-23") and not cal.is_early_close("2018-11-21")
    _, close = cal.open_close_ns("2018-11-23")
    assert ns_to_dt(close, NY).strftime("%H:%M") == "13:00"
    start, end = cal.window_bounds("2018-11-23", "09:35", "15:55")
    assert ns_to_dt(end, NY).strftime("%H:%M") == "12:55"
    assert cal.in_window(dt_to_ns(ny_datetime("2018-11-23", "12:30")), "09:35", "15:55")
    assert not cal.in_window(dt_to_ns(ny_datetime("2018-11-23", "13:30")), "09:35", "15:55")
    assert not cal.in_window(dt_to_ns(ny_datetime("2018-11-22", "12:00")), "09:35", "15:55")  # Thanksgiving


def test_ny_trade_date_across_midnight_and_dst() -> None:
    # 03:30 UTC on 2018-03-11 is still 2018-03-10 in NY (EST, UTC-5)
    assert ny_trade_date(dt_to_ns(ny_datetime("2018-03-10", "22:30"))) == "2018-03-10"
    assert ny_trade_date(dt_to_ns(ny_datetime("2018-03-11", "00:01"))) == "2018-03-11"
    assert ny_trade_date(dt_to_ns(ny_datetime("2018-11-04", "23:59"))) == "2018-11-04"


def test_replay_clock_is_monotonic() -> None:
    clk = ReplayClock(100)
    clk.set(200)
    assert clk.now_ns() == 200
    with pytest.raises(ValueError):
        clk.set(150)
