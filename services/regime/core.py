"""The regime classifier (pure): features of the market as of NY date D from closes on or before D,
a fixed rule table, a deterministic confidence (docs/regime.md).

Features (defaults; every window and threshold is a ``RegimeSettings`` field):
- realized volatility: sample std of the last 20 daily returns of the market series x sqrt(252);
- drawdown: the market close on D / the highest close of the last 63 sessions - 1;
- trend: SMA50 / SMA200 of the market series - 1;
- breadth: the fraction of the universe (the market symbol excluded) whose close on D is at or
  above its SMA50, over the symbols with 50 closes in the window ending D (at least 20 of them).

The market series is ``SCAN_MARKET_SYMBOL`` when it has a close on D, else the universe's
equal-weight index (``shared.market.equal_weight_index``, as the scanner's gate). Rows after D
are never read: the label of D is a function of the rows up to D only.

Rules, first match wins: STRESSED_VOL, STRESSED_DRAWDOWN, RISK_OFF_DRAWDOWN, RISK_OFF_VOL,
RISK_OFF_TREND, RISK_ON, NEUTRAL. Inputs that are missing or too short give REGIME_UNKNOWN with a
reason code instead (fail closed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec
import numpy as np

from shared.ids import stable_id
from shared.market import equal_weight_index
from shared.schemas import Regime, RegimeFeatures

ANNUAL = math.sqrt(252.0)
SCALES = {"vol": 0.05, "drawdown": 0.05, "trend": 0.02, "breadth": 0.05}  # confidence: margin of 1 scale -> 1.0
UNKNOWN_CODES = ("MARKET_MISSING", "MARKET_STALE", "MARKET_SHORT", "BREADTH_SHORT", "NON_FINITE")


class Params(msgspec.Struct, frozen=True, kw_only=True):
    """The classifier's settings as plain values (a shell builds it from ``RegimeSettings``)."""

    market_symbol: str = "SPY"
    vol_window: int = 20
    vol_low: float = 0.20
    vol_high: float = 0.30
    dd_window: int = 63
    dd_mild: float = -0.10
    dd_deep: float = -0.20
    trend_fast: int = 50
    trend_slow: int = 200
    trend_band: float = 0.02
    breadth_sma: int = 50
    breadth_low: float = 0.45
    breadth_high: float = 0.55
    breadth_min_symbols: int = 20
    history_bars: int = 260

    @classmethod
    def from_settings(cls, rs: object, market_symbol: str) -> Params:
        names = [f for f in cls.__struct_fields__ if f != "market_symbol"]
        return cls(market_symbol=market_symbol, **{f: getattr(rs, f"regime_{f}") for f in names})


class Result(msgspec.Struct, frozen=True, kw_only=True):
    label: str
    rule: str
    reason: str
    reason_code: str
    confidence: float
    features: RegimeFeatures
    market: str
    universe_size: int


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _thr(x: float) -> str:
    return f"{x * 100:g}%"


def _unknown(code: str, why: str, feats: RegimeFeatures, market: str, n: int) -> Result:
    return Result(label="REGIME_UNKNOWN", rule="UNKNOWN", reason=f"{code}: {why}", reason_code=code, confidence=0.0,
                  features=feats, market=market, universe_size=n)


def _market(close: np.ndarray, symbols: Sequence[str], cols: list[int], p: Params) -> tuple[np.ndarray | None, str]:
    if p.market_symbol in symbols:
        c = close[:, list(symbols).index(p.market_symbol)]
        if len(c) and math.isfinite(c[-1]):
            return c[~np.isnan(c)], "symbol"  # missing bars skipped; an infinite close stays (NON_FINITE)
    if not cols:
        return None, "none"
    return equal_weight_index(close[:, cols]), "universe_proxy"


def _breadth(close: np.ndarray, cols: list[int], n: int) -> tuple[float | None, int]:
    if len(close) < n or not cols:
        return None, 0
    win = close[-n:, cols]
    full = np.isfinite(win).all(axis=0)
    k = int(full.sum())
    if k == 0:
        return None, 0
    sma = win[:, full].sum(axis=0) / n
    return float((win[-1, full] >= sma - 1e-12).sum()) / k, k


