"""The bar store: validation with reasons on real and crafted files, idempotent crash-safe storage."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from shared.bars import BarStore, load_bars, validate_rows
from shared.clock import calendar, ny_time
from shared.schemas import BarRow
from tests.conftest import REFERENCE_DATA

DAILY = REFERENCE_DATA / "sp500_daily_2015_2018.csv.gz"
INTRADAY = REFERENCE_DATA / "intraday_1min_2019-02-11_15.csv.gz"


@pytest.fixture(scope="module")
def daily():
    return load_bars(DAILY)


def test_real_daily_file_rejects_the_bad_close_and_keeps_zero_volume_days(daily):
    bad = [r for r in daily.rejects if r.symbol == "DXC" and r.when == "2018-06-01"]
    assert [r.reason for r in bad] == ["CLOSE_OUTSIDE_RANGE"]
    f = daily.frame
    assert not ((f["symbol"] == "DXC") & (f["trade_date"] == "2018-06-01")).any()
    assert daily.zero_volume > 100  # kept, flagged by volume == 0
    assert len(f) + len(daily.rejects) == 470_242
    assert daily.tf == "1d" and len(daily.symbols()) == 478  # the README says 482; the file holds 478


def test_daily_ts_is_the_session_close_including_early_closes(daily):
    f = daily.frame
    cal = calendar()
    row = f[(f["symbol"] == "AAPL") & (f["trade_date"] == "2018-11-23")].iloc[0]  # day after Thanksgiving
    assert cal.is_early_close("2018-11-23")
    assert ny_time(int(row["ts"])) == "13:00"
    row = f[(f["symbol"] == "AAPL") & (f["trade_date"] == "2018-11-26")].iloc[0]
    assert ny_time(int(row["ts"])) == "16:00"


def test_intraday_file_stamps_bar_end_in_utc_and_keeps_missing_minutes_missing():
    res = load_bars(INTRADAY)
    assert res.tf == "1m" and not res.rejects
    first = res.frame.iloc[0]
    assert ny_time(int(first["ts"])) == "09:31"
    per_day = res.frame.groupby(["symbol", "trade_date"]).size()
    assert per_day.max() == 390 and per_day.min() < 390


def test_crafted_defects_each_get_their_reason(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text(
        "date,symbol,open,high,low,close,volume\n"
        "2018-01-02,AAA,10,11,9,10.5,100\n"      # good
        "2018-01-02,AAA,10,11,9,10.5,100\n"      # duplicate
        "2018-01-03,AAA,10,11,9,12,100\n"        # close above high
        "2018-01-04,AAA,8,11,9,10,100\n"         # open below low
        "2018-01-05,AAA,0,11,9,10,100\n"         # non-positive
        "2018-01-08,AAA,10,11,9,10,-5\n"         # negative volume
        "2018-01-09,AAA,10,11,9,NaN,100\n"       # NaN
        "2018-01-10,AAA,10,9,11,10,100\n"        # high below low
        "2018-01-06,AAA,10,11,9,10,100\n"        # a Saturday
        "2018-01-11,AAA,ten,11,9,10,100\n"       # unparsable
        "2018-01-12,AAA,10,11,9,10,0\n"          # zero volume: kept
    )
    res = load_bars(p)
    assert [(r.line, r.reason) for r in res.rejects] == [
        (2, "DUPLICATE_TIMESTAMP"), (3, "CLOSE_OUTSIDE_RANGE"), (4, "OPEN_OUTSIDE_RANGE"),
        (5, "NON_POSITIVE_PRICE"), (6, "NEGATIVE_VOLUME"), (7, "NAN_VALUE"), (8, "HIGH_BELOW_LOW"),
        (9, "NOT_A_SESSION"), (10, "UNPARSABLE")]
    assert res.frame["trade_date"].tolist() == ["2018-01-02", "2018-01-12"]


def test_validate_rows_applies_the_same_rules_to_feed_bars():
    good = BarRow(symbol="A", ts=1, open=10, high=11, low=9, close=10, volume=1)
    bad = BarRow(symbol="B", ts=1, open=10, high=11, low=9, close=12, volume=1)
    rows, rejects = validate_rows([good, bad])
    assert rows == [good] and [r.reason for r in rejects] == ["CLOSE_OUTSIDE_RANGE"]


def _bar(sym: str, d: str, close: float) -> BarRow:
    ts = calendar().open_close_ns(d)[1]
    return BarRow(symbol=sym, ts=ts, open=close, high=close + 1, low=close - 1, close=close, volume=100)


def test_store_append_is_idempotent_and_survives_a_torn_line(tmp_path):
    store = BarStore(tmp_path)
    store.append("1d", [_bar("A", "2018-01-02", 10), _bar("B", "2018-01-02", 20)])
    store.append("1d", [_bar("A", "2018-01-02", 10)])  # redelivered
    path = store.path("1d", "2018-01-02")
    with open(path, "ab") as fh:
        fh.write(b"C,15148")  # a crash mid-line
    assert len(BarStore(tmp_path).read_day("1d", "2018-01-02")) == 2
    store.append("1d", [_bar("C", "2018-01-02", 30)])
    fresh = BarStore(tmp_path).read_day("1d", "2018-01-02")
    assert fresh["symbol"].tolist() == ["A", "B", "C"]


def test_daily_panel_before_d_never_sees_d(tmp_path):
    store = BarStore(tmp_path)
    days = ["2018-01-02", "2018-01-03", "2018-01-04"]
    for i, d in enumerate(days):
        store.append("1d", [_bar("A", d, 10 + i)] + ([_bar("B", d, 50 + i)] if i else []))
    p = store.daily_panel(before="2018-01-04")
    assert p.dates == days[:2] and p.symbols == ["A", "B"]
    assert p.close[:, 0].tolist() == [10, 11]
    assert np.isnan(p.close[0, 1]) and p.close[1, 1] == 51
    p2 = store.daily_panel(before="2018-01-05", lookback=2)
    assert p2.dates == days[1:] and p2.ts[-1] == calendar().open_close_ns("2018-01-04")[1]
    assert [b.close for b in store.daily("A", before="2018-01-04")] == [10, 11]


def _same_panel(a, b) -> bool:
    return a.dates == b.dates and a.symbols == b.symbols and all(
        np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True) for f in ("open", "high", "low", "close", "volume", "ts"))


def test_daily_panel_reused_across_sessions_equals_a_fresh_store_and_sees_a_rewritten_day(tmp_path):
    store = BarStore(tmp_path)
    days = calendar().sessions_in_range("2018-01-02", "2018-01-12")
    for i, d in enumerate(days[:4]):
        store.append("1d", [_bar("A", d, 10 + i), _bar("B", d, 50 + i)])
    handed: list[tuple[object, object]] = []
    for i, d in enumerate(days[4:], start=4):  # a sliding window, one new day each session, a new symbol
        store.append("1d", [_bar("A", d, 10 + i)] + ([_bar("C", d, 70 + i)] if i > 5 else []))
        for syms in (None, ["A", "C"]):
            got = store.daily_panel(symbols=syms, before=days[i] + "x", lookback=3)
            assert _same_panel(got, BarStore(tmp_path).daily_panel(symbols=syms, before=days[i] + "x", lookback=3))
            handed.append((got, copy.deepcopy(got)))
    assert all(_same_panel(p, q) for p, q in handed)  # a later panel never changes an earlier one
    assert not store.daily_panel(lookback=3).close.flags.writeable  # callers only read; the store keeps it
    path = store.path("1d", days[-2])  # a rewrite of a day already in the window (the backfill's purge)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"A,{_bar('A', days[-2], 99).ts},99,100,98,99,100\n")
    tmp.replace(path)
    p = store.daily_panel(lookback=3)
    assert p.close[1, p.symbols.index("A")] == 99 and _same_panel(p, BarStore(tmp_path).daily_panel(lookback=3))


def test_daily_panel_of_a_redelivered_out_of_order_day_keeps_the_last_copy_like_read_day(tmp_path):
    store = BarStore(tmp_path)
    d = "2018-01-02"
    store.append("1d", [_bar("B", d, 20), _bar("A", d, 10), _bar("B", d, 21)])  # out of order, B twice
    with open(store.path("1d", d), "ab") as fh:
        fh.write(b"C,15148")  # and a torn last line
    p = store.daily_panel()
    frame = store.read_day("1d", d)
    assert p.symbols == frame["symbol"].tolist() == ["A", "B"]
    assert p.close[0].tolist() == frame["close"].tolist() == [10, 21]


def test_store_daily_returns_exactly_the_loaded_bars_of_one_symbol(tmp_path):
    """``BarStore.daily`` (from the cached per-day arrays) gives the file's own rows of the symbol."""
    from tests.conftest import SAMPLE_DIR

    loaded = load_bars(SAMPLE_DIR / "daily_2017_2018.csv.gz")
    store = BarStore(tmp_path)
    store.import_result(loaded)
    rows = loaded.rows()
    for sym in ("AAPL", "DXC", "NFLX"):  # DXC misses its rejected 2018-06-01 bar in both
        want = [b for b in rows if b.symbol == sym]
        assert store.daily(sym) == want and len(want) > 400, sym
        assert store.daily(sym, through="2018-06-29", lookback=20) == [
            b for b in want if b.ts <= calendar().open_close_ns("2018-06-29")[1]][-20:]
    assert store.daily("NOPE") == []


