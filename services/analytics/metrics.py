"""Return-series metrics of a run (pure): CAGR, volatility, Sharpe, Sortino, Calmar, drawdowns, beta.

Every function takes daily simple returns (``E_t / E_{t-1} - 1``, oldest first) or the equity
curve they come from, and follows empyrical's conventions (252 sessions a year, sample standard
deviation, no risk-free rate) so that ``tests/test_analytics_metrics.py`` can compare each one
with empyrical on the same inputs. A metric that is undefined for its input (no returns, zero
variance, no drawdown) is ``None``, never NaN or infinity: the run report is canonical JSON.
Definitions: docs/research.md, "Metrics".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

ANNUALIZATION = 252


def returns_of(curve: Sequence[float]) -> list[float]:
    """Daily simple returns of an equity curve (one fewer than the points)."""
    return [curve[i] / curve[i - 1] - 1.0 if curve[i - 1] else 0.0 for i in range(1, len(curve))]


def total_return(returns: Sequence[float]) -> float:
    """Compounded return over the whole series (empyrical ``cum_returns_final``)."""
    return float(np.prod(1.0 + np.asarray(returns, dtype=float)) - 1.0) if len(returns) else 0.0


def cagr(returns: Sequence[float], annualization: int = ANNUALIZATION) -> float | None:
    """Compound annual growth rate: ``(1 + total) ** (annualization / n) - 1`` (empyrical ``cagr``)."""
    n = len(returns)
    if n == 0:
        return None
    growth = 1.0 + total_return(returns)
    if growth <= 0:
        return -1.0
    return growth ** (annualization / n) - 1.0


def annual_volatility(returns: Sequence[float], annualization: int = ANNUALIZATION) -> float | None:
    """Sample standard deviation of daily returns x sqrt(annualization)."""
    if len(returns) < 2:
        return None
    return float(np.std(np.asarray(returns, dtype=float), ddof=1) * math.sqrt(annualization))


def sharpe(returns: Sequence[float], annualization: int = ANNUALIZATION) -> float | None:
    """mean / sample std of daily returns x sqrt(annualization); risk-free rate 0."""
    r = np.asarray(returns, dtype=float)
    if len(r) < 2:
        return None
    sd = float(np.std(r, ddof=1))
    if sd == 0 or not math.isfinite(sd):
        return None
    return float(r.mean() / sd * math.sqrt(annualization))


def downside_risk(returns: Sequence[float], annualization: int = ANNUALIZATION) -> float:
    """sqrt(mean(min(r, 0)^2)) x sqrt(annualization) (empyrical ``downside_risk``, target 0)."""
    r = np.minimum(np.asarray(returns, dtype=float), 0.0)
    return float(math.sqrt(float(np.mean(r * r))) * math.sqrt(annualization)) if len(r) else 0.0


def sortino(returns: Sequence[float], annualization: int = ANNUALIZATION) -> float | None:
    """Annualized mean return / annualized downside risk (target 0)."""
    if len(returns) < 1:
        return None
    dr = downside_risk(returns, annualization)
    if dr == 0:
        return None
    return float(np.mean(np.asarray(returns, dtype=float)) * annualization / dr)


def max_drawdown(returns: Sequence[float]) -> float:
    """Largest peak-to-trough fall of the compounded curve (start value counted as a peak), >= 0."""
    curve = np.concatenate([[1.0], np.cumprod(1.0 + np.asarray(returns, dtype=float))])
    peak = np.maximum.accumulate(curve)
    return float(np.max(1.0 - curve / peak))


def calmar(returns: Sequence[float], annualization: int = ANNUALIZATION) -> float | None:
    """CAGR / max drawdown (None without a drawdown)."""
    mdd = max_drawdown(returns)
    g = cagr(returns, annualization)
    if mdd <= 0 or g is None:
        return None
    return g / mdd


def beta(returns: Sequence[float], bench: Sequence[float]) -> float | None:
    """cov(r, b) / var(b), population moments (empyrical ``beta``)."""
    r = np.asarray(returns, dtype=float)
    b = np.asarray(bench, dtype=float)
    if len(r) != len(b) or len(r) < 2:
        return None
    res = b - b.mean()
    var = float(np.mean(res * res))
    if var < 1e-30:
        return None
    return float(np.mean(res * r) / var)


def alpha(returns: Sequence[float], bench: Sequence[float], annualization: int = ANNUALIZATION) -> float | None:
    """Annualized mean of ``r - beta * b``: ``(1 + mean) ** annualization - 1`` (empyrical ``alpha``)."""
    be = beta(returns, bench)
    if be is None:
        return None
    a = np.asarray(returns, dtype=float) - be * np.asarray(bench, dtype=float)
    return float((1.0 + a.mean()) ** annualization - 1.0)


@dataclass(frozen=True)
class Drawdown:
    """The deepest drawdown of a curve: peak, trough and recovery labels, depth and durations."""

    depth: float  # fraction of the peak, >= 0
    peak: str
    trough: str
    recovery: str  # "" when the curve never got back to the peak
    sessions_to_trough: int
    sessions_underwater: int  # peak to recovery, or to the last point when not recovered
    calendar_days: int  # same span in calendar days

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _days(a: str, b: str) -> int:
    from datetime import date

    try:
        return (date.fromisoformat(b) - date.fromisoformat(a)).days
    except ValueError:
        return 0


def underwater(curve: Sequence[float]) -> list[float]:
    """Drawdown of each point from its running peak, as a fraction (>= 0)."""
    c = np.asarray(curve, dtype=float)
    if not len(c):
        return []
    peak = np.maximum.accumulate(c)
    return [float(x) for x in np.where(peak > 0, 1.0 - c / np.where(peak > 0, peak, 1.0), 0.0)]


def worst_drawdown(curve: Sequence[float], labels: Sequence[str]) -> Drawdown | None:
    """The deepest drawdown of ``curve`` (labels: one per point). The peak is its first point at the
    running maximum before the trough; the trough the first point of the largest drawdown; recovery
    the first later point at or above the peak. None when the curve never falls."""
    if len(curve) != len(labels):
        raise ValueError("curve and labels differ in length")
    dd = underwater(curve)
    if not dd or max(dd) <= 0:
        return None
    t = int(np.argmax(dd))
    peak_value = max(curve[: t + 1])
    p = next(i for i in range(t + 1) if curve[i] == peak_value)
    rec = next((i for i in range(t + 1, len(curve)) if curve[i] >= peak_value), None)
    end = rec if rec is not None else len(curve) - 1
    return Drawdown(depth=dd[t], peak=labels[p], trough=labels[t], recovery=labels[rec] if rec is not None else "",
                    sessions_to_trough=t - p, sessions_underwater=end - p, calendar_days=_days(labels[p], labels[end]))


def period_returns(curve: Sequence[float], labels: Sequence[str], key_len: int) -> dict[str, float]:
    """Compounded return per period (``labels[i][:key_len]``: 7 = month ``YYYY-MM``, 4 = year).

    ``curve[0]`` is the base (the value before the first labelled point); each period's return is
    its last value over the last value of the period before (empyrical ``aggregate_returns``)."""
    out: dict[str, float] = {}
    base = curve[0] if curve else 0.0
    last: dict[str, float] = {}
    order: list[str] = []
    for v, lab in zip(curve[1:], labels[1:], strict=True):
        k = lab[:key_len]
        if k not in last:
            order.append(k)
        last[k] = v
    for k in order:
        out[k] = last[k] / base - 1.0 if base else 0.0
        base = last[k]
    return out


def monthly_table(curve: Sequence[float], labels: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{YYYY: {MM: return, ..., "year": return}}`` from the daily curve."""
    months = period_returns(curve, labels, 7)
    years = period_returns(curve, labels, 4)
    table: dict[str, dict[str, float]] = {}
    for k, v in months.items():
        table.setdefault(k[:4], {})[k[5:7]] = v
    for y, v in years.items():
        table.setdefault(y, {})["year"] = v
    return table


