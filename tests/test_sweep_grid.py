"""The sweep's grid file, points, hashes, walk-forward windows, table bytes and stitching (pure parts)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from avwap.cli import app
from avwap.sweep import results as R
from avwap.sweep.grid import parse_grid, parse_walk_forward, point_hash, points, windows
from shared.clock import calendar

GRID = {"params": {"STOP_BUFFER": [0.05, 0.1], "MAX_CONCURRENT_POSITIONS": [3, 5, 7]},
        "fixed": {"SCAN_MARKET_GATE": "universe_proxy"}}


def test_points_are_the_product_in_name_order_and_a_sample_keeps_their_numbers() -> None:
    g = parse_grid(GRID)
    pts = points(g)
    assert [p.params for p in pts[:3]] == [{"MAX_CONCURRENT_POSITIONS": 3, "STOP_BUFFER": 0.05},
                                          {"MAX_CONCURRENT_POSITIONS": 3, "STOP_BUFFER": 0.1},
                                          {"MAX_CONCURRENT_POSITIONS": 5, "STOP_BUFFER": 0.05}]
    assert len(pts) == 6 and pts[0].env(g.fixed) == {"MAX_CONCURRENT_POSITIONS": "3", "SCAN_MARKET_GATE": "universe_proxy",
                                                     "STOP_BUFFER": "0.05"}
    s = points(parse_grid({**GRID, "sample": {"n": 3, "seed": 5}}))
    assert len(s) == 3 and s == sorted(s, key=lambda p: p.index)
    assert s == points(parse_grid({**GRID, "sample": {"n": 3, "seed": 5}}))  # seeded: the same draw
    assert {p.index: p.params for p in s}.items() <= {p.index: p.params for p in pts}.items()


@pytest.mark.parametrize(("doc", "why"), [
    ({"params": {"NOT_A_SETTING": [1]}}, "not sweepable"),
    ({"params": {"REDIS_URL": ["redis://x"]}}, "not sweepable"),
    ({"params": {"STOP_BUFFER": [-1.0]}}, "invalid setting value"),
    ({"params": {"STOP_BUFFER": [0.1, 0.1]}}, "repeats"),
    ({"params": {"STOP_BUFFER": [0.1]}, "metric": "luck"}, "metric"),
    ({"params": {"STOP_BUFFER": [0.1]}, "heatmap": ["STOP_BUFFER", "X"]}, "heatmap"),
    ({"params": {"STOP_BUFFER": [0.1]}, "extra": 1}, "unknown grid keys"),
    ([1, 2], "mapping"),
])
def test_bad_grid_files_are_refused_with_the_reason(doc, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_grid(doc)


def test_the_cli_refuses_a_bad_grid_in_one_line(tmp_path: Path) -> None:
    grid = tmp_path / "g.yaml"
    grid.write_text("params:\n  NOPE: [1]\n")
    bars = Path(__file__).resolve().parent.parent / "data" / "sample" / "daily_2017_2018.csv.gz"
    res = CliRunner().invoke(app, ["sweep", "--bars", str(bars), "--from", "2018-01-02", "--to", "2018-01-31",
                                   "--grid", str(grid), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "not sweepable settings: NOPE" in res.output


def test_the_settings_hash_covers_settings_bars_span_and_equity() -> None:
    env = {"STOP_BUFFER": "0.1"}
    base = point_hash(env, "abc", "2018-01-02", "2018-12-31", 1e5)
    assert base == point_hash(dict(env), "abc", "2018-01-02", "2018-12-31", 100_000)
    for other in (point_hash({"STOP_BUFFER": "0.2"}, "abc", "2018-01-02", "2018-12-31", 1e5),
                  point_hash(env, "abd", "2018-01-02", "2018-12-31", 1e5),
                  point_hash(env, "abc", "2018-01-03", "2018-12-31", 1e5),
                  point_hash(env, "abc", "2018-01-02", "2018-12-31", 2e5)):
        assert other != base


def test_walk_forward_windows_roll_by_the_test_length() -> None:
    days = calendar().sessions_in_range("2016-01-04", "2018-12-31")
    ws = windows(days, *parse_walk_forward("12:6"))
    assert [(w.train, w.test) for w in ws[:2]] == [(("2016-01-04", "2016-12-30"), ("2017-01-03", "2017-06-30")),
                                                   (("2016-07-01", "2017-06-30"), ("2017-07-03", "2017-12-29"))]
    assert ws[-1].test == ("2018-07-02", "2018-12-31") and len(ws) == 4
    with pytest.raises(ValueError):
        parse_walk_forward("12")


def test_stitch_chains_daily_returns_and_skips_dates_already_covered() -> None:
    a = [["2018-01-31", 100.0], ["2018-02-01", 110.0], ["2018-02-02", 99.0]]
    b = [["2018-02-01", 50.0], ["2018-02-02", 55.0], ["2018-02-05", 60.5]]
    assert R.stitch([a, b], 1000.0) == [("2018-01-31", 1000.0), ("2018-02-01", pytest.approx(1100.0)),
                                        ("2018-02-02", pytest.approx(990.0)), ("2018-02-05", pytest.approx(1089.0))]


def test_the_table_bytes_do_not_depend_on_the_order_results_arrived() -> None:
    def row(point: int, window: str = "") -> dict:
        res = {"settings_hash": f"sw-{point}", "metrics": {"sharpe": point / 3, "trades": point}}
        return R.row_of(res, window, point, {"STOP_BUFFER": 0.1 * point}, "2018-01-02", "2018-01-31")

    rows = [row(2), row(0), row(1, "w00-train"), row(1)]
    assert R.table_bytes(rows) == R.table_bytes(list(reversed(rows)))
    assert [r["point"] for r in R.rank([row(0), row(2), row(1)], "sharpe")] == [2, 1, 0]
