"""Crafted daily series for the scanner tests: a liquid, steadily rising symbol that passes every filter,
and helpers to bend it into each failure."""

from __future__ import annotations

import numpy as np

from shared.bars import Panel
from shared.clock import calendar

END = "2018-06-29"  # the last bar; the scan is for the next session
SCAN_DATE = "2018-07-02"


def dates(n: int, end: str = END) -> list[str]:
    return calendar().sessions_in_range("2000-01-01", end)[-n:]


def base(n: int = 260, start: float = 50.0, drift: float = 0.002, volume: float = 1e6, r0: float = 0.025,
         r1: float = 0.015, dip: float = 0.02) -> dict[str, np.ndarray]:
    """A rising symbol: close grows ``drift`` a bar with a small wave; ranges shrink from r0 to r1 (ATR% falls).

    The second-to-last bar's low dips ``dip`` below its close, so the structural stop (5-day low) sits
    below the AVWAP entry: without it the stop would be above the entry, an untradeable long the
    scanner does not emit (``STOP_NOT_BELOW_ENTRY``)."""
    i = np.arange(n, dtype=np.float64)
    close = start * np.exp(drift * i) * (1 + 0.004 * np.sin(i / 3.0))
    rng = r0 + (r1 - r0) * i / max(n - 1, 1)
    high = close * (1 + rng * 0.6)
    low = close * (1 - rng * 0.4)
    open_ = np.concatenate([[close[0]], close[:-1]])
    if n >= 2 and dip:
        low[-2] = min(low[-2], close[-2] * (1 - dip))
    open_ = np.clip(open_, low, high)
    return {"open": open_, "high": high, "low": low, "close": close, "volume": np.full(n, volume)}


def panel(series: dict[str, dict[str, np.ndarray]], n_dates: int | None = None, end: str = END,
          ends_early: dict[str, int] | None = None) -> Panel:
    """A panel of named series; shorter series are late listings (aligned to the end), or end
    ``ends_early[sym]`` sessions before the last date (delisted / stale)."""
    early = ends_early or {}
    n = n_dates or max(len(s["close"]) + early.get(k, 0) for k, s in series.items())
    ds = dates(n, end)
    syms = sorted(series)
    cube = np.full((5, n, len(syms)), np.nan)
    for j, sym in enumerate(syms):
        s = series[sym]
        k, e = len(s["close"]), early.get(sym, 0)
        for f, name in enumerate(("open", "high", "low", "close", "volume")):
            cube[f, n - k - e:n - e, j] = s[name]
    cal = calendar()
    ts = np.array([cal.open_close_ns(d)[1] for d in ds], dtype=np.int64)
    return Panel(dates=ds, symbols=syms, open=cube[0], high=cube[1], low=cube[2], close=cube[3], volume=cube[4], ts=ts)
