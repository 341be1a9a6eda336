"""Regime classifier (pure): each rule of the table on crafted series, fail-closed inputs, the
thresholds as settings, no look-ahead, determinism, the label change in words, late 2018 on the
developers' data."""

from __future__ import annotations

import re

import numpy as np
import pytest

from avwap.regime_run import label_sessions
from services.regime.core import Params, classify
from services.regime.worker import regime_for
from shared.artifacts import canonical_json
from shared.bars import Panel, load_bars
from shared.clock import calendar
from shared.settings import load_settings
from tests.conftest import ROOT

T = 260
DATES = calendar().sessions_in_range("2017-01-03", "2018-12-31")[:T]
D = DATES[-1]
NEXT = calendar().next_session(D)
P = Params()


def market(kind: str) -> np.ndarray:
    """A crafted market close series of T sessions ending on D."""
    t = np.arange(T, dtype=float)
    if kind == "flat":
        return np.full(T, 100.0)
    if kind == "up":  # +0.05%/day: trend ~ +3.8%, no drawdown, no volatility
        return 100.0 * 1.0005 ** t
    if kind == "slow_down":  # -0.03%/day: trend ~ -2.2%, 63-day drawdown ~ -1.9%
        return 100.0 * 0.9997 ** t
    if kind in ("dd12", "dd25"):  # flat, then a steady fall over the last 30 sessions
        depth = 0.12 if kind == "dd12" else 0.25
        c = np.full(T, 100.0)
        c[-30:] = 100.0 * (1 - depth) ** (np.arange(1, 31) / 30)
        return c
    if kind in ("vol24", "vol45"):  # alternating daily returns of +-1.5% / +-3%
        step = 0.015 if kind == "vol24" else 0.03
        r = np.where(t % 2 == 0, step, -step)
        return 100.0 * np.cumprod(1 + r)
    raise ValueError(kind)


def closes(kind: str, breadth: float, n: int = 30) -> tuple[np.ndarray, list[str]]:
    """(T x (n+1)) closes: SPY = the crafted market, n flat symbols of which ``breadth`` close above their SMA50 on D."""
    syms = ["SPY", *(f"S{i:02d}" for i in range(n))]
    m = np.full((T, n + 1), 50.0)
    m[:, 0] = market(kind)
    above = round(breadth * n)
    m[-1, 1:1 + above] = 51.0
    m[-1, 1 + above:] = 49.0
    return m, syms


