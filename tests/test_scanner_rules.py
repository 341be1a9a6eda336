"""Each filter, anchor, gate and scoring rule of the scan on crafted series (DESIGN §6)."""

from __future__ import annotations

import numpy as np
import pytest

from services.scanner import core
from services.scanner.compute import ANCHOR_KINDS, compute
from shared.settings import ScannerSettings
from tests.scanner_fixtures import END, SCAN_DATE, base, panel

OFF = ScannerSettings(scan_market_gate="off")


def outcome(series: dict, p: ScannerSettings = OFF, **kw) -> tuple[str, dict]:
    res = core.scan(panel(series, **kw), None, {}, SCAN_DATE, END, p)
    rej = res.rejects["rejects"]
    sym = sorted(series)[0]
    return (rej[sym]["code"], rej[sym]["values"]) if sym in rej else ("CANDIDATE", {})


def anchors(s: dict, p: ScannerSettings = OFF) -> dict[str, str]:
    pan = panel({"X": s})
    cp = compute(pan.open, pan.high, pan.low, pan.close, pan.volume, pan.dates, p)
    return {k: pan.dates[cp.anchor_row[i, 0]] for i, k in enumerate(ANCHOR_KINDS) if cp.anchor_ok[i, 0]}


def test_the_base_series_is_a_candidate_with_sane_levels() -> None:
    res = core.scan(panel({"BASE": base()}), None, {"BASE": "Tech"}, SCAN_DATE, END, OFF)
    (c,) = res.batch.candidates
    assert c.symbol == "BASE" and c.sector == "Tech" and c.rank == 1 and c.scan_date == SCAN_DATE
    assert c.entry_level == c.avwap and 0 < c.entry_dist_pct <= 6
    s = base()
    sma5, low5 = s["close"][-5:].mean(), s["low"][-5:].min()
    assert c.stop_loss == pytest.approx(min(sma5, low5) * 0.997, abs=1e-4)
    pivot = (s["high"][-1] + s["low"][-1] + s["close"][-1]) / 3
    assert c.target_r1 == pytest.approx(2 * pivot - s["low"][-1], abs=1e-4)
    assert c.target_r2 == pytest.approx(pivot + s["high"][-1] - s["low"][-1], abs=1e-4)
    assert c.bands["U1"] == pytest.approx(c.avwap + c.band_sigma, abs=2e-4)
    assert c.bands["L3"] == pytest.approx(c.avwap - 3 * c.band_sigma, abs=2e-4)
    near = 50 if 0.1 <= c.entry_dist_pct <= 1.5 else 0
    want = c.anchor_priority + 1.5 * c.trend_score - abs(c.entry_dist_pct) + near + (40 if c.reclaim else 0)
    assert c.score == pytest.approx(want, abs=1e-3)


def test_a_symbol_without_a_bar_on_the_last_session_is_not_a_candidate() -> None:
    s = {k: v[:-1] for k, v in base().items()}
    code, vals = outcome({"X": s, "Y": base()}, ends_early={"X": 1})  # X ends one session early (delisted / stale)
    assert code == core.NO_BAR_LAST_SESSION and vals["expected"] == END and vals["last_bar"] < END


def test_short_history_low_price_and_illiquid_symbols_are_filtered_in_order() -> None:
    assert outcome({"X": {k: v[-79:] for k, v in base().items()}}, n_dates=260)[0] == core.INSUFFICIENT_HISTORY
    code, vals = outcome({"X": base(start=1.5)})
    assert code == core.PRICE_BELOW_MIN and vals["close"] < 3
    code, vals = outcome({"X": base(volume=700_000)})
    assert code == core.AVG_VOLUME_LOW and vals == {"avg_volume": 700_000.0, "min": 750_000.0}
    code, vals = outcome({"X": base(start=5.0, volume=1_000_000)})  # ~$8 x 1M = $8M < $10M
    assert code == core.AVG_DOLLAR_VOLUME_LOW and vals["avg_dollar_volume"] < 10_000_000


def test_trend_filters_weekly_then_daily() -> None:
    assert outcome({"X": base(drift=-0.002, start=150)})[0] == core.WEEKLY_TREND_DOWN
    s = base()
    s["close"][-1] = s["close"][-20:].mean() * 0.97  # still above weekly trend, below its SMA20
    s["low"][-1] = min(s["low"][-1], s["close"][-1])
    s["open"][-1] = s["close"][-1]
    code, vals = outcome({"X": s})
    assert code == core.DAILY_TREND_FAIL and vals["close"] < vals["sma20"]


