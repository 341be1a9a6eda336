"""Replay parity: the scanner inside a replay (five real services, bars from the bar store) writes the
same bytes as ``avwap scan`` on the file, session by session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avwap.cli import app
from avwap.replay import ReplayConfig
from avwap.replay_run import prepare, run_replay
from shared.schemas import CandidateBatch, decode
from shared.streams import CANDIDATES
from tests.conftest import SAMPLE_DIR

SAMPLE = SAMPLE_DIR / "daily_2017_2018.csv.gz"
ENV = {"SCAN_MARKET_GATE": "universe_proxy"}


@pytest.mark.slow
@pytest.mark.parametrize(("start", "end"), [("2018-03-01", "2018-03-01"), ("2018-05-31", "2018-06-04")])
def test_replay_scanner_writes_the_bytes_of_avwap_scan(redis_url: str, real_redis, tmp_path: Path, start: str,
                                                       end: str) -> None:
    inp = prepare(SAMPLE, None, start, end)
    cfg = ReplayConfig(start=start, end=end, out=tmp_path / "replay", mode="PAPER_SIM",
                       env={**ENV, "LOG_LEVEL": "WARNING"})
    res = run_replay(inp, cfg, redis_url, flush=True)
    assert res.dlq == 0
    batches = [decode(f[b"data"]) for _, f in real_redis.xrange(CANDIDATES)]
    assert [b.scan_date for b in batches] == inp.sessions  # exactly one batch per session
    assert all(isinstance(b, CandidateBatch) for b in batches)
    from shared.settings import get_settings

    for d in inp.sessions:
        get_settings.cache_clear()
        out = tmp_path / f"cli-{d}"
        r = CliRunner().invoke(app, ["scan", "--bars", str(SAMPLE), "--date", d, "--out", str(out)], env=ENV)
        assert r.exit_code == 0, r.output
        for name in (f"{d}.json", f"{d}.rejects.json", f"{d}.csv"):
            replayed = (cfg.out / "artifacts" / "candidates" / name).read_bytes()
            assert (out / "candidates" / name).read_bytes() == replayed, name
        assert json.loads((out / "candidates" / f"{d}.json").read_bytes())["batch_id"] == \
            next(b.batch_id for b in batches if b.scan_date == d)
    get_settings.cache_clear()
    if end == "2018-06-04":
        assert any(b.candidates for b in batches)  # a session with real candidates went through the services
