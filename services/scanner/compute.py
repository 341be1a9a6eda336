"""The vectorized AVWAP scan over a whole universe at once (numpy; pure: arrays in, arrays out).

Input: aligned daily arrays ``(T sessions, S symbols)`` with NaN where a symbol has no bar.
Each symbol is scanned over *its own* bars: columns are first right-aligned (a symbol's bars
pushed to the bottom in time order, so interior holes such as a rejected bar close up and a
late listing starts further down). Every indicator is then "the last k rows" of a column, and
the result of one symbol never depends on which other symbols share the array (what makes a
sharded scan byte-identical to an unsharded one).

Definitions (docs/scanner.md has the table):

- SMA_k: mean of the last k closes. Liquidity: mean volume and mean close x volume of the last
  ``avg_len`` bars.
- True range TR_i = max(H-L, |H-C_prev|, |L-C_prev|) (H-L on a symbol's first bar);
  ATR = Wilder smoothing (``y = (1-a)·y + a·x``, a = 1/length, seeded with the first value);
  ATR% = ATR / close · 100; its median over the last ``atr_median_len`` bars.
- ADX: +DM/-DM (the larger move if positive, else 0), Wilder-smoothed TR/+DM/-DM,
  DI± = 100·DM±/TR, DX = 100·|DI+ - DI-| / (DI+ + DI-) (0 when both are 0), ADX = Wilder(DX).
- Weekly closes: the close of each ISO week's last bar (the current week may be partial);
  fast/slow SMA of the last 10/40 weekly closes.
- TrendScore = 2·(SMA50 % change over 10 bars) + 0.7·ADX·sign(that change) - 10·ATR%/median.
- Anchors (zero-volume bars never anchor): YTD and MTD = first bar of the last bar's year /
  month; GAP = last bar in the lookback with |open/prev close - 1| >= gap%; VOL_BREAKOUT = last
  bar in the lookback with volume > mult x mean volume of the prior ``avg_len`` bars, close in
  the top fraction of a non-zero range and close > the prior N-day high; SWING_LOW / SWING_HIGH
  = lowest low / highest high of the last N bars (the latest on ties). An anchor on the same bar
  as a higher-priority one is dropped.
- AVWAP from the anchor bar inclusive = sum(TP·V)/sum(V), TP = (H+L+C)/3 (zero volume weighs
  nothing); sigma² = sum(TP²·V)/sum(V) - AVWAP² (clamped at 0). Slope = % change of the AVWAP
  from bar max(anchor, t - slope_bars) to t. Reclaim: previous close <= AVWAP < close.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from shared.settings import ScannerSettings

from .series import anchored_vwap, date_keys, dx, first_row, last_true, prev_rows, tail_mean, wilder

__all__ = ["ANCHORS", "ANCHOR_KINDS", "BAND_KS", "Computed", "anchored_vwap", "compute", "compute_blocks"]

# Anchor kinds in priority order (highest first) with their priorities.
ANCHORS: tuple[tuple[str, int], ...] = (
    ("YTD", 100), ("GAP", 90), ("VOL_BREAKOUT", 80), ("MTD", 70), ("SWING_LOW", 50), ("SWING_HIGH", 40))
ANCHOR_KINDS = tuple(k for k, _ in ANCHORS)
PRIORITY = dict(ANCHORS)
BAND_KS = (1, 2, 3)
MONTH_ROWS = 23  # most sessions a month can have: the month's first bar is within a symbol's last 23 bars


@dataclass
class Computed:
    """Per-symbol results (arrays of length S; anchor arrays ``(6, S)``, in ``ANCHORS`` order)."""

    bars: np.ndarray  # int: bars of history in the window
    last_row: np.ndarray  # int: row (panel index) of the symbol's last bar, -1 if none
    close: np.ndarray
    high: np.ndarray
    low: np.ndarray
    sma5: np.ndarray
    sma20: np.ndarray
    sma50: np.ndarray
    sma200: np.ndarray
    sma_w_fast: np.ndarray
    sma_w_slow: np.ndarray
    avg_volume: np.ndarray
    avg_dollar_volume: np.ndarray
    atr: np.ndarray
    atr_pct: np.ndarray
    atr_pct_median: np.ndarray
    adx: np.ndarray
    sma50_slope: np.ndarray
    trend_score: np.ndarray
    low5: np.ndarray
    anchor_row: np.ndarray  # (6, S) panel row of each anchor, -1 when none
    anchor_ok: np.ndarray  # (6, S) bool: the anchor exists (after same-bar de-duplication)
    avwap: np.ndarray  # (6, S)
    sigma: np.ndarray  # (6, S)
    slope: np.ndarray  # (6, S)
    dist: np.ndarray  # (6, S)
    reclaim: np.ndarray  # (6, S) bool
    qualifies: np.ndarray  # (6, S) bool
    score: np.ndarray  # (6, S)
    best: np.ndarray  # (S,) anchor index of the best qualifying anchor, -1 when none


def compute(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray, dates: list[str],
            p: ScannerSettings) -> Computed:
    """Scan every column; arrays are ``(T, S)`` aligned on ``dates`` (NaN = no bar)."""
    t0, s0 = c.shape
    pad_cols = 2 - s0 if s0 < 2 else 0  # a (T, 1) array would switch numpy to pairwise sums
    need = max(p.scan_gap_lookback, p.scan_vol_breakout_lookback + max(p.scan_avg_len, p.scan_vol_breakout_high_len),
               p.scan_swing_lookback, p.scan_atr_median_len, 200, p.scan_slope_bars, 60) + 2
    pad_rows = max(0, need - t0)
    arrs = [o, h, lo, c, v]
    if pad_cols or pad_rows:
        arrs = [np.pad(a, ((pad_rows, 0), (0, pad_cols)), constant_values=np.nan) for a in arrs]
    o, h, lo, c, v = (np.ascontiguousarray(a, dtype=np.float64) for a in arrs)
    t, s = c.shape
    year, month, week = (np.concatenate([np.full(pad_rows, -1, dtype=np.int64), k]) for k in date_keys(dates))
    rowid = np.arange(t, dtype=np.int64)

    # Right-align every column on its own bars (only columns with a hole or a stale end move).
    valid = ~np.isnan(c)
    n = valid.sum(axis=0)
    suffix = rowid[:, None] >= (t - n)[None, :]
    src = np.broadcast_to(rowid[:, None], (t, s))
    moved = np.flatnonzero((valid != suffix).any(axis=0))
    if len(moved):
        src = np.array(src)
        src[:, moved] = np.argsort(valid[:, moved], axis=0, kind="stable")

        def realign(a: np.ndarray) -> np.ndarray:
            a = a.copy()
            a[:, moved] = np.take_along_axis(a[:, moved], src[:, moved], axis=0)
            return a

        o, h, lo, c, v = (realign(a) for a in (o, h, lo, c, v))
        valid = suffix
        yr, wk = year[src], week[src]
    else:  # every column on the same rows: the keys broadcast
        yr, wk = (np.broadcast_to(k[:, None], (t, s)) for k in (year, week))
    mo = month[src[-MONTH_ROWS:]]
    last_row = np.where(n > 0, src[-1] - pad_rows, -1)

    with np.errstate(invalid="ignore", divide="ignore"):
        close = c[-1]
        prev_close = prev_rows(c, 1)[0]
        sma5, sma20, sma50, sma200 = (tail_mean(c, k) for k in (5, 20, 50, 200))
        al = p.scan_avg_len
        avg_volume = tail_mean(v, al)
        avg_dollar_volume = tail_mean(c[-al:] * v[-al:], al) if al <= t else np.full(s, np.nan)
        low5 = lo[-5:].min(axis=0)

        # Weekly closes: the last bar of each ISO week.
        week_end = valid & np.vstack([wk[:-1] != wk[1:], np.ones((1, s), dtype=bool)])
        rank = np.cumsum(week_end[::-1], axis=0)[::-1]  # 1 = the latest week
        n_weeks = week_end.sum(axis=0)

        def weekly_sma(k: int) -> np.ndarray:
            sel = week_end & (rank <= k)
            tot = np.where(sel, c, 0.0).sum(axis=0) / k
            return np.where(n_weeks >= k, tot, np.nan)

        sma_w_fast, sma_w_slow = weekly_sma(p.scan_weekly_fast), weekly_sma(p.scan_weekly_slow)

        # ATR / ADX (Wilder). Row 0 has no previous bar: TR = H-L there, and no directional move.
        x3 = np.empty((3, t, s))  # TR, +DM, -DM
        tr = x3[0]
        hl = h - lo
        a, b = h[1:] - c[:-1], lo[1:] - c[:-1]
        np.abs(a, out=a)
        np.abs(b, out=b)
        np.fmax(a, b, out=a)
        np.fmax(hl[1:], a, out=tr[1:])
        tr[0] = hl[0]
        up, dn = h[1:] - h[:-1], lo[:-1] - lo[1:]
        zero_or_nan = np.where(valid, 0.0, np.nan)
        for k, x, other in ((1, up, dn), (2, dn, up)):
            np.copyto(x3[k], zero_or_nan)
            np.copyto(x3[k, 1:], x, where=(x > other) & (x > 0))
        del hl, a, b, up, dn, zero_or_nan
        alpha = 1.0 / p.scan_atr_len
        start = first_row(tr)
        sm = wilder(x3.transpose(1, 0, 2), alpha, start)  # rows (T, 3, S)
        del x3
        atr_s = sm[:, 0]
        adx = wilder(dx(sm[:, 1], sm[:, 2]), alpha, start)[-1]
        m = p.scan_atr_median_len
        atr_pct_s = atr_s[-m:] / c[-m:] * 100.0  # only the last m rows are used
        atr, atr_pct = atr_s[-1], atr_pct_s[-1]
        atr_pct_median = np.median(atr_pct_s, axis=0) if m <= t else np.full(s, np.nan)
        del sm, atr_s
        tb = p.scan_trend_slope_bars
        sma50_prev = c[-50 - tb:-tb].sum(axis=0) / 50
        sma50_slope = (sma50 / sma50_prev - 1.0) * 100.0
        trend_score = 2.0 * sma50_slope + 0.7 * adx * np.sign(sma50_slope) - 10.0 * (atr_pct / atr_pct_median)

        # Anchors.
        pos = valid & (v > 0)
        last = t - 1
        a_rows = np.full((6, s), -1, dtype=np.int64)
        a_ok = np.zeros((6, s), dtype=bool)
        for k, key, span in ((0, yr, t), (3, mo, MONTH_ROWS)):  # YTD, MTD: first bar of the year / month
            mask = pos[-span:] & (key[-span:] == key[-1][None, :])  # of the last bar; a month has <= 23 sessions
            a_rows[k] = np.argmax(mask, axis=0) + (t - span)
            a_ok[k] = mask.any(axis=0)
        gl = p.scan_gap_lookback
        gap = np.abs(o[-gl:] / prev_rows(c, gl) - 1.0) * 100.0 >= p.scan_gap_pct
        r, ok = last_true(pos[-gl:] & gap)
        a_rows[1], a_ok[1] = r + (t - gl), ok
        lb, hl = p.scan_vol_breakout_lookback, p.scan_vol_breakout_high_len
        tail = slice(t - lb, t)
        vol_prior = sliding_window_view(v[t - lb - al:t - 1], al, axis=0).mean(axis=-1)
        high_prior = sliding_window_view(h[t - lb - hl:t - 1], hl, axis=0).max(axis=-1)
        ct, ht, lt, vt = c[tail], h[tail], lo[tail], v[tail]
        brk = (pos[tail] & (vt > p.scan_vol_breakout_mult * vol_prior) & (ht > lt)
               & (ct - lt >= (1.0 - p.scan_vol_breakout_top_pct) * (ht - lt)) & (ct > high_prior))
        r, ok = last_true(brk)
        a_rows[2], a_ok[2] = r + (t - lb), ok
        sw = p.scan_swing_lookback
        lows = np.where(pos[-sw:], lo[-sw:], np.inf)
        highs = np.where(pos[-sw:], h[-sw:], -np.inf)
        a_rows[4] = last - np.argmin(lows[::-1], axis=0)
        a_rows[5] = last - np.argmax(highs[::-1], axis=0)
        confirmed = last - p.scan_swing_confirm_bars  # a swing needs bars after it
        a_ok[4] = pos[-sw:].any(axis=0) & (a_rows[4] <= confirmed)
        a_ok[5] = pos[-sw:].any(axis=0) & (a_rows[5] <= confirmed)
        for k in range(1, 6):  # same bar: keep the higher priority
            dup = (a_rows[:k] == a_rows[k][None, :]) & a_ok[:k]
            a_ok[k] &= ~dup.any(axis=0)
        a_rows = np.where(a_ok, a_rows, 0)

        # AVWAP and bands from each anchor (suffix sums from the anchor bar to the last bar).
        ref = np.maximum(a_rows, last - p.scan_slope_bars)
        first = a_rows[a_ok].min() if a_ok.any() else last  # an anchor that does not exist is masked below:
        avwap, sigma, avwap_ref = anchored_vwap(h, lo, c, v, np.where(a_ok, a_rows, first), ref)  # sum no rows for it
        avwap, sigma = np.where(a_ok, avwap, np.nan), np.where(a_ok, sigma, np.nan)
        slope = (avwap / avwap_ref - 1.0) * 100.0
        dist = (close - avwap) / avwap * 100.0
        reclaim = a_ok & (a_rows < last) & (prev_close <= avwap) & (avwap < close)  # an AVWAP the previous close saw
        qualifies = (a_ok & (close > avwap) & ((slope >= p.scan_min_slope_pct) | reclaim)
                     & (dist <= p.scan_max_dist_pct))
        prio = np.array([pr for _, pr in ANCHORS], dtype=np.float64)[:, None]
        near = (dist >= p.scan_near_min_pct) & (dist <= p.scan_near_max_pct)
        score = (prio + p.scan_score_trend_weight * trend_score - np.abs(dist)
                 + p.scan_near_bonus * near + p.scan_reclaim_bonus * reclaim)
        qualifies &= np.isfinite(score)
        masked = np.where(qualifies, score, -np.inf)
        best = np.where(qualifies.any(axis=0), np.argmax(masked, axis=0), -1)

    a_rows_out = np.where(a_ok, np.take_along_axis(src, a_rows, axis=0) - pad_rows, -1)
    keep = slice(0, s0)

    def cut(x: np.ndarray) -> np.ndarray:
        return x[..., keep]

    return Computed(
        bars=cut(n), last_row=cut(last_row), close=cut(close), high=cut(h[-1]), low=cut(lo[-1]), sma5=cut(sma5),
        sma20=cut(sma20), sma50=cut(sma50), sma200=cut(sma200), sma_w_fast=cut(sma_w_fast),
        sma_w_slow=cut(sma_w_slow), avg_volume=cut(avg_volume), avg_dollar_volume=cut(avg_dollar_volume),
        atr=cut(atr), atr_pct=cut(atr_pct), atr_pct_median=cut(atr_pct_median), adx=cut(adx),
        sma50_slope=cut(sma50_slope), trend_score=cut(trend_score), low5=cut(low5), anchor_row=cut(a_rows_out),
        anchor_ok=cut(a_ok), avwap=cut(avwap), sigma=cut(sigma), slope=cut(slope), dist=cut(dist),
        reclaim=cut(reclaim), qualifies=cut(qualifies), score=cut(score), best=cut(best),
    )


CHUNK_COLUMNS = 512  # columns per block: small arrays stay in cache; blocks run on a thread pool


def compute_blocks(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray, dates: list[str],
                   p: ScannerSettings, chunk: int = CHUNK_COLUMNS, threads: int | None = None) -> Computed:
    """``compute`` over blocks of columns (numpy releases the GIL, so blocks run in parallel threads).

    A column's result does not depend on the block it is in, so this equals ``compute`` on the whole.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import fields

    s = c.shape[1]
    if s <= chunk:
        return compute(o, h, lo, c, v, dates, p)
    bounds = [(i, min(i + chunk, s)) for i in range(0, s, chunk)]
    if bounds[-1][1] - bounds[-1][0] < 2 and len(bounds) > 1:  # no 1-column block (see ``compute``)
        bounds[-2:] = [(bounds[-2][0], s)]
    n = threads or min(len(bounds), os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=n) as pool:
        parts = list(pool.map(lambda b: compute(*(x[:, b[0]:b[1]] for x in (o, h, lo, c, v)), dates, p), bounds))
    return Computed(**{f.name: np.concatenate([getattr(q, f.name) for q in parts], axis=-1) for f in fields(Computed)})