def test_volatility_filters() -> None:
    code, vals = outcome({"X": base(start=20, r0=0.006, r1=0.004, volume=2e6)})
    assert code == core.ATR_BELOW_MIN and vals["atr"] < 0.5
    code, vals = outcome({"X": base(r0=0.09, r1=0.08)})
    assert code == core.ATR_PCT_ABOVE_MAX and vals["atr_pct"] > 6
    code, vals = outcome({"X": base(r0=0.01, r1=0.03)})  # rising volatility: ATR% above its median
    assert code == core.ATR_PCT_ABOVE_MEDIAN and vals["atr_pct"] > vals["median"]


def test_no_qualifying_anchor_lists_why_each_anchor_failed() -> None:
    code, vals = outcome({"X": base()}, ScannerSettings(scan_market_gate="off", scan_max_dist_pct=0.0))
    assert code == core.NO_QUALIFYING_ANCHOR
    fails = {a["kind"]: a["fail"] for a in vals["anchors"]}
    assert fails["MTD"] == "TOO_FAR_ABOVE_AVWAP" and fails["GAP"] == "NONE"


def test_slope_filter_and_its_reclaim_waiver() -> None:
    p = ScannerSettings(scan_market_gate="off", scan_min_slope_pct=5.0)  # no AVWAP rises 5% in 5 bars here
    code, vals = outcome({"X": base()}, p)
    assert code == core.NO_QUALIFYING_ANCHOR
    assert "SLOPE_TOO_NEGATIVE" in {a["fail"] for a in vals["anchors"]}
    s = base(r0=0.04)  # yesterday's close at/below the MTD AVWAP, today's above: a reclaim waives the slope
    pan = panel({"X": s})
    cp = compute(pan.open, pan.high, pan.low, pan.close, pan.volume, pan.dates, p)
    k = ANCHOR_KINDS.index("MTD")
    s["close"][-2] = cp.avwap[k, 0] * 0.99
    s["low"][-2] = min(s["low"][-2], s["close"][-2])
    s["open"][-2] = s["close"][-2]
    res = core.scan(panel({"X": s}), None, {}, SCAN_DATE, END, p)
    assert [c.symbol for c in res.batch.candidates] == ["X"]
    c = res.batch.candidates[0]
    assert c.reclaim and "RECLAIM" in c.setups and c.avwap_slope < 5.0


def test_ytd_and_mtd_anchor_on_the_first_bar_with_volume() -> None:
    got = anchors(base())
    assert got["YTD"] == "2018-01-02" and got["MTD"] == "2018-06-01"
    s = base()
    pan = panel({"X": s})
    s["volume"][pan.dates.index("2018-01-02")] = 0.0
    s["volume"][pan.dates.index("2018-06-01")] = 0.0
    got = anchors(s)
    assert got["YTD"] == "2018-01-03" and got["MTD"] == "2018-06-04"


def test_same_bar_keeps_the_higher_priority_anchor() -> None:
    # ends in January: the year's and the month's first bar are the same bar -> MTD is dropped
    s = base(n=260)
    pan = panel({"X": s}, end="2018-01-31")
    cp = compute(pan.open, pan.high, pan.low, pan.close, pan.volume, pan.dates, OFF)
    ytd, mtd = ANCHOR_KINDS.index("YTD"), ANCHOR_KINDS.index("MTD")
    assert cp.anchor_ok[ytd, 0] and pan.dates[cp.anchor_row[ytd, 0]] == "2018-01-02"
    assert not cp.anchor_ok[mtd, 0]


def test_gap_anchor_is_the_last_gap_of_at_least_4_pct_within_60_bars() -> None:
    s = base()
    n = len(s["close"])
    for i, size in ((n - 30, 1.05), (n - 20, 1.03)):  # a 5% gap 30 bars ago, a 3% gap 20 bars ago
        s["open"][i] = s["close"][i - 1] * size
        s["high"][i] = max(s["high"][i], s["open"][i])
    dates = panel({"X": s}).dates
    assert anchors(s)["GAP"] == dates[n - 30]
    s2 = base()
    s2["open"][n - 70] = s2["close"][n - 71] * 0.94  # a 6% gap down, 70 bars ago: outside the lookback
    s2["low"][n - 70] = min(s2["low"][n - 70], s2["open"][n - 70])
    assert "GAP" not in anchors(s2)
    s2["open"][n - 10] = s2["close"][n - 11] * 0.95  # 5% gap down inside the lookback: anchors (either direction)
    s2["low"][n - 10] = min(s2["low"][n - 10], s2["open"][n - 10])
    assert anchors(s2)["GAP"] == dates[n - 10]


