"""``avwap regime label`` and ``avwap regime validate``'s argument errors, as a user runs them."""

from __future__ import annotations

import json

from tests.conftest import SAMPLE_DIR
from tests.test_scanner_cli import _fresh_settings, run  # noqa: F401 - the fixture is autouse

SAMPLE = SAMPLE_DIR / "daily_2017_2018.csv.gz"


def test_label_prints_every_session_its_rule_and_why() -> None:
    res = run("regime", "label", "--bars", str(SAMPLE), "--from", "2018-10-22", "--to", "2018-10-26")
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert [ln.split()[0] for ln in lines[:-1]] == ["2018-10-22", "2018-10-23", "2018-10-24", "2018-10-25", "2018-10-26"]
    assert all(ln.split()[1] in ("RISK_ON", "NEUTRAL", "RISK_OFF", "STRESSED") for ln in lines[:-1])
    summary = json.loads(lines[-1])
    assert sum(v["sessions"] for v in summary["time_in_regime"].values()) == 5


def test_label_json_is_one_regime_per_line() -> None:
    res = run("regime", "label", "--bars", str(SAMPLE), "--from", "2018-12-24", "--to", "2018-12-24", "--json")
    (rec,) = [json.loads(ln) for ln in res.output.strip().splitlines()]
    assert rec["type"] == "regime" and rec["date"] == "2018-12-24" and rec["session"] == "2018-12-26"
    assert rec["label"] in ("RISK_OFF", "STRESSED")


def test_bad_arguments_are_one_clear_line() -> None:
    res = run("regime", "validate", "--bars", str(SAMPLE), "--from", "2018-12-01", "--to", "2018-11-01")
    assert res.exit_code == 1 and "is after" in res.output
    res = run("regime", "validate", "--bars", str(SAMPLE), "--from", "2030-01-02", "--to", "2030-02-01", "--out", "/tmp/x-none")
    assert res.exit_code == 1 and "no sessions with daily bars" in res.output
