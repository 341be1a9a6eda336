"""The run report over a hand-checked crafted run, the tear sheet files, and `avwap report --run`."""

from __future__ import annotations

import math
import os
import stat
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avwap.cli import app
from services.analytics.runreport import headline, headline_metrics, load_run, run_report
from services.analytics.tearsheet import CHARTS, write_tearsheet
from shared.artifacts import write_json_artifact
from shared.bars import BarStore
from shared.clock import calendar
from shared.schemas import BarRow

DATES = ["2018-01-02", "2018-01-03", "2018-01-04", "2018-01-05", "2018-01-08"]
EQUITY = [102_000.0, 99_960.0, 100_959.6, 100_959.6, 103_988.388]  # +2%, -2%, +1%, 0, +3%
GROSS = [50_000.0, 0.0, 30_000.0, 0.0, 20_000.0]
SPY = {"2017-12-29": 100.0, "2018-01-02": 101.0, "2018-01-03": 99.0, "2018-01-04": 100.0, "2018-01-05": 102.0,
       "2018-01-08": 103.0}


def _trade(tid: str, sym: str, pnl: float, r: float, closed: str, ts: int, kind: str, hold: int) -> dict:
    return {"trade_id": tid, "symbol": sym, "status": "closed", "realized_pnl": pnl, "r_multiple": r,
            "closed_date": closed, "closed_ts": ts, "opened_date": DATES[0], "exit_kinds": [kind],
            "holding_sessions": hold, "holding_seconds": hold * 86400.0, "fees": 1.0, "entry_qty": 100,
            "avg_entry_price": 50.0, "avg_exit_price": 50.0 + pnl / 100, "mae_r": -0.5, "mfe_r": r + 0.5}


TRADES = {"2018-01-03": [_trade("tr-a", "AAA", 1000.0, 2.0, "2018-01-03", 3, "stop", 2)],
          "2018-01-04": [_trade("tr-b", "BBB", -500.0, -1.0, "2018-01-04", 4, "stop", 1)],
          "2018-01-08": [_trade("tr-c", "AAA", 3000.0, 1.5, "2018-01-08", 8, "exit", 3)]}


def crafted_run(out: Path, with_spy: bool = True) -> None:
    art = out / "artifacts"
    for d, e, g in zip(DATES, EQUITY, GROSS, strict=True):
        write_json_artifact(art / "portfolio_snapshots" / f"{d}.json", {
            "type": "portfolio_snapshot", "v": 1, "date": d, "capital": 100_000.0, "equity": e, "cash": e - g,
            "gross_exposure": g, "positions": [], "snapshot_id": f"ps-{d}", "provenance": {"settings_hash": "h1"}})
        write_json_artifact(art / "trades" / f"{d}.json", {"date": d, "v": 1, "trades": TRADES.get(d, [])})
    store = BarStore(out / "bars")
    for d, c in SPY.items():
        ts = calendar().open_close_ns(d)[1]
        rows = [BarRow(symbol="ZZZ", ts=ts, open=10.0, high=10.0, low=10.0, close=10.0, volume=1.0)]
        if with_spy:
            rows.append(BarRow(symbol="SPY", ts=ts, open=c, high=c, low=c, close=c, volume=1.0))
        store.append("1d", rows)


def test_run_report_of_a_crafted_run_matches_the_hand_computed_figures(tmp_path: Path) -> None:
    crafted_run(tmp_path)
    rep = run_report(load_run(tmp_path, market_symbol="SPY"))
    r, t = rep["returns"], rep["trades"]
    assert rep["period"] == {"first": "2018-01-02", "last": "2018-01-08", "sessions": 5, "base": "2017-12-29"}
    assert r["total_return"] == pytest.approx(1.02 * 0.98 * 1.01 * 1.03 - 1)
    assert r["cagr"] == pytest.approx((1.02 * 0.98 * 1.01 * 1.03) ** (252 / 5) - 1)
    assert r["max_drawdown"] == pytest.approx(0.02)
    assert r["drawdown"] == {"depth": pytest.approx(0.02), "peak": "2018-01-02", "trough": "2018-01-03",
                             "recovery": "2018-01-08", "sessions_to_trough": 1, "sessions_underwater": 4,
                             "calendar_days": 6}
    assert r["annual_volatility"] == pytest.approx(statistics.stdev([0.02, -0.02, 0.01, 0.0, 0.03]) * math.sqrt(252))
    b = r["benchmark"]
    assert b["name"] == "SPY" and b["total_return"] == pytest.approx(0.03)
    assert b["excess_return"] == pytest.approx(r["total_return"] - 0.03)
    assert rep["monthly"] == {"2018": {"01": pytest.approx(r["total_return"]), "year": pytest.approx(r["total_return"])}}
    assert rep["exposure"]["time_in_market"] == pytest.approx(0.6)
    assert (t["trades"], t["wins"], t["losses"]) == (3, 2, 1)
    assert t["profit_factor"] == pytest.approx(8.0)
    assert t["expectancy"] == pytest.approx(3500 / 3) and t["expectancy_r"] == pytest.approx(2.5 / 3)
    assert t["sqn"] == pytest.approx(math.sqrt(3) * (2.5 / 3) / statistics.stdev([2.0, -1.0, 1.5]))
    assert (t["max_win_streak"], t["max_loss_streak"]) == (1, 1)
    assert t["avg_holding_sessions"] == pytest.approx(2.0) and t["median_holding_sessions"] == 2.0
    assert [(g["key"], g["trades"], g["net_pnl"]) for g in rep["by_symbol"]] == [("AAA", 2, 4000.0), ("BBB", 1, -500.0)]
    assert [(g["key"], g["trades"]) for g in rep["by_exit_reason"]] == [("exit", 1), ("stop", 2)]
    assert headline_metrics(rep)["trades"] == 3
    text = "\n".join(headline(rep))
    assert "win rate 66.7%" in text and "return +3.99%" in text and "peak 2018-01-02" in text


def test_benchmark_falls_back_to_the_equal_weight_universe(tmp_path: Path) -> None:
    crafted_run(tmp_path, with_spy=False)
    b = run_report(load_run(tmp_path, market_symbol="SPY"))["returns"]["benchmark"]
    assert b["name"].startswith("equal-weight buy-and-hold of 1 symbols") and b["total_return"] == 0.0


def test_avwap_report_run_writes_the_tear_sheet_readable_by_others(tmp_path: Path) -> None:
    crafted_run(tmp_path)
    res = CliRunner().invoke(app, ["report", "--run", str(tmp_path)])
    assert res.exit_code == 0, res.output
    sheet = tmp_path / "artifacts" / "tearsheet"
    assert f"tear sheet: {sheet / 'index.html'}" in res.output and "Sharpe" in res.output
    page = (sheet / "index.html").read_text()
    for c in CHARTS:
        assert (sheet / f"{c}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"src='{c}.png'" in page
    assert "tr-" not in page and "AAA" in page  # the trade table lists the trades
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((sheet / "index.html").stat().st_mode) == 0o666 & ~umask
    before = {p.name: p.read_bytes() for p in sheet.iterdir()}
    write_tearsheet(tmp_path)
    assert {p.name: p.read_bytes() for p in sheet.iterdir()} == before  # same artifacts, same bytes
    bad = CliRunner().invoke(app, ["report", "--run", str(tmp_path / "nothing")])
    assert bad.exit_code == 1 and "holds no finished run" in bad.output
