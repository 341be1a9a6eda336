"""Column-wise series primitives of the scan (numpy; pure): every column of a ``(T, ...)`` array is one
symbol's series, rows in time order.

Each function keeps one fixed order of floating-point operations per element, whatever the number
of columns (so a symbol's values never depend on its neighbours), and avoids whole-array
temporaries where a row loop or a slice does the same arithmetic.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=8192)
def _date_key(d: str) -> tuple[int, int, int]:
    x = date.fromisoformat(d)
    iso_year, iso_week, _ = x.isocalendar()
    return x.year, x.year * 100 + x.month, iso_year * 100 + iso_week


def date_keys(dates: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(year, year*100+month, ISO year*100+week) per session date."""
    keys = np.array([_date_key(d) for d in dates], dtype=np.int64).reshape(len(dates), 3)
    return keys[:, 0], keys[:, 1], keys[:, 2]


def tail_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Mean of the last ``k`` rows per column (NaN when a column has fewer than k values)."""
    if k > x.shape[0]:
        return np.full(x.shape[1], np.nan)
    return x[-k:].sum(axis=0) / k


def shift(x: np.ndarray) -> np.ndarray:
    """``x`` one row down (row 0 NaN): the previous bar's value."""
    out = np.empty_like(x)
    out[0] = np.nan
    out[1:] = x[:-1]
    return out


def prev_rows(x: np.ndarray, k: int) -> np.ndarray:
    """The previous bar's value of each of the last ``k`` rows (``shift(x)[-k:]``, without the copy)."""
    t = x.shape[0]
    return x[t - k - 1:t - 1] if k < t else shift(x)[-k:]


def first_row(x: np.ndarray) -> int:
    """The first row where any column of ``x`` is not NaN (the last row when there is none)."""
    any_bar = ~np.isnan(x).reshape(x.shape[0], -1).all(axis=1)
    return int(np.argmax(any_bar)) if any_bar.any() else x.shape[0] - 1


def wilder(x: np.ndarray, alpha: float, start: int) -> np.ndarray:
    """Wilder smoothing down the rows of ``x`` (T, ...): ``y = (1-a)·y_prev + a·x``, seeded with ``x``
    wherever ``y_prev`` is NaN (a column's first value, or after a NaN); rows up to ``start`` are ``x``.

    Row ``i`` is ``(1-a)·y[i-1] + (a·x[i])`` with ``a·x`` computed for all rows at once. Without ±inf
    in ``x``, ``y[i]`` is NaN exactly where ``x[i]`` is (``(1-a)·y + a·x`` of finite values is never
    NaN), so the seeds (``y[i-1]`` NaN, ``x[i]`` not) are known before the loop; with ±inf the loop
    tests ``y[i-1]`` itself.
    """
    om = 1.0 - alpha
    t = x.shape[0]
    y = np.multiply(x, alpha)
    y[:start + 1] = x[:start + 1]
    exact = not np.isinf(x).any()
    if exact:
        nan = np.isnan(x)
        seeds = nan[:-1] & ~nan[1:]  # row i - 1 of it: the seeds of row i
        seeded = np.flatnonzero(seeds.reshape(t - 1, -1).any(axis=1)) + 1 if t > 1 else np.zeros(0, dtype=np.int64)
        has_seed = np.zeros(t, dtype=bool)
        has_seed[seeded] = True
    tmp = np.empty(x.shape[1:])
    for i in range(start + 1, t):
        row = y[i]
        prev = y[i - 1]
        seed = seeds[i - 1] if exact else np.isnan(prev)
        np.multiply(prev, om, out=tmp)
        np.add(tmp, row, out=row)
        if not exact or has_seed[i]:
            np.copyto(row, x[i], where=seed)
    return y


def dx(plus: np.ndarray, minus: np.ndarray) -> np.ndarray:
    """DX from smoothed +DM, -DM: 100·|DI+ - DI-|/(DI+ + DI-) = 100·|+DM - -DM|/(+DM + -DM) (0 when both are 0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        tot = plus + minus
        out = plus - minus
        np.abs(out, out=out)
        out *= 100.0
        out /= tot
        out[tot == 0] = 0.0
        return out


def suffix_sums(x: np.ndarray) -> np.ndarray:
    """(T+1, ...): row i = sum of rows i..T-1 (row T = 0), summed from the last row up (a row loop:
    the same additions, in the same order, as ``cumsum`` of the reversed rows, several times faster)."""
    t = x.shape[0]
    out = np.empty((t + 1, *x.shape[1:]))
    out[t] = 0.0
    if t:
        out[t - 1] = x[t - 1]
    for i in range(t - 2, -1, -1):
        np.add(out[i + 1], x[i], out=out[i])
    return out


def anchored_vwap(h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray, anchor: np.ndarray,
                  ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AVWAP and sigma from row ``anchor`` (inclusive) to the last row, and the AVWAP from ``anchor``
    to row ``ref``; ``anchor``/``ref`` are ``(K, S)`` row indices. NaN rows and zero volume weigh nothing.

    AVWAP = sum(TP·V)/sum(V), TP = (H+L+C)/3; sigma² = sum(TP²·V)/sum(V) - AVWAP² (clamped at 0).
    Only the rows from the earliest index on are summed (a suffix sum does not depend on the rows above it).
    """
    top = int(min(anchor.min(), (ref + 1).min())) if anchor.size else 0
    top = min(max(top, 0), h.shape[0])
    h, lo, c, v = (x[top:] for x in (h, lo, c, v))
    anchor, ref = anchor - top, ref - top
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.empty((h.shape[0], 3, h.shape[1]))  # V, TP·V, TP²·V
        tp = h + lo
        tp += c
        tp /= 3.0
        w, tpv, tp2v = z[:, 0], z[:, 1], z[:, 2]
        np.copyto(w, v)
        np.nan_to_num(w, copy=False, nan=0.0)
        np.multiply(tp, w, out=tpv)
        np.nan_to_num(tpv, copy=False, nan=0.0)  # NaN rows (no bar) weigh nothing
        tp *= tpv
        np.copyto(tp2v, tp)
        np.nan_to_num(tp2v, copy=False, nan=0.0)
        del tp
        suf = suffix_sums(z)
        s0, s1, s2 = (np.take_along_axis(suf[:, k], anchor, axis=0) for k in range(3))
        avwap = s1 / s0
        sigma = np.sqrt(np.maximum(s2 / s0 - avwap * avwap, 0.0))
        cut0, cut1 = (np.take_along_axis(suf[:, k], ref + 1, axis=0) for k in range(2))
        return avwap, sigma, (s1 - cut1) / (s0 - cut0)


def last_true(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row of the last True per column, any True)."""
    t = mask.shape[0]
    return t - 1 - np.argmax(mask[::-1], axis=0), mask.any(axis=0)