def test_volume_breakout_anchor() -> None:
    s = base()
    n = len(s["close"])
    i = n - 8
    s["volume"][i] = 1.9e6  # > 1.8 x the prior 20-day average (1e6)
    s["close"][i] = s["high"][i - 5:i].max() * 1.01
    s["high"][i] = s["close"][i] * 1.002  # close in the top of the range
    s["low"][i] = s["close"][i] * 0.98
    dates = panel({"X": s}).dates
    assert anchors(s)["VOL_BREAKOUT"] == dates[i]
    weak = {k: v.copy() for k, v in s.items()}
    weak["volume"][i] = 1.7e6
    assert "VOL_BREAKOUT" not in anchors(weak)
    mid = {k: v.copy() for k, v in s.items()}
    mid["high"][i] = mid["close"][i] * 1.05  # close in the lower part of its range
    assert "VOL_BREAKOUT" not in anchors(mid)


def test_swing_anchors_are_the_extremes_of_the_last_20_bars() -> None:
    s = base()
    n = len(s["close"])
    s["low"][n - 12] = s["low"][-20:].min() * 0.97
    s["high"][n - 3] = s["high"][-20:].max() * 1.03
    got, dates = anchors(s), panel({"X": s}).dates
    assert got["SWING_LOW"] == dates[n - 12] and got["SWING_HIGH"] == dates[n - 3]
    s["volume"][n - 12] = 0.0  # a zero-volume bar cannot anchor: the next lowest low does
    assert anchors(s)["SWING_LOW"] != dates[n - 12]


def test_the_last_bars_own_extreme_is_not_yet_a_swing() -> None:
    """A swing low/high needs bars after it (SCAN_SWING_CONFIRM_BARS, default 1): the last bar's own
    20-bar high anchors no SWING_HIGH; with 0 it does (the literal extreme of the lookback)."""
    s = base()
    s["high"][-1] = s["high"][-20:].max() * 1.02
    s["close"][-1] = s["high"][-1] * 0.999
    dates = panel({"X": s}).dates
    assert "SWING_HIGH" not in anchors(s)
    assert anchors(s, ScannerSettings(scan_market_gate="off", scan_swing_confirm_bars=0))["SWING_HIGH"] == dates[-1]
    s2 = base()
    s2["low"][-2] = s2["low"][-20:].min() * 0.97  # yesterday's low: the last bar confirms it
    assert anchors(s2)["SWING_LOW"] == dates[-2]
    assert "SWING_LOW" not in anchors(s2, ScannerSettings(scan_market_gate="off", scan_swing_confirm_bars=2))


def test_an_avwap_anchored_on_the_last_bar_is_never_a_reclaim() -> None:
    """Reclaim = the previous close at or below an AVWAP that already existed then, today's close above it."""
    pan = panel({"X": base()})
    cp = compute(pan.open, pan.high, pan.low, pan.close, pan.volume, pan.dates,
                 ScannerSettings(scan_market_gate="off", scan_swing_confirm_bars=0))
    last = len(pan.dates) - 1
    on_last = cp.anchor_ok[:, 0] & (cp.anchor_row[:, 0] == last)
    assert not (cp.reclaim[:, 0] & on_last).any()


def test_interior_holes_and_late_listings_use_the_symbols_own_bars() -> None:
    s = base()
    holed = {k: np.delete(v, [100, 200]) for k, v in s.items()}  # two missing sessions (e.g. rejected bars)
    pan = panel({"A": s, "B": s})
    for f in ("open", "high", "low", "close", "volume"):
        getattr(pan, f)[[100, 200], 1] = np.nan
    res = core.scan(pan, None, {}, SCAN_DATE, END, OFF)
    alone = core.scan(panel({"B": holed}), None, {}, SCAN_DATE, END, OFF)
    b_in_pair = next(r for r in res.results if r.symbol == "B")
    b_alone = next(r for r in alone.results if r.symbol == "B")
    assert b_in_pair.code == b_alone.code
    if b_alone.candidate is not None:
        assert b_in_pair.candidate.avwap == b_alone.candidate.avwap
        assert b_in_pair.candidate.score == b_alone.candidate.score


