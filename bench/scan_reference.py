"""A straightforward per-symbol pandas implementation of the scan rules (DESIGN §6).

This is the reference a user might write: loop over symbols, build each one's frame, use
pandas rolling/ewm/groupby, find anchors with plain loops. It shares no code with
``services/scanner`` (only the settings object and the reject-code names, by value), so the
benchmark's agreement check is a real cross-check of the vectorized scan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

PRIORITIES = {"YTD": 100, "GAP": 90, "VOL_BREAKOUT": 80, "MTD": 70, "SWING_LOW": 50, "SWING_HIGH": 40}


@dataclass
class RefCandidate:
    symbol: str
    anchor: str
    anchor_date: str
    avwap: float
    sigma: float
    dist: float
    slope: float
    score: float
    trend_score: float
    stop: float
    r1: float
    r2: float
    close: float


def wilder(x: pd.Series, n: int) -> pd.Series:
    return x.ewm(alpha=1.0 / n, adjust=False).mean()


def anchors_of(df: pd.DataFrame, p) -> dict[str, int]:  # noqa: ANN001 - ScannerSettings
    """kind -> positional index of the anchor bar (zero-volume bars never anchor)."""
    dates = list(df["date"])
    o, h, lo, c, v = (df[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    n = len(df)
    last = n - 1
    found: dict[str, int] = {}
    year, month = dates[last][:4], dates[last][:7]
    for i in range(n):
        if v[i] > 0 and dates[i][:4] == year:
            found["YTD"] = i
            break
    for i in range(last, max(-1, n - p.scan_gap_lookback - 1), -1):
        if i >= 1 and v[i] > 0 and abs(o[i] / c[i - 1] - 1.0) * 100.0 >= p.scan_gap_pct:
            found["GAP"] = i
            break
    al, hl = p.scan_avg_len, p.scan_vol_breakout_high_len
    for i in range(last, max(-1, n - p.scan_vol_breakout_lookback - 1), -1):
        if i < max(al, hl) or v[i] <= 0 or not h[i] > lo[i]:
            continue
        avg = v[i - al:i].mean()
        prior_high = h[i - hl:i].max()
        if v[i] > p.scan_vol_breakout_mult * avg and c[i] - lo[i] >= (1 - p.scan_vol_breakout_top_pct) * (h[i] - lo[i]) \
                and c[i] > prior_high:
            found["VOL_BREAKOUT"] = i
            break
    for i in range(n):
        if v[i] > 0 and dates[i][:7] == month:
            found["MTD"] = i
            break
    window = [i for i in range(max(0, n - p.scan_swing_lookback), n) if v[i] > 0]
    if window:
        confirmed = n - 1 - p.scan_swing_confirm_bars  # a swing needs bars after it
        low_i = min(window, key=lambda i: (lo[i], -i))
        high_i = max(window, key=lambda i: (h[i], i))
        if low_i <= confirmed:
            found["SWING_LOW"] = low_i
        if high_i <= confirmed:
            found["SWING_HIGH"] = high_i
    out: dict[str, int] = {}
    for kind in PRIORITIES:  # priority order; same bar keeps the higher priority
        if kind in found and found[kind] not in out.values():
            out[kind] = found[kind]
    return out


def weekly_closes(df: pd.DataFrame) -> pd.Series:
    iso = pd.to_datetime(df["date"]).dt.isocalendar()
    key = iso["year"].astype(int) * 100 + iso["week"].astype(int)
    return df.groupby(key.to_numpy(), sort=True)["close"].last()


def scan_symbol(df: pd.DataFrame, last_session: str, p) -> tuple[str, RefCandidate | None]:  # noqa: ANN001
    """(reject code or "", candidate) of one symbol's bars (sorted by date, within the history window)."""
    if df.empty or df["date"].iloc[-1] != last_session:
        return "NO_BAR_LAST_SESSION", None
    n = len(df)
    if n < p.scan_min_history:
        return "INSUFFICIENT_HISTORY", None
    c, h, lo, v = df["close"], df["high"], df["low"], df["volume"]
    close = c.iloc[-1]
    if not close >= p.scan_min_price:
        return "PRICE_BELOW_MIN", None
    if not v.rolling(p.scan_avg_len).mean().iloc[-1] >= p.scan_min_avg_volume:
        return "AVG_VOLUME_LOW", None
    if not (c * v).rolling(p.scan_avg_len).mean().iloc[-1] >= p.scan_min_avg_dollar_volume:
        return "AVG_DOLLAR_VOLUME_LOW", None
    wk = weekly_closes(df)
    fast = wk.rolling(p.scan_weekly_fast).mean().iloc[-1]
    slow = wk.rolling(p.scan_weekly_slow).mean().iloc[-1]
    if not fast > slow:
        return "WEEKLY_TREND_DOWN", None
    sma = {k: c.rolling(k).mean() for k in (5, 20, 50)}
    if not (close > sma[20].iloc[-1] >= sma[50].iloc[-1]):
        return "DAILY_TREND_FAIL", None
    prev = c.shift(1)
    tr = pd.concat([h - lo, (h - prev).abs(), (lo - prev).abs()], axis=1).max(axis=1)
    atr = wilder(tr, p.scan_atr_len)
    atr_pct = atr / c * 100.0
    median = atr_pct.rolling(p.scan_atr_median_len).median().iloc[-1]
    if not atr.iloc[-1] >= p.scan_min_atr:
        return "ATR_BELOW_MIN", None
    if not atr_pct.iloc[-1] <= p.scan_max_atr_pct:
        return "ATR_PCT_ABOVE_MAX", None
    if not atr_pct.iloc[-1] <= median:
        return "ATR_PCT_ABOVE_MEDIAN", None
    up, dn = h.diff(), -lo.diff()
    plus = pd.Series(np.where((up > dn) & (up > 0), up, 0.0), index=df.index)
    minus = pd.Series(np.where((dn > up) & (dn > 0), dn, 0.0), index=df.index)
    s_tr, s_plus, s_minus = (wilder(x, p.scan_atr_len) for x in (tr, plus, minus))
    pdi, mdi = 100 * s_plus / s_tr, 100 * s_minus / s_tr
    dx = (100 * (pdi - mdi).abs() / (pdi + mdi)).where((pdi + mdi) != 0, 0.0)
    adx = wilder(dx, p.scan_atr_len).iloc[-1]
    tb = p.scan_trend_slope_bars
    slope50 = (sma[50].iloc[-1] / sma[50].iloc[-1 - tb] - 1.0) * 100.0
    trend = 2 * slope50 + 0.7 * adx * float(np.sign(slope50)) - 10 * (atr_pct.iloc[-1] / median)
    tp = (h + lo + c) / 3.0
    best: RefCandidate | None = None
    best_key = None
    for kind, a in anchors_of(df, p).items():
        vv, tt = v.iloc[a:].to_numpy(), tp.iloc[a:].to_numpy()
        cum_v, cum_tpv = np.cumsum(vv), np.cumsum(tt * vv)
        avwap = cum_tpv[-1] / cum_v[-1]
        sigma = math.sqrt(max((tt * tt * vv).sum() / vv.sum() - avwap * avwap, 0.0))
        ref = max(0, len(vv) - 1 - p.scan_slope_bars)
        slope = (avwap / (cum_tpv[ref] / cum_v[ref]) - 1.0) * 100.0
        dist = (close - avwap) / avwap * 100.0
        reclaim = a < len(df) - 1 and c.iloc[-2] <= avwap < close  # an AVWAP the previous close saw
        if not (close > avwap and (slope >= p.scan_min_slope_pct or reclaim) and dist <= p.scan_max_dist_pct):
            continue
        score = (PRIORITIES[kind] + p.scan_score_trend_weight * trend - abs(dist)
                 + (p.scan_near_bonus if p.scan_near_min_pct <= dist <= p.scan_near_max_pct else 0.0)
                 + (p.scan_reclaim_bonus if reclaim else 0.0))
        if not math.isfinite(score):
            continue
        key = (score, PRIORITIES[kind])
        if best_key is None or key > best_key:
            pivot = (h.iloc[-1] + lo.iloc[-1] + close) / 3.0
            stop = min(sma[5].iloc[-1], lo.iloc[-5:].min()) * p.scan_stop_mult
            best_key = key
            best = RefCandidate(symbol="", anchor=kind, anchor_date=df["date"].iloc[a], avwap=avwap, sigma=sigma,
                                dist=dist, slope=slope, score=score, trend_score=trend, stop=stop,
                                r1=2 * pivot - lo.iloc[-1], r2=pivot + (h.iloc[-1] - lo.iloc[-1]), close=close)
    if best is None:
        return "NO_QUALIFYING_ANCHOR", None
    if not round(best.stop, 4) < round(best.avwap, 4):  # entry at the AVWAP, stop not below it: untradeable
        return "STOP_NOT_BELOW_ENTRY", None
    return "", best


def reference_scan(frame: pd.DataFrame, scan_date: str, last_session: str, p) -> tuple[list[RefCandidate], dict[str, str]]:  # noqa: ANN001
    """(ranked candidates cut to top N, symbol -> outcome code) for the bars of ``frame`` before ``scan_date``."""
    f = frame[frame["trade_date"] < scan_date]
    sessions = sorted(f["trade_date"].unique())[-p.scan_history_bars:]
    f = f[f["trade_date"].isin(sessions)].rename(columns={"trade_date": "date"})
    codes: dict[str, str] = {}
    passed: list[RefCandidate] = []
    for sym, df in f.groupby("symbol", sort=True):
        df = df.sort_values("date").reset_index(drop=True)
        code, cand = scan_symbol(df, last_session, p)
        codes[str(sym)] = code or "CANDIDATE"
        if cand is not None:
            cand.symbol = str(sym)
            passed.append(cand)
    passed.sort(key=lambda x: (-round(x.score, 4), x.symbol))
    for extra in passed[p.scan_top_n:]:
        codes[extra.symbol] = "BELOW_TOP_N"
    return passed[:p.scan_top_n], codes