RULES = {
    "STRESSED_VOL": ("vol45", 0.5, "STRESSED"),
    "STRESSED_DRAWDOWN": ("dd25", 0.5, "STRESSED"),
    "RISK_OFF_DRAWDOWN": ("dd12", 0.5, "RISK_OFF"),
    "RISK_OFF_VOL": ("vol24", 0.5, "RISK_OFF"),
    "RISK_OFF_TREND": ("slow_down", 0.3, "RISK_OFF"),
    "RISK_ON": ("up", 0.7, "RISK_ON"),
    "NEUTRAL": ("flat", 0.5, "NEUTRAL"),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_each_rule_of_the_table_fires_on_its_crafted_series(rule: str) -> None:
    kind, breadth, label = RULES[rule]
    c, syms = closes(kind, breadth)
    r = classify(c, DATES, syms, D, NEXT, None, P)
    assert (r.rule, r.label, r.market) == (rule, label, "symbol")
    assert r.reason_code == "" and 0.5 <= r.confidence <= 1.0
    assert r.features.breadth == pytest.approx(round(breadth * 30) / 30)


def test_the_features_are_the_documented_formulas() -> None:
    c, syms = closes("vol24", 0.5)
    f = classify(c, DATES, syms, D, NEXT, None, P).features
    s = c[:, 0]
    ret = s[-20:] / s[-21:-1] - 1
    assert f.realized_vol == pytest.approx(np.std(ret, ddof=1) * np.sqrt(252))
    assert f.drawdown == pytest.approx(s[-1] / s[-63:].max() - 1)
    assert f.trend == pytest.approx(s[-50:].mean() / s[-200:].mean() - 1)
    assert f.breadth_symbols == 30


def test_a_trend_without_the_breadth_does_not_fire() -> None:
    c, syms = closes("up", 0.5)
    assert classify(c, DATES, syms, D, NEXT, None, P).label == "NEUTRAL"  # up trend, breadth < 0.55
    c, syms = closes("slow_down", 0.5)
    assert classify(c, DATES, syms, D, NEXT, None, P).label == "NEUTRAL"  # down trend, breadth >= 0.45


def test_the_first_matching_rule_wins() -> None:
    c, syms = closes("dd25", 0.5)
    c[-20:, 0] *= np.where(np.arange(20) % 2 == 0, 1.04, 0.96)  # deep drawdown AND high volatility
    assert classify(c, DATES, syms, D, NEXT, None, P).rule == "STRESSED_VOL"


def test_every_threshold_is_a_setting() -> None:
    c, syms = closes("vol24", 0.5)
    assert classify(c, DATES, syms, D, NEXT, None, Params(vol_low=0.5, vol_high=0.6)).label == "NEUTRAL"
    c, syms = closes("dd12", 0.5)
    assert classify(c, DATES, syms, D, NEXT, None, Params(dd_mild=-0.15)).label == "NEUTRAL"
    s = load_settings(regime_vol_low=0.5, regime_dd_mild=-0.15, regime_breadth_min_symbols=40)
    p = Params.from_settings(s.regime, "QQQ")
    assert (p.vol_low, p.dd_mild, p.breadth_min_symbols, p.market_symbol) == (0.5, -0.15, 40, "QQQ")


# -- fail closed ---------------------------------------------------------------------------------------
def test_short_history_is_unknown_with_a_reason() -> None:
    c, syms = closes("flat", 0.5)
    r = classify(c[-150:], DATES[-150:], syms, D, NEXT, None, P)
    assert (r.label, r.rule, r.reason_code, r.confidence) == ("REGIME_UNKNOWN", "UNKNOWN", "MARKET_SHORT", 0.0)
    assert "150 closes" in r.reason


def test_no_bar_on_the_date_is_unknown_stale() -> None:
    c, syms = closes("flat", 0.5)
    r = classify(c[:-1], DATES[:-1], syms, D, NEXT, None, P)
    assert (r.label, r.reason_code) == ("REGIME_UNKNOWN", "MARKET_STALE")


def test_too_few_breadth_symbols_is_unknown() -> None:
    c, syms = closes("flat", 0.5, n=19)
    r = classify(c, DATES, syms, D, NEXT, None, P)
    assert (r.label, r.reason_code) == ("REGIME_UNKNOWN", "BREADTH_SHORT")
    c2, syms2 = closes("flat", 0.5)
    c2[-10, 1:] = np.nan  # a hole in every SMA window: none has a full window
    assert classify(c2, DATES, syms2, D, NEXT, None, P).reason_code == "BREADTH_SHORT"


def test_no_market_symbol_and_no_universe_is_unknown_missing() -> None:
    c, _ = closes("flat", 0.5)
    r = classify(c[:, :1], DATES, ["QQQ"], D, NEXT, [], P)  # an empty universe file
    assert (r.label, r.reason_code, r.market) == ("REGIME_UNKNOWN", "MARKET_MISSING", "none")


def test_without_the_market_symbol_the_universe_proxy_is_the_market() -> None:
    c, syms = closes("flat", 0.5)
    c[-1, 0] = np.nan  # SPY has no bar on D: the equal-weight index of the universe
    r = classify(c, DATES, syms, D, NEXT, None, P)
    assert r.market == "universe_proxy" and r.market_symbol == ""
    r2 = classify(c[:, 1:], DATES, syms[1:], D, NEXT, None, P)
    assert r2.market == "universe_proxy" and r2.features == r.features


def test_a_non_finite_close_is_unknown() -> None:
    c, syms = closes("flat", 0.5)
    c[-5, 0] = np.inf
    assert classify(c, DATES, syms, D, NEXT, None, P).reason_code == "NON_FINITE"


# -- no look-ahead, determinism, the change in words -----------------------------------------------
def test_the_label_of_d_never_reads_bars_after_d() -> None:
    c, syms = closes("dd12", 0.5)
    i = DATES.index(DATES[-20])
    base = classify(c[: i + 1], DATES[: i + 1], syms, DATES[i], DATES[i + 1], None, P)
    rng = np.random.default_rng(7)
    for _ in range(5):
        future = c.copy()
        future[i + 1:] *= rng.uniform(0.3, 3.0, size=future[i + 1:].shape)
        got = classify(future, DATES, syms, DATES[i], DATES[i + 1], None, P)
        assert canonical_json(got) == canonical_json(base)


def test_same_inputs_same_bytes_whoever_runs_it() -> None:
    c, syms = closes("vol24", 0.5)
    a = canonical_json(classify(c, DATES, syms, D, NEXT, None, P, ts=5, provenance={"x": "y"}))
    b = canonical_json(classify(c.copy(), list(DATES), list(syms), D, NEXT, None, P, ts=5, provenance={"x": "y"}))
    assert a == b


def test_a_label_change_is_explained_in_words() -> None:
    c, syms = closes("dd12", 0.5)
    got = [classify(c[: i + 1], DATES[: i + 1], syms, DATES[i], DATES[i + 1], None, P) for i in range(T - 31, T - 1)]
    first = next(k for k, r in enumerate(got) if r.label == "RISK_OFF")
    r = got[first]
    assert r.previous_label == "NEUTRAL" and got[first - 1].label == "NEUTRAL"
    assert re.fullmatch(rf"RISK_OFF since {r.date}: drawdown -10\.\d% ≤ -10%", r.change), r.change
    assert got[first + 1].label == "RISK_OFF" and got[first + 1].change == ""  # no change: nothing to explain


# -- the real data -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sp500():
    return load_bars(ROOT / "data" / "reference" / "sp500_daily_2015_2018.csv.gz").frame


def test_late_2018_is_risk_off_or_stressed_on_the_developers_data(sp500) -> None:
    labels = {r.date: r for r in label_sessions(sp500, "2018-10-01", "2018-12-31", load_settings())}
    for d in ("2018-10-24", "2018-10-26", "2018-12-07", "2018-12-20", "2018-12-24"):
        assert labels[d].label in ("RISK_OFF", "STRESSED"), (d, labels[d].reason)
    off = [d for d, r in labels.items() if r.label in ("RISK_OFF", "STRESSED")]
    assert len(off) >= 20
    assert all(r.label != "REGIME_UNKNOWN" for r in labels.values())


def test_the_worker_and_the_offline_labeler_agree_and_ignore_the_future(sp500) -> None:
    s = load_settings()
    d, session = "2018-10-24", "2018-10-25"
    offline = {r.date: r for r in label_sessions(sp500, d, d, s)}[d]
    panel = Panel.from_frame(sp500, before=session, lookback=s.regime.regime_history_bars)
    live = regime_for(panel, session, s)
    assert (live.label, live.rule, live.features, live.session) == (offline.label, offline.rule, offline.features, session)
    perturbed = sp500.copy()
    later = perturbed["trade_date"] > d
    perturbed.loc[later, ["open", "high", "low", "close"]] *= 0.5
    again = {r.date: r for r in label_sessions(perturbed, d, "2018-12-31", s)}[d]
    assert canonical_json(again) == canonical_json(offline)


def test_the_daily_report_says_in_words_since_when_the_label_holds(tmp_path) -> None:
    from services.analytics.report import regime_lines
    from shared.artifacts import write_json_artifact

    c, syms = closes("dd12", 0.5)
    for i in range(T - 12, T - 1):
        r = classify(c[: i + 1], DATES[: i + 1], syms, DATES[i], DATES[i + 1], None, P)
        write_json_artifact(tmp_path / "regimes" / f"{r.date}.json", r)
    lines = regime_lines(tmp_path, D)
    assert lines[0].startswith(f"regime of {D}: RISK_OFF by RISK_OFF_DRAWDOWN (as of {DATES[-2]}")
    assert re.fullmatch(r"RISK_OFF since \d{4}-\d\d-\d\d: drawdown -10\.\d% ≤ -10%", lines[1])
    assert regime_lines(tmp_path, "2019-06-03")[0].startswith("regime of 2019-06-03: missing")