def test_ranking_and_top_n() -> None:
    series = {"A": base(), "B": base(drift=0.0025), "C": base(drift=0.0015)}
    p = ScannerSettings(scan_market_gate="off", scan_top_n=2)
    res = core.scan(panel(series), None, {}, SCAN_DATE, END, p)
    scores = [c.score for c in res.batch.candidates]
    assert len(scores) == 2 and scores == sorted(scores, reverse=True)
    assert [c.rank for c in res.batch.candidates] == [1, 2]
    (dropped,) = [s for s, r in res.rejects["rejects"].items()]
    assert res.rejects["rejects"][dropped] == {"code": core.BELOW_TOP_N, "values": {
        "rank": 3, "top_n": 2, "score": res.rejects["rejects"][dropped]["values"]["score"]}}
    assert res.batch.counts == {"BELOW_TOP_N": 1, "CANDIDATE": 2}


def test_market_gate_symbol_mode_fails_closed() -> None:
    sym = ScannerSettings(scan_market_gate="symbol", scan_market_symbol="SPY")
    res = core.scan(panel({"X": base()}), None, {}, SCAN_DATE, END, sym)
    assert not res.batch.market_gate_ok and res.batch.candidates == []
    assert res.batch.market_gate_reason.startswith(core.GATE_MISSING)
    assert res.rejects["rejects"]["X"]["code"] == core.MARKET_GATE_CLOSED  # it would have qualified
    down = base(drift=-0.001, start=300)
    res = core.scan(panel({"X": base(), "SPY": down}), ["X"], {}, SCAN_DATE, END, sym)
    assert not res.batch.market_gate_ok and res.batch.market_gate_reason.startswith(core.GATE_BELOW)
    assert res.batch.universe_size == 1  # SPY read for the gate only
    res = core.scan(panel({"X": base(), "SPY": base(start=200)}), ["X"], {}, SCAN_DATE, END, sym)
    assert res.batch.market_gate_ok and res.batch.market_gate_reason.startswith(core.GATE_OPEN)
    assert [c.symbol for c in res.batch.candidates] == ["X"]
    short = {k: v[-150:] for k, v in base(start=200).items()}
    res = core.scan(panel({"X": base(), "SPY": short}), ["X"], {}, SCAN_DATE, END, sym)
    assert res.batch.market_gate_reason.startswith(core.GATE_SHORT)
    stale = {k: v[:-1] for k, v in base(start=200).items()}
    res = core.scan(panel({"X": base(), "SPY": stale}, ends_early={"SPY": 1}), ["X"], {}, SCAN_DATE, END, sym)
    assert res.batch.market_gate_reason.startswith(core.GATE_STALE)


def test_market_gate_universe_proxy_and_off() -> None:
    proxy = ScannerSettings(scan_market_gate="universe_proxy")
    res = core.scan(panel({"X": base(), "Y": base(drift=0.001)}), None, {}, SCAN_DATE, END, proxy)
    assert res.batch.market_gate_ok and "universe proxy" in res.batch.market_gate_reason
    falling = {f"D{i}": base(drift=-0.002, start=100 + i) for i in range(3)}
    res = core.scan(panel({"X": base(), **falling}), None, {}, SCAN_DATE, END, proxy)
    assert not res.batch.market_gate_ok and res.batch.market_gate_reason.startswith(core.GATE_BELOW)
    res = core.scan(panel({"X": base(), **falling}), None, {}, SCAN_DATE, END, OFF)
    assert res.batch.market_gate_ok and res.batch.market_gate_reason.startswith(core.GATE_OFF)


def test_stale_bars_close_the_gate_for_the_whole_batch() -> None:
    res = core.scan(panel({"X": base()}), None, {}, "2018-07-03", "2018-07-02", OFF)  # the store lacks 2018-07-02
    assert not res.batch.market_gate_ok and res.batch.market_gate_reason.startswith(core.BARS_STALE)
    assert res.batch.candidates == [] and res.rejects["rejects"]["X"]["code"] == core.NO_BAR_LAST_SESSION


def test_universe_symbols_without_bars_are_counted_and_explained() -> None:
    res = core.scan(panel({"X": base()}), ["X", "NOPE"], {}, SCAN_DATE, END, OFF)
    assert res.batch.universe_size == 2 and res.rejects["rejects"]["NOPE"]["code"] == core.NO_BARS


def test_trend_tier_thresholds() -> None:
    p = ScannerSettings()
    assert core.trend_tier(25, p) == "STRONG" and core.trend_tier(5, p) == "MODERATE" and core.trend_tier(4.9, p) == "WEAK"