def test_store_daily_bars_are_read_days_rows_by_symbol_last_copy_winning(tmp_path):
    """``BarStore.daily_bars`` (from the per-day arrays the panels use) gives what ``read_day`` holds, one bar
    per symbol (its last row), for a file written in order, one redelivered out of order with a torn line,
    one rewritten in place, and a missing one; a date that would leave the store is refused."""
    from shared.artifacts import UnsafePath
    from shared.bars import frame_to_rows

    store = BarStore(tmp_path)
    d1, d2 = "2018-01-02", "2018-01-03"
    store.append("1d", [_bar("A", d1, 10), _bar("B", d1, 20)])
    store.append("1d", [_bar("B", d2, 21), _bar("A", d2, 11), _bar("B", d2, 22)])  # out of order, B twice
    with open(store.path("1d", d2), "ab") as fh:
        fh.write(b"C,15148")

    def by_read_day(d: str) -> dict[str, BarRow]:
        return {r.symbol: r for r in frame_to_rows(BarStore(tmp_path).read_day("1d", d))}

    for d in (d1, d2):
        got = store.daily_bars(d)
        assert got == by_read_day(d) and list(got) == list(by_read_day(d)), d
    assert store.daily_bars(d2)["B"].close == 22
    assert store.daily_panel().dates == [d1, d2]  # the panel's read shares the arrays: still the same bars after
    assert store.daily_bars(d1) == by_read_day(d1)
    v = store.version("1d", d1)
    path = store.path("1d", d1)  # rewritten in place (a new inode): read again
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"A,{_bar('A', d1, 99).ts},99,100,98,99,100\n")
    tmp.replace(path)
    assert store.version("1d", d1) != v and store.daily_bars(d1) == by_read_day(d1) and list(store.daily_bars(d1)) == ["A"]
    assert store.daily_bars("2018-01-04") == {} and store.version("1d", "2018-01-04") is None
    for bad in ("../1d/2018-01-02", "/etc/passwd"):
        with pytest.raises(UnsafePath):
            store.daily_bars(bad)
