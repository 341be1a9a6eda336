"""shared/stops.py: the stop rules in batch form and the incremental tracker (same answer on any bars)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.bars import load_bars, row_problem, validate_rows
from shared.clock import calendar, dt_to_ns, ny_datetime, ny_trade_date
from shared.schemas import BarRow, StopTracker
from shared.stops import (
    SOURCE_DAILY,
    SOURCE_INTRADAY,
    StopRules,
    candidate_stop,
    daily_swing_low,
    five_minute_bars,
    intraday_higher_low,
    stop_below,
    to_tick,
    track_daily,
    track_minute,
    tracker_candidate,
)
from tests.conftest import INTRADAY_FILE

DAYS = calendar().sessions_in_range("2019-02-04", "2019-02-15")
MIN = 60_000_000_000


def at(d: str, hhmm: str) -> int:
    return dt_to_ns(ny_datetime(d, hhmm))


def minute(d: str, k: int, low: float, sym: str = "T") -> BarRow:
    """The k-th minute bar of session ``d`` (k=1 ends at 09:31)."""
    return BarRow(symbol=sym, ts=at(d, "09:30") + k * MIN, open=low + 0.05, high=low + 0.2, low=low, close=low + 0.1,
                  volume=100.0)


def daily(d: str, low: float, sym: str = "T") -> BarRow:
    return BarRow(symbol=sym, ts=calendar().open_close_ns(d)[1], open=low + 0.5, high=low + 1.0, low=low, close=low + 0.7,
                  volume=1e6)


def test_ticks_floor_and_never_exceed_low_minus_buffer() -> None:
    assert to_tick(9.5 - 0.1) == 9.4  # binary noise is not a cent lower
    assert to_tick(170.5755) == 170.57
    assert stop_below(170.6755, 0.10) == 170.57 <= 170.6755 - 0.10
    assert to_tick(0.56789) == 0.5678  # sub-dollar: 0.0001 ticks
    assert to_tick(-1.0) == 0.0


def test_intraday_higher_low_needs_a_pivot_above_the_previous_pivot() -> None:
    d = DAYS[0]
    lows = [10.0, 9.8, 9.9, 9.7, 9.9, 10.1, 9.95, 10.2, 10.3]  # pivots 9.8, 9.7, 9.95 -> HL = 9.95
    bars = [minute(d, 5 * j + k + 1, lo) for j, lo in enumerate(lows) for k in range(5)]
    b5 = five_minute_bars(bars)
    assert [b.low for b in b5] == lows and b5[0].ts == at(d, "09:35")
    assert intraday_higher_low(b5, 6).low == 9.95 and intraday_higher_low(b5, 10) is None
    assert intraday_higher_low(b5[:6], 6) is None  # pivots 9.8 then 9.7: no higher low yet
    c = candidate_stop([], bars, [d], StopRules())
    assert c is not None and (c.stop, c.source, c.ref_ts, c.ref_low) == (9.85, SOURCE_INTRADAY, at(d, "10:05"), 9.95)


def test_daily_fallback_when_no_intraday_structure() -> None:
    lows = [10.0, 9.5, 10.2, 10.6, 10.3, 10.8]
    ds = [daily(d, lo) for d, lo in zip(DAYS, lows, strict=False)]
    assert daily_swing_low(ds, 20).low == 10.3 and daily_swing_low(ds, 2) is None
    few = [minute(DAYS[6], k + 1, 11.0) for k in range(12)]  # flat minutes: no pivot
    c = candidate_stop(ds, few, [*DAYS[:6], DAYS[6]], StopRules())
    assert c is not None and (c.stop, c.source, c.ref_ts) == (10.2, SOURCE_DAILY, ds[4].ts)
    assert candidate_stop(ds[:2], [], DAYS[:2], StopRules()) is None


def test_missing_minutes_complete_a_bucket_only_once_a_later_minute_arrives() -> None:
    d = DAYS[0]
    rules = StopRules(hl_min_bars=3)
    tr = StopTracker()
    for k in (1, 2, 3, 4):  # 09:31..09:34; the 09:35 minute is missing
        track_minute(tr, minute(d, k, 10.0 - k * 0.01), rules)
    assert tr.bars5 == [] and tr.part_end == at(d, "09:35")
    track_minute(tr, minute(d, 7, 10.5), rules)  # 09:37 closes the 09:35 bucket
    assert [(b.ts, b.low) for b in tr.bars5] == [(at(d, "09:35"), 9.96)]


def test_tracker_refuses_old_and_duplicate_bars() -> None:
    d = DAYS[1]
    rules = StopRules()
    tr = StopTracker()
    assert track_minute(tr, minute(d, 10, 10.0), rules)
    assert not track_minute(tr, minute(d, 10, 9.0), rules)  # same minute again
    assert not track_minute(tr, minute(d, 9, 9.0), rules)  # older
    assert track_daily(tr, daily(d, 9.9), rules)
    assert not track_minute(tr, minute(d, 11, 9.0), rules)  # a minute of D after D's daily bar
    assert not track_daily(tr, daily(DAYS[0], 9.0), rules)


def test_row_problem_agrees_with_the_load_rules() -> None:
    rows = [BarRow(symbol="X", ts=i, open=o, high=h, low=lo, close=c, volume=v) for i, (o, h, lo, c, v) in enumerate([
        (10, 11, 9, 10, 1), (float("nan"), 11, 9, 10, 1), (0, 11, 9, 10, 1), (10, 11, 9, 10, -1), (10, 9, 11, 10, 1),
        (12, 11, 9, 10, 1), (10, 11, 9, 12, 1), (10, 11, 9, 8, 1)])]
    good, rejects = validate_rows(rows)
    vec = {int(r.when): r.reason for r in rejects}
    assert [row_problem(b) for b in rows] == [vec.get(b.ts) for b in rows] and len(good) == 1


# -- the incremental tracker gives exactly the batch answer ------------------------------------
def _apply(seq: list[tuple[str, BarRow]], rules: StopRules) -> None:
    tr = StopTracker()
    days: list[str] = []
    mins: list[BarRow] = []
    dls: list[BarRow] = []
    for tf, b in seq:
        took = track_minute(tr, b, rules) if tf == "1m" else track_daily(tr, b, rules)
        last_m = mins[-1].ts if mins else 0
        last_d = dls[-1].ts if dls else 0
        expect = b.ts > (last_m if tf == "1m" else last_d) and b.ts >= (last_d if tf == "1m" else last_m)
        assert took == expect
        if took:
            (mins if tf == "1m" else dls).append(b)
            d = ny_trade_date(b.ts)
            if d not in days:
                days.append(d)
        assert tracker_candidate(tr, rules) == candidate_stop(dls, mins, days, rules)


@st.composite
def bar_sequences(draw):
    """Daily and 1-minute bars over a few sessions: random lows, missing minutes, gaps, duplicates,
    out-of-order arrivals, days with daily bars only."""
    n_days = draw(st.integers(1, 5))
    days = DAYS[draw(st.integers(0, len(DAYS) - n_days)):][:n_days]
    seq: list[tuple[str, BarRow]] = []
    price = 50.0
    for d in days:
        if draw(st.booleans()) or d == days[-1]:
            ks = sorted(draw(st.sets(st.integers(1, 90), min_size=0, max_size=60)))
            for k in ks:
                price = max(1.0, price + draw(st.sampled_from([-0.3, -0.1, -0.05, 0.0, 0.05, 0.1, 0.3, 2.0, -2.0])))
                seq.append(("1m", minute(d, k, round(price, 2))))
        if draw(st.booleans()):
            seq.append(("1d", daily(d, round(price - draw(st.floats(0, 2)), 2))))
    # disorder: duplicates and late arrivals
    for _ in range(draw(st.integers(0, 8))):
        if seq:
            i = draw(st.integers(0, len(seq) - 1))
            j = draw(st.integers(0, len(seq)))
            seq.insert(j, seq[i])
    return seq


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seq=bar_sequences(), lookback=st.integers(0, 4), min_bars=st.integers(3, 8), swing=st.integers(3, 6))
def test_incremental_tracker_equals_batch_candidate_on_any_sequence(seq, lookback, min_bars, swing) -> None:
    _apply(seq, StopRules(hl_lookback_days=lookback, hl_min_bars=min_bars, swing_lookback=swing))


@pytest.fixture(scope="module")
def real_minutes() -> dict[str, list[BarRow]]:
    res = load_bars(INTRADAY_FILE)
    out: dict[str, list[BarRow]] = {}
    for b in res.rows():
        out.setdefault(b.symbol, []).append(b)
    return out


@pytest.mark.parametrize("symbol", ["AAPL", "UGA", "PPLT", "VIX"])  # UGA/PPLT: hundreds of missing minutes
def test_tracker_equals_batch_on_the_real_intraday_file(real_minutes, symbol: str) -> None:
    bars = real_minutes[symbol]
    n_sessions = len({ny_trade_date(b.ts) for b in bars})
    assert n_sessions == 5 and len(bars) < 5 * 390 if symbol in ("UGA", "PPLT") else True
    rules = StopRules()
    tr = StopTracker()
    days: list[str] = []
    step = 7  # the batch function over every 7th prefix (it is quadratic)
    for i, b in enumerate(bars):
        assert track_minute(tr, b, rules)
        d = ny_trade_date(b.ts)
        if d not in days:
            days.append(d)
        if i % step == 0 or i == len(bars) - 1:
            assert tracker_candidate(tr, rules) == candidate_stop([], bars[: i + 1], days, rules)
    assert tracker_candidate(tr, rules).source == SOURCE_INTRADAY
