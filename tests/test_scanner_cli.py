"""``avwap scan`` / ``avwap scan why`` / ``avwap data import|check`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avwap.cli import app
from shared.bars import BarStore, load_bars
from tests.conftest import DAILY_FILE, SAMPLE_DIR

SAMPLE = SAMPLE_DIR / "daily_2017_2018.csv.gz"
ENV = {"SCAN_MARKET_GATE": "universe_proxy"}


def run(*args: str, env: dict[str, str] | None = None):  # noqa: ANN201
    from shared.settings import get_settings

    get_settings.cache_clear()  # each command reads its own environment, as a fresh process would
    return CliRunner().invoke(app, list(args), env={**ENV, **(env or {})})


@pytest.fixture(autouse=True)
def _fresh_settings():
    from shared.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_scan_prints_a_summary_and_writes_three_artifacts(tmp_path: Path) -> None:
    res = run("scan", "--bars", str(SAMPLE), "--date", "2018-06-01", "--out", str(tmp_path), "--top", "5")
    assert res.exit_code == 0, res.output
    assert "scan for session 2018-06-01" in res.output and "market gate open" in res.output
    assert "top 5 candidates" in res.output and "CANDIDATE" in res.output and "rejected 1" in res.output
    files = {p.name for p in (tmp_path / "candidates").iterdir()}
    assert files == {"2018-06-01.json", "2018-06-01.rejects.json", "2018-06-01.csv"}
    batch = json.loads((tmp_path / "candidates" / "2018-06-01.json").read_text())
    csv = (tmp_path / "candidates" / "2018-06-01.csv").read_text().splitlines()
    assert csv[0].startswith("SchemaVersion,ScanDate,Symbol,Direction,TrendTier,Price,Entry_Level,Entry_DistPct,Stop_Loss,"
                             "Target_R1,Target_R2,TrendScore,Sector,Anchor,AVWAP_Slope,Setup_")
    assert len(csv) == 1 + len(batch["candidates"]) and csv[1].split(",")[2] == batch["candidates"][0]["symbol"]
    before = {p.name: p.read_bytes() for p in (tmp_path / "candidates").iterdir()}
    assert run("scan", "--bars", str(SAMPLE), "--date", "2018-06-01", "--out", str(tmp_path)).exit_code == 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "candidates").iterdir()} == before  # byte-identical rerun


def test_scan_why_answers_for_candidates_rejects_and_strangers(tmp_path: Path) -> None:
    assert run("scan", "--bars", str(SAMPLE), "--date", "2018-06-01", "--out", str(tmp_path)).exit_code == 0
    batch = json.loads((tmp_path / "candidates" / "2018-06-01.json").read_text())
    rejects = json.loads((tmp_path / "candidates" / "2018-06-01.rejects.json").read_text())["rejects"]
    top = batch["candidates"][0]["symbol"]
    res = run("scan", "why", top, "--date", "2018-06-01", "--artifacts", str(tmp_path))
    assert res.exit_code == 0 and f"{top} IS a candidate" in res.output and "rank 1" in res.output
    sym, why = sorted(rejects.items())[0]
    res = run("scan", "why", sym.lower(), "--date", "2018-06-01", "--artifacts", str(tmp_path))
    assert res.exit_code == 0 and why["code"] in res.output and "not a candidate" in res.output
    res = run("scan", "why", "ZZZZ", "--date", "2018-06-01", "--artifacts", str(tmp_path))
    assert res.exit_code == 1 and "not in the 2018-06-01 universe" in res.output
    assert run("scan", "why", top, "--date", "2018-06-04", "--artifacts", str(tmp_path)).exit_code == 1


def test_scan_refuses_bad_input_with_one_line(tmp_path: Path) -> None:
    for args, text in ((["--date", "2018-06-02"], "not an NYSE session"), (["--date", "06/01/2018"], "YYYY-MM-DD"),
                       ([], "usage")):
        res = run("scan", "--bars", str(SAMPLE), "--out", str(tmp_path), *args)
        assert res.exit_code == 1 and text in res.output, res.output
    res = run("scan", "--bars", str(SAMPLE), "--date", "2018-06-01", "--publish", env={"REDIS_URL": ""})
    assert res.exit_code == 1 and "REDIS_URL" in res.output


def test_scan_with_a_universe_file(tmp_path: Path) -> None:
    uni = tmp_path / "u.txt"
    uni.write_text("MSFT,Technology\nXOM,Energy\n")
    res = run("scan", "--bars", str(SAMPLE), "--date", "2018-06-01", "--universe", str(uni), "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    batch = json.loads((tmp_path / "candidates" / "2018-06-01.json").read_text())
    assert batch["universe_size"] == 2 and [c["sector"] for c in batch["candidates"]] == ["Technology"]


def test_scan_publish_sends_the_batch_once(tmp_path: Path, redis_url: str, real_redis) -> None:
    args = ("scan", "--bars", str(SAMPLE), "--date", "2018-06-01", "--out", str(tmp_path), "--publish")
    res = run(*args, env={"REDIS_URL": redis_url})
    assert res.exit_code == 0 and "published batch" in res.output, res.output
    res = run(*args, env={"REDIS_URL": redis_url})
    assert res.exit_code == 0 and "not published" in res.output
    assert real_redis.xlen("avwap:candidates") == 1 and real_redis.xlen("avwap:alerts") == 1


def test_scan_shards_from_the_cli_give_the_unsharded_bytes(tmp_path: Path, redis_url: str) -> None:
    assert run("scan", "--bars", str(SAMPLE), "--date", "2018-06-01", "--out", str(tmp_path / "one")).exit_code == 0
    res = run("scan", "--bars", str(SAMPLE), "--date", "2018-06-01", "--out", str(tmp_path / "three"), "--shards", "3",
              env={"REDIS_URL": redis_url, "SCAN_RQ_QUEUE": "avwap-cli-test", "SCAN_SHARD_TIMEOUT_S": "0.3"})
    assert res.exit_code == 0, res.output  # no rq worker listens: the shards are computed in process
    for name in ("2018-06-01.json", "2018-06-01.rejects.json", "2018-06-01.csv"):
        assert (tmp_path / "one" / "candidates" / name).read_bytes() == (tmp_path / "three" / "candidates" / name).read_bytes()
    res = run("scan", "--bars", str(SAMPLE), "--date", "2018-06-01", "--shards", "2", env={"REDIS_URL": ""})
    assert res.exit_code == 1 and "REDIS_URL" in res.output


def test_data_check_reports_the_real_files_defects() -> None:
    res = run("data", "check", str(DAILY_FILE), "--json")
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["rejected_by_reason"] == {"CLOSE_OUTSIDE_RANGE": 1}
    assert rep["examples"][0]["symbol"] == "DXC" and rep["examples"][0]["when"] == "2018-06-01"
    assert rep["zero_volume_rows"] > 100 and rep["late_listings"] > 0 and rep["early_endings"] > 0
    assert run("data", "check", str(DAILY_FILE), "--strict").exit_code == 1
    text = run("data", "check", str(DAILY_FILE)).output
    assert "rejected CLOSE_OUTSIDE_RANGE: 1" in text and "zero-volume" in text


def test_data_check_names_every_defect_of_a_crafted_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.csv"
    f.write_text("date,symbol,open,high,low,close,volume\n"
                 "2018-06-01,AAA,10,11,9,10.5,100\n"
                 "2018-06-01,AAA,10,11,9,10.5,100\n"      # duplicate timestamp
                 "2018-06-04,AAA,12,11,9,10.5,100\n"      # open outside [low, high]
                 "2018-06-05,AAA,10,11,9,10.5,-5\n"       # negative volume
                 "2018-06-06,AAA,10,11,0,10.5,100\n"      # non-positive price
                 "2018-06-07,AAA,10,11,9,nan,100\n"       # NaN
                 "2018-06-08,AAA,10,11,9,12,100\n"        # close outside [low, high]
                 "2018-06-11,AAA,10,11,9,10,0\n")         # zero volume: kept
    rep = json.loads(run("data", "check", str(f), "--json").output)
    assert rep["rejected_by_reason"] == {"CLOSE_OUTSIDE_RANGE": 1, "DUPLICATE_TIMESTAMP": 1, "NAN_VALUE": 1,
                                         "NEGATIVE_VOLUME": 1, "NON_POSITIVE_PRICE": 1, "OPEN_OUTSIDE_RANGE": 1}
    assert rep["good_rows"] == 2 and rep["zero_volume_rows"] == 1


def test_data_import_csv_and_parquet_fill_the_same_store(tmp_path: Path) -> None:
    import pandas as pd

    sample = pd.read_csv(SAMPLE)
    part = sample[(sample["date"] >= "2018-05-01") & (sample["date"] < "2018-06-01")]
    csv_path = tmp_path / "part.csv"
    part.to_csv(csv_path, index=False)
    pq = tmp_path / "part.parquet"
    typed = part.assign(date=pd.to_datetime(part["date"]))  # Parquet keeps a real date type
    typed.to_parquet(pq, index=False)
    res = run("data", "import", str(csv_path), "--bars-dir", str(tmp_path / "a"))
    assert res.exit_code == 0 and "imported" in res.output and "rejected 0" in res.output, res.output
    assert run("data", "import", str(pq), "--bars-dir", str(tmp_path / "b")).exit_code == 0
    pa = BarStore(tmp_path / "a").daily_panel()
    pb = BarStore(tmp_path / "b").daily_panel()
    assert pa.content_hash() == pb.content_hash() and len(pa.dates) == 22 and len(pa.symbols) == 36
    assert load_bars(pq).frame.equals(load_bars(csv_path).frame)
    # importing again changes nothing the store gives back
    assert run("data", "import", str(csv_path), "--bars-dir", str(tmp_path / "a")).exit_code == 0
    assert BarStore(tmp_path / "a").daily_panel().content_hash() == pa.content_hash()
