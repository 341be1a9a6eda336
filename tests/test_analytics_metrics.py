"""Run-report metrics against empyrical (same inputs) and against its published test vectors."""

from __future__ import annotations

import math

import empyrical as ep
import numpy as np
import pandas as pd
import pytest

from services.analytics import metrics as M
from services.analytics import metrics_trades as T

# empyrical's test vectors (tests/test_stats.py of the empyrical project): daily returns in %
SIMPLE_BENCHMARK = np.array([0.0, 1, 0, 1, 0, 1, 0, 1, 0]) / 100
POSITIVE = np.array([1.0, 2, 1, 1, 1, 1, 1, 1, 1]) / 100
NEGATIVE = np.array([0.0, -6, -7, -1, -9, -2, -6, -8, -5]) / 100
ALL_NEGATIVE = np.array([-2.0, -6, -7, -1, -9, -2, -6, -8, -5]) / 100
MIXED = np.array([1.0, 10, -4, 2, 3, 2, 1, -10]) / 100  # empyrical's mixed_returns without its leading NaN
VECTORS = {"simple_benchmark": SIMPLE_BENCHMARK, "positive": POSITIVE, "negative": NEGATIVE,
           "all_negative": ALL_NEGATIVE, "mixed": MIXED}
RNG = np.random.default_rng(20240601)
VECTORS["random_500"] = RNG.normal(0.0005, 0.012, 500)


def close(ours: float | None, ref: float) -> bool:
    if ours is None:
        return not math.isfinite(ref)
    return math.isclose(ours, ref, rel_tol=1e-9, abs_tol=1e-12)


# published values (empyrical's tests), for the vectors above
PUBLISHED = [
    (M.annual_volatility, MIXED, 0.9136465399704637),
    (M.sharpe, MIXED, 1.7238613961706866),
    (M.sharpe, NEGATIVE, -24.406808633910085),
    (M.sortino, MIXED, 2.605531251673693),
    (M.sortino, NEGATIVE, -13.532743075043401),
    (M.max_drawdown, MIXED, 0.1),
    (M.max_drawdown, POSITIVE, 0.0),
]


