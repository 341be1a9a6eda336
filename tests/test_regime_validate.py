"""``avwap regime validate`` end to end on real Redis: two replays of the same bars (modulation off /
on) side by side, reproducible byte for byte; the scanner's candidates and the regime labels are the
same in both; only the "on" run carries REGIME_* codes; two replicas change nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from avwap.regime_run import validate
from avwap.replay_run import artifact_files
from shared.settings import load_settings
from tests.conftest import SAMPLE_DIR

SAMPLE = SAMPLE_DIR / "daily_2017_2018.csv.gz"
START, END = "2018-10-08", "2018-10-19"
ENV = {"SCAN_MARKET_GATE": "universe_proxy"}
# four replays in one fixture: allow for a loaded shared machine (the project default is 300 s per test)
pytestmark = pytest.mark.timeout(900)
OUTPUTS = ("regime_validate.json", "regime_validate.md", "regime_validate.html")


def _tree(root: Path, sub: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / sub).rglob("*")) if p.is_file()}


def _labels(root: Path) -> dict[str, dict]:
    """The regime artifacts without their provenance (the settings hash differs: REGIME_MODULATION)."""
    out = {}
    for name, raw in _tree(root, "regimes").items():
        rec = json.loads(raw)
        rec.pop("provenance")
        out[name] = rec
    return out


def _codes(root: Path) -> set[str]:
    text = "".join(p.read_text() for sub in ("risk_decisions", "portfolio_decisions", "rejections")
                   for p in (root / sub).glob("*.json*"))
    return {c for c in ("REGIME_UNKNOWN", "REGIME_ENTRY_CAP", "REGIME_THROTTLED") if f'"{c}"' in text}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    from shared.redis_conn import start_redis_server

    emb = start_redis_server(appendonly=False, workdir=str(tmp_path_factory.mktemp("redis")))
    try:
        outs = [tmp_path_factory.mktemp(f"validate{i}") for i in (1, 2)]
        # the rerun uses two replicas of regime, risk, exits and analytics and runs both replays at once
        # (--parallel): reruns, replicas and the parallel mode at the same time
        results = [validate(SAMPLE, START, END, o, load_settings(scan_market_gate="universe_proxy"), emb.url, env=ENV,
                            replicas=n, parallel=n == 2) for o, n in zip(outs, (1, 2), strict=True)]
        yield outs, results
    finally:
        emb.stop()


def test_the_side_by_side_is_reproducible_byte_for_byte_across_reruns_replicas_and_parallel(runs) -> None:
    (a, b), (ra, rb) = runs
    for name in OUTPUTS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert ra == rb == json.loads((a / "regime_validate.json").read_bytes())
    assert ra["off"]["dlq"] == ra["on"]["dlq"] == 0
    assert artifact_files(a / "on") == artifact_files(b / "on")  # every artifact, one replica or two
    assert artifact_files(a / "off") == artifact_files(b / "off")


def test_it_reports_every_metric_the_time_in_each_regime_and_the_transitions(runs) -> None:
    (a, _), (res, _) = runs
    for side in ("off", "on"):
        assert {"total_return_pct", "cagr_pct", "max_drawdown_pct", "volatility_pct", "sharpe", "avg_exposure_pct",
                "trades", "worst_month", "worst_month_pct"} <= set(res[side])
    reg = res["regimes"]
    assert sum(v["sessions"] for v in reg["time_in_regime"].values()) == reg["sessions"] == res["off"]["sessions"]
    assert all(t["from"] != t["to"] and t["reason"] for t in reg["transitions"])
    assert {"RISK_OFF", "STRESSED"} & set(reg["time_in_regime"])  # the sell-off of October 2018
    md = (a / "regime_validate.md").read_text()
    assert "| max_drawdown_pct |" in md and "modulation off | modulation on" in md
    page = (a / "regime_validate.html").read_text()
    assert "<svg" in page and "modulation on" in page and "RISK_OFF" in page


def test_signals_and_labels_are_the_same_on_and_off_and_only_on_changes_decisions(runs) -> None:
    (a, _), (res, _) = runs
    off, on = a / "off" / "artifacts", a / "on" / "artifacts"
    assert _tree(off, "candidates") == _tree(on, "candidates") and _tree(on, "candidates")
    assert _labels(off) == _labels(on) and len(_labels(on)) == res["regimes"]["sessions"]
    assert _codes(off) == set()
    assert "REGIME_THROTTLED" in _codes(on)
    assert res["on"]["avg_exposure_pct"] < res["off"]["avg_exposure_pct"]