def evaluate(close: np.ndarray, dates: Sequence[str], symbols: Sequence[str], asof: str,
             universe: Sequence[str] | None, p: Params) -> Result:
    """The features and the rule of ``asof`` from a (T, S) close matrix (NaN = no bar); rows after
    ``asof`` are cut off first."""
    uni = sorted((set(symbols) if universe is None else set(universe) & set(symbols)) - {p.market_symbol})
    first: dict[str, int] = {}
    for j, s in enumerate(symbols):
        first.setdefault(s, j)  # a symbol's first column, as list.index finds it
    cols = [first[s] for s in uni]
    empty = RegimeFeatures()
    if asof not in dates:
        got = max((d for d in dates if d <= asof), default="none")
        return _unknown("MARKET_STALE", f"no daily bars on {asof} (latest {got})", empty, "none", len(uni))
    close = close[: list(dates).index(asof) + 1]
    seen = np.isfinite(close).any(axis=0)
    uni = [s for s, j in zip(uni, cols, strict=True) if seen[j]]  # symbols with a bar in the window
    cols = [j for j in cols if seen[j]]
    series, market = _market(close, symbols, cols, p)
    if series is None:
        return _unknown("MARKET_MISSING", f"no {p.market_symbol} bar on {asof} and no universe for the proxy", empty,
                        market, len(uni))
    need = max(p.trend_slow, p.trend_fast, p.dd_window, p.vol_window + 1)
    breadth, k = _breadth(close, cols, p.breadth_sma)
    if len(series) < need:
        feats = RegimeFeatures(breadth=breadth, breadth_symbols=k)
        label = p.market_symbol if market == "symbol" else "universe proxy"
        return _unknown("MARKET_SHORT", f"{label} has {len(series)} closes through {asof}, the features need {need}",
                        feats, market, len(uni))
    with np.errstate(all="ignore"):  # a non-finite input gives a non-finite feature: NON_FINITE below
        ret = series[-p.vol_window:] / series[-p.vol_window - 1:-1] - 1.0
        vol = float(np.std(ret, ddof=1)) * ANNUAL
        dd = float(series[-1] / np.max(series[-p.dd_window:]) - 1.0)
        trend = float(np.mean(series[-p.trend_fast:]) / np.mean(series[-p.trend_slow:]) - 1.0)
    feats = RegimeFeatures(realized_vol=round(vol, 8), drawdown=round(dd, 8), trend=round(trend, 8),
                           breadth=None if breadth is None else round(breadth, 8), breadth_symbols=k)
    if not all(math.isfinite(x) for x in (vol, dd, trend)):
        return _unknown("NON_FINITE", f"a feature is not finite on {asof}", feats, market, len(uni))
    if breadth is None or k < p.breadth_min_symbols:
        return _unknown("BREADTH_SHORT", f"{k} universe symbols have {p.breadth_sma} closes through {asof}, "
                        f"breadth needs {p.breadth_min_symbols}", feats, market, len(uni))
    rule, label, reason, margins = _rules(vol, dd, trend, breadth, p)
    conf = 0.5 if not margins else round(min(1.0, 0.5 + 0.5 * max(0.0, min(margins))), 4)
    return Result(label=label, rule=rule, reason=reason, reason_code="", confidence=conf, features=feats,
                  market=market, universe_size=len(uni))


def _rules(vol: float, dd: float, trend: float, breadth: float, p: Params) -> tuple[str, str, str, list[float]]:
    """(rule, label, reason in words, margins of its conditions in scale units): the rule table."""
    s = SCALES
    if vol >= p.vol_high:
        return "STRESSED_VOL", "STRESSED", f"realized volatility {_pct(vol)} ≥ {_thr(p.vol_high)}", [(vol - p.vol_high) / s["vol"]]
    if dd <= p.dd_deep:
        return "STRESSED_DRAWDOWN", "STRESSED", f"drawdown {_pct(dd)} ≤ {_thr(p.dd_deep)}", [(p.dd_deep - dd) / s["drawdown"]]
    if dd <= p.dd_mild:
        return "RISK_OFF_DRAWDOWN", "RISK_OFF", f"drawdown {_pct(dd)} ≤ {_thr(p.dd_mild)}", [(p.dd_mild - dd) / s["drawdown"]]
    if vol >= p.vol_low:
        return "RISK_OFF_VOL", "RISK_OFF", f"realized volatility {_pct(vol)} ≥ {_thr(p.vol_low)}", [(vol - p.vol_low) / s["vol"]]
    if trend <= -p.trend_band and breadth < p.breadth_low:
        return ("RISK_OFF_TREND", "RISK_OFF", f"trend {_pct(trend)} ≤ -{_thr(p.trend_band)} and breadth {_pct(breadth)} < "
                f"{_thr(p.breadth_low)}", [(-p.trend_band - trend) / s["trend"], (p.breadth_low - breadth) / s["breadth"]])
    if trend >= p.trend_band and breadth >= p.breadth_high:
        return ("RISK_ON", "RISK_ON", f"trend {_pct(trend)} ≥ {_thr(p.trend_band)} and breadth {_pct(breadth)} ≥ "
                f"{_thr(p.breadth_high)}", [(trend - p.trend_band) / s["trend"], (breadth - p.breadth_high) / s["breadth"]])
    return ("NEUTRAL", "NEUTRAL", f"no rule fired: volatility {_pct(vol)}, drawdown {_pct(dd)}, trend {_pct(trend)}, "
            f"breadth {_pct(breadth)}", [])


def classify(close: np.ndarray, dates: Sequence[str], symbols: Sequence[str], asof: str, session: str,
             universe: Sequence[str] | None, p: Params, *, ts: int = 0,
             provenance: dict[str, str] | None = None) -> Regime:
    """The ``Regime`` as of ``asof`` for the decisions of ``session``, with the label of the session
    before ``asof`` (same inputs, one row less) and, when they differ, the change in words."""
    res = evaluate(close, dates, symbols, asof, universe, p)
    prev = ""
    if asof in dates and list(dates).index(asof) > 0:
        i = list(dates).index(asof)
        prev = evaluate(close[:i], dates[:i], symbols, dates[i - 1], universe, p).label
    change = f"{res.label} since {asof}: {res.reason}" if prev and prev != res.label else ""
    rid = stable_id("rg", asof, session, res.label, res.rule, msgspec.json.encode(res.features).decode(), res.market)
    return Regime(regime_id=rid, date=asof, session=session, label=res.label, rule=res.rule,  # type: ignore[arg-type]
                  reason=res.reason, reason_code=res.reason_code, confidence=res.confidence, features=res.features,
                  market=res.market, market_symbol=p.market_symbol if res.market == "symbol" else "",  # type: ignore[arg-type]
                  universe_size=res.universe_size, previous_label=prev, change=change, ts=ts,
                  provenance=dict(provenance or {}))