def buy_and_hold(closes: np.ndarray) -> list[float]:
    """Equal-weight buy-and-hold value of the columns of ``closes`` (T x S, NaN = no bar), from 1.0.

    Bought at row 0's close, never rebalanced: the value at t is the mean over the columns with a
    row-0 close of ``close_t / close_0``, a missing later close carried forward (a symbol that
    stops trading keeps its last value). Columns without a row-0 close are not held."""
    c = np.asarray(closes, dtype=float)
    if c.ndim != 2 or c.shape[0] == 0:
        return []
    held = np.isfinite(c[0]) & (c[0] > 0)
    if not held.any():
        return [1.0] * c.shape[0]
    sub = c[:, held].copy()
    for t in range(1, sub.shape[0]):  # carry forward
        miss = ~np.isfinite(sub[t])
        sub[t, miss] = sub[t - 1, miss]
    return [float(x) for x in (sub / sub[0]).mean(axis=1)]


def return_metrics(curve: Sequence[float], labels: Sequence[str], bench_curve: Sequence[float] | None = None,
                   annualization: int = ANNUALIZATION) -> dict[str, object]:
    """The return-series block of the run report (labels[0] is the base point's label)."""
    r = returns_of(curve)
    dd = worst_drawdown(curve, labels) if curve else None
    out: dict[str, object] = {
        "total_return": total_return(r), "cagr": cagr(r, annualization),
        "annual_volatility": annual_volatility(r, annualization), "sharpe": sharpe(r, annualization),
        "sortino": sortino(r, annualization), "calmar": calmar(r, annualization), "max_drawdown": max_drawdown(r),
        "drawdown": dd.to_dict() if dd else None,
    }
    if bench_curve is not None and len(bench_curve) == len(curve):
        b = returns_of(bench_curve)
        bt, bc = total_return(b), cagr(b, annualization)
        out["benchmark"] = {
            "total_return": bt, "cagr": bc, "annual_volatility": annual_volatility(b, annualization),
            "sharpe": sharpe(b, annualization), "max_drawdown": max_drawdown(b),
            "excess_return": total_return(r) - bt,
            "excess_cagr": (out["cagr"] - bc) if out["cagr"] is not None and bc is not None else None,  # type: ignore[operator]
            "beta": beta(r, b), "alpha": alpha(r, b, annualization),
        }
    return out
