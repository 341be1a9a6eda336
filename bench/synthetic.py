"""A deterministic synthetic daily universe for the scan benchmark (numpy only, seeded).

Each symbol is a geometric random walk with its own drift and volatility, daily ranges and
gaps, log-normal volumes with occasional spikes, and the defects real data has: late listings,
early endings, missing days and zero-volume days.
"""

from __future__ import annotations

import numpy as np

from shared.bars import Panel
from shared.clock import calendar


def sessions(n: int, end: str = "2018-12-31") -> list[str]:
    cal = calendar()
    allx = cal.sessions_in_range("2000-01-01", end)
    return allx[-n:]


def synthetic_panel(n_symbols: int, n_sessions: int, seed: int = 7, end: str = "2018-12-31") -> Panel:
    rng = np.random.default_rng(seed)
    dates = sessions(n_sessions, end)
    t, s = n_sessions, n_symbols
    drift = rng.normal(0.0004, 0.0008, s)
    vol = rng.uniform(0.008, 0.03, s)
    ret = rng.normal(drift, vol, (t, s))
    gaps = rng.random((t, s)) < 0.01
    ret += gaps * rng.normal(0, 0.06, (t, s))
    start = rng.uniform(5, 300, s)
    close = start * np.exp(np.cumsum(ret, axis=0))
    open_ = close * np.exp(-ret * rng.uniform(0.2, 1.0, (t, s)))
    span = np.abs(rng.normal(0, vol, (t, s))) * close + 0.001 * close
    high = np.maximum(open_, close) + span * rng.uniform(0.1, 1.0, (t, s))
    low = np.minimum(open_, close) - span * rng.uniform(0.1, 1.0, (t, s))
    low = np.maximum(low, 0.01)
    base = rng.uniform(2e5, 2e7, s)
    volume = np.round(base * np.exp(rng.normal(0, 0.4, (t, s))) * np.where(rng.random((t, s)) < 0.03, 3.0, 1.0))
    volume[rng.random((t, s)) < 0.002] = 0.0
    cube = np.stack([open_, high, low, close, volume])
    late = rng.random(s) < 0.05
    first = np.where(late, rng.integers(1, t - 1, s), 0)
    cube[:, np.arange(t)[:, None] < first[None, :]] = np.nan
    ended = rng.random(s) < 0.02
    last = np.where(ended, rng.integers(1, t - 1, s), t)
    cube[:, np.arange(t)[:, None] >= last[None, :]] = np.nan
    holes = rng.random((t, s)) < 0.001
    cube[:, holes] = np.nan
    symbols = [f"S{i:05d}" for i in range(s)]
    cal = calendar()
    ts = np.array([cal.open_close_ns(d)[1] for d in dates], dtype=np.int64)
    return Panel(dates=dates, symbols=symbols, open=cube[0], high=cube[1], low=cube[2], close=cube[3],
                 volume=cube[4], ts=ts)


def panel_frame(panel: Panel):  # noqa: ANN201 - pandas DataFrame
    """The long frame (``load_bars`` shape) of a panel, for the per-symbol reference."""
    import pandas as pd

    t, s = panel.close.shape
    ok = ~np.isnan(panel.close)
    ti, si = np.nonzero(ok)
    return pd.DataFrame({
        "symbol": np.array(panel.symbols, dtype=object)[si], "ts": panel.ts[ti],
        "trade_date": np.array(panel.dates, dtype=object)[ti],
        **{f: getattr(panel, f)[ti, si] for f in ("open", "high", "low", "close", "volume")},
    })