@pytest.mark.parametrize(("fn", "rets", "want"), PUBLISHED, ids=lambda x: getattr(x, "__name__", ""))
def test_published_empyrical_values(fn, rets, want) -> None:
    assert fn(rets) == pytest.approx(want, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_each_return_metric_equals_empyrical_on_the_same_inputs(name: str) -> None:
    r = VECTORS[name]
    assert close(M.cagr(r), ep.cagr(r))
    assert close(M.annual_volatility(r), ep.annual_volatility(r))
    assert close(M.sharpe(r), ep.sharpe_ratio(r))
    assert close(M.sortino(r), ep.sortino_ratio(r))
    assert close(M.max_drawdown(r), -ep.max_drawdown(r))
    assert close(M.calmar(r), ep.calmar_ratio(r))
    assert close(M.downside_risk(r), ep.downside_risk(r))
    assert close(M.total_return(r), ep.cum_returns_final(r))


@pytest.mark.parametrize("name", ["mixed", "negative", "random_500"])
def test_beta_and_alpha_equal_empyrical(name: str) -> None:
    r = VECTORS[name]
    b = SIMPLE_BENCHMARK[: len(r)] if len(r) <= len(SIMPLE_BENCHMARK) else RNG.normal(0.0003, 0.01, len(r))
    assert close(M.beta(r, b), ep.beta(r, b))
    assert close(M.alpha(r, b), ep.alpha(r, b))


def test_monthly_and_yearly_returns_equal_empyrical_aggregate_returns() -> None:
    r = VECTORS["random_500"]
    idx = pd.bdate_range("2016-01-04", periods=len(r))
    curve = [100_000.0, *list(100_000.0 * np.cumprod(1 + r))]
    labels = ["2015-12-31", *[d.strftime("%Y-%m-%d") for d in idx]]
    table = M.monthly_table(curve, labels)
    ref_m = ep.aggregate_returns(pd.Series(r, index=idx), "monthly")
    ref_y = ep.aggregate_returns(pd.Series(r, index=idx), "yearly")
    for (y, m), v in ref_m.items():
        assert table[str(y)][f"{m:02d}"] == pytest.approx(v, rel=1e-9, abs=1e-12)
    for y, v in ref_y.items():
        assert table[str(y)]["year"] == pytest.approx(v, rel=1e-9, abs=1e-12)


def test_undefined_metrics_are_none_not_nan() -> None:
    assert M.cagr([]) is None and M.sharpe([0.01]) is None and M.sharpe([0.01, 0.01]) is None
    assert M.sortino(list(POSITIVE)) is None  # no downside: empyrical says inf
    assert M.calmar(list(POSITIVE)) is None
    assert M.worst_drawdown([1.0, 1.0, 2.0], ["a", "b", "c"]) is None


def test_worst_drawdown_dates_and_durations() -> None:
    curve = [100.0, 110.0, 99.0, 88.0, 105.0, 111.0, 100.0]
    labels = ["2018-01-01", "2018-01-02", "2018-01-03", "2018-01-04", "2018-01-05", "2018-01-08", "2018-01-09"]
    dd = M.worst_drawdown(curve, labels)
    assert dd is not None
    assert dd.depth == pytest.approx(0.2)
    assert (dd.peak, dd.trough, dd.recovery) == ("2018-01-02", "2018-01-04", "2018-01-08")
    assert (dd.sessions_to_trough, dd.sessions_underwater, dd.calendar_days) == (2, 4, 6)
    unrec = M.worst_drawdown([100.0, 90.0, 95.0], ["2018-01-01", "2018-01-02", "2018-01-03"])
    assert unrec is not None and unrec.recovery == "" and unrec.sessions_underwater == 2


def test_buy_and_hold_equal_weight_carries_missing_closes_forward() -> None:
    closes = np.array([[10.0, 20.0, np.nan], [11.0, 18.0, 5.0], [np.nan, 22.0, 6.0]])
    assert M.buy_and_hold(closes) == pytest.approx([1.0, (1.1 + 0.9) / 2, (1.1 + 1.1) / 2])


def trade(pnl: float, r: float | None, ts: int, sym: str = "AAA", kinds=("stop",), hold: int = 2) -> dict:
    return {"trade_id": f"tr-{ts}", "symbol": sym, "realized_pnl": pnl, "r_multiple": r, "closed_ts": ts,
            "exit_kinds": list(kinds), "holding_sessions": hold, "holding_seconds": hold * 86400.0, "fees": 1.0}


def test_trade_metrics_by_hand() -> None:
    ts = [trade(300, 1.5, 1), trade(-100, -0.5, 2), trade(-100, -0.5, 3), trade(500, 2.5, 4, "BBB", ("exit",), 6),
          trade(-200, -1.0, 5, hold=1)]
    m = T.trade_metrics(T.ordered(reversed(ts)))
    assert m["trades"] == 5 and m["wins"] == 2 and m["win_rate"] == 0.4
    assert m["profit_factor"] == pytest.approx(800 / 400)
    assert m["expectancy"] == pytest.approx(80.0)
    assert m["expectancy_r"] == pytest.approx(0.4)
    rs = [1.5, -0.5, -0.5, 2.5, -1.0]
    assert m["sqn"] == pytest.approx(math.sqrt(5) * 0.4 / float(np.std(rs, ddof=1)))
    assert (m["max_win_streak"], m["max_loss_streak"]) == (1, 2)
    assert m["avg_holding_sessions"] == pytest.approx(2.6) and m["median_holding_sessions"] == 2
    assert m["payoff_ratio"] == pytest.approx(400 / (400 / 3))
    by_exit = {row["key"]: row for row in T.by_exit_reason(ts)}
    assert by_exit["exit"]["trades"] == 1 and by_exit["stop"]["net_pnl"] == pytest.approx(-100)
    assert [row["key"] for row in T.by_symbol(ts)] == ["AAA", "BBB"]
    assert T.profit_factor([trade(5, 1, 1)]) is None
    assert T.exposure_time([0.0, 10.0, 0.0, 5.0]) == 0.5
