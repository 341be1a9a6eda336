"""AVWAP and its bands: hand-computed fixtures, and agreement with finta's VWAP on the real data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from services.scanner.compute import ANCHOR_KINDS, anchored_vwap, compute
from shared.bars import Panel, load_bars
from shared.settings import ScannerSettings
from tests.conftest import DAILY_FILE
from tests.scanner_fixtures import END, base, panel


def _col(*xs: list[float]) -> list[np.ndarray]:
    return [np.array(x, dtype=np.float64)[:, None] for x in xs]


def test_avwap_and_bands_from_a_chosen_anchor_match_the_hand_computation() -> None:
    # TP = (H+L+C)/3 = 10, 11, 12, 13, 14; the zero-volume bar (TP 12) weighs nothing.
    h, lo, c, v = _col([11, 12, 13, 14, 15], [9, 10, 11, 12, 13], [10, 11, 12, 13, 14], [500, 200, 0, 100, 100])
    avwap, sigma, ref = anchored_vwap(h, lo, c, v, np.array([[1]]), np.array([[3]]))
    # from bar 1: sum(TP*V) = 11*200 + 13*100 + 14*100 = 4900, sum(V) = 400 -> 12.25
    assert avwap[0, 0] == pytest.approx(12.25, rel=1e-15)
    # sigma^2 = (121*200 + 169*100 + 196*100)/400 - 12.25^2 = 151.75 - 150.0625 = 1.6875
    assert sigma[0, 0] == pytest.approx(math.sqrt(1.6875), rel=1e-12)
    # the AVWAP from bar 1 up to bar 3: (2200 + 1300) / 300
    assert ref[0, 0] == pytest.approx(3500 / 300, rel=1e-15)
    bands = {k: avwap[0, 0] + k * sigma[0, 0] for k in (-3, -2, -1, 1, 2, 3)}
    assert bands[1] == pytest.approx(12.25 + 1.299038105676658, rel=1e-12)
    assert bands[-3] == pytest.approx(12.25 - 3 * 1.299038105676658, rel=1e-12)


def test_anchor_on_the_last_bar_is_its_typical_price_with_zero_sigma() -> None:
    h, lo, c, v = _col([11, 12], [9, 10], [10, 11.5], [100, 300])
    avwap, sigma, _ = anchored_vwap(h, lo, c, v, np.array([[1]]), np.array([[1]]))
    assert avwap[0, 0] == pytest.approx((12 + 10 + 11.5) / 3, rel=1e-15) and sigma[0, 0] == 0.0


def test_scan_avwap_of_the_mtd_anchor_is_the_hand_sum_over_the_month() -> None:
    s = base()
    s["volume"][-5] = 0.0  # a zero-volume day inside the month: kept, weighs nothing
    p = panel({"X": s})
    cp = compute(p.open, p.high, p.low, p.close, p.volume, p.dates, ScannerSettings())
    k = ANCHOR_KINDS.index("MTD")
    first = next(i for i, d in enumerate(p.dates) if d[:7] == END[:7])
    assert p.dates[cp.anchor_row[k, 0]] == p.dates[first] == "2018-06-01"
    tp = (s["high"] + s["low"] + s["close"]) / 3
    sl = slice(first, None)
    want = (tp[sl] * s["volume"][sl]).sum() / s["volume"][sl].sum()
    var = (tp[sl] ** 2 * s["volume"][sl]).sum() / s["volume"][sl].sum() - want ** 2
    assert cp.avwap[k, 0] == pytest.approx(want, rel=1e-12)
    assert cp.sigma[k, 0] == pytest.approx(math.sqrt(var), rel=1e-6)


@pytest.fixture(scope="module")
def real():
    return load_bars(DAILY_FILE)


@pytest.mark.parametrize("scan_date", ["2016-06-01", "2018-03-01", "2018-12-03"])
def test_every_anchor_agrees_with_finta_vwap_from_the_anchor_bar_on_real_data(real, scan_date: str) -> None:
    from finta import TA

    p = ScannerSettings()
    pan = Panel.from_frame(real.frame, before=scan_date, lookback=p.scan_history_bars)
    cp = compute(pan.open, pan.high, pan.low, pan.close, pan.volume, pan.dates, p)
    f = real.frame[real.frame["trade_date"].isin(pan.dates)]
    by_sym = {s: g.sort_values("trade_date") for s, g in f.groupby("symbol")}
    checked = dict.fromkeys(ANCHOR_KINDS, 0)
    worst = 0.0
    for j, sym in enumerate(pan.symbols):
        g = by_sym[sym]
        if cp.last_row[j] < 0 or g["trade_date"].iloc[-1] != pan.dates[-1]:
            continue
        for k, kind in enumerate(ANCHOR_KINDS):
            if not cp.anchor_ok[k, j]:
                continue
            anchor_date = pan.dates[cp.anchor_row[k, j]]
            sl = g[g["trade_date"] >= anchor_date][["open", "high", "low", "close", "volume"]].reset_index(drop=True)
            assert sl["volume"].iloc[0] > 0, f"{sym} {kind} anchored on a zero-volume bar"
            peer = TA.VWAP(sl).iloc[-1]
            rel = abs(cp.avwap[k, j] - peer) / abs(peer)
            worst = max(worst, rel)
            assert rel <= 1e-9, (sym, kind, anchor_date, cp.avwap[k, j], peer)
            checked[kind] += 1
    assert all(n > 0 for n in checked.values()), checked  # every anchor kind was exercised
    assert worst <= 1e-9


def test_zero_volume_bars_of_the_real_file_never_anchor(real) -> None:
    zero = real.frame[real.frame["volume"] == 0]
    assert len(zero) > 100  # the real file has hundreds
    p = ScannerSettings()
    d = "2018-12-03"  # November 2018 has zero-volume days (e.g. BHF on the month's first session)
    pan = Panel.from_frame(real.frame, before=d, lookback=p.scan_history_bars)
    cp = compute(pan.open, pan.high, pan.low, pan.close, pan.volume, pan.dates, p)
    vols = pd.DataFrame(pan.volume, index=pan.dates, columns=pan.symbols)
    for k in range(len(ANCHOR_KINDS)):
        for j in np.flatnonzero(cp.anchor_ok[k]):
            assert vols.iloc[cp.anchor_row[k, j], j] > 0
    mtd = ANCHOR_KINDS.index("MTD")
    moved = [s for j, s in enumerate(pan.symbols) if vols.loc["2018-11-01", s] == 0 and cp.anchor_ok[mtd, j]]
    assert moved, "expected a symbol whose first November bar has zero volume"
    for s in moved:
        assert pan.dates[cp.anchor_row[mtd, pan.column(s)]] > "2018-11-01"
