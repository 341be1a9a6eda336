"""End to end on real Redis: the five real services replay real bars, and the artifacts prove it.

Each replay runs the services as separate processes on a private redis-server. The proofs:
determinism (two runs, byte-identical artifacts), crash-safety (SIGKILL of each service in
turn at seeded points; a Redis restart with AOF), scale-out (two replicas of risk, exits and
analytics), and no look-ahead (perturbing bars after D changes nothing dated <= D).
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from avwap.procs import ServiceProcs
from avwap.replay import ReplayConfig
from avwap.replay_run import ReplayInput, artifact_files, prepare, run_replay
from shared.bars import load_bars
from shared.redis_conn import connect, free_port
from tests.conftest import SAMPLE_DIR

SAMPLE = SAMPLE_DIR / "daily_2017_2018.csv.gz"
START, END = "2018-01-02", "2018-03-29"
ENV = {"SCAN_MARKET_GATE": "universe_proxy"}
DATED = re.compile(r"(\d{4}-\d{2}-\d{2})")


class RedisServer:
    """A private redis-server with AOF (fsync always) that a test can kill and restart on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                connect(self.url).ping()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def crash(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def sample() -> ReplayInput:
    return prepare(SAMPLE, None, START, END)


def _replay(inp: ReplayInput, url: str, out: Path, hook=None, replicas: int = 1) -> dict[str, bytes]:
    cfg = ReplayConfig(start=START, end=END, out=out, mode="PAPER_SIM", replicas=replicas, env=ENV)
    res = run_replay(inp, cfg, url, after_publish=hook, flush=True)
    assert res.dlq == 0, "nothing may land in the DLQ"
    return artifact_files(out)


@pytest.fixture(scope="module")
def baseline(sample: ReplayInput, server: RedisServer, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("replay")
    files = _replay(sample, server.url, out)
    return out, files


def _diff(a: dict[str, bytes], b: dict[str, bytes]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def test_replay_produces_every_kind_of_artifact(baseline) -> None:
    _, files = baseline
    kinds = {k.split("/")[1] if k.startswith("artifacts/") else k.split("/")[0] for k in files}
    for kind in ("candidates", "portfolio_decisions", "portfolio_snapshots", "reconciliation", "exit_events", "ledger"):
        assert kind in kinds, f"no {kind} artifacts: {sorted(kinds)}"
    ledgers = [k for k in files if k.startswith("ledger/PAPER_SIM/")]
    fills = sum(b.count(b'"filled"') for k, b in files.items() if k in ledgers)
    assert fills > 0, "the simulator filled nothing"


def test_two_replays_are_byte_identical(baseline, sample: ReplayInput, server: RedisServer) -> None:
    out, files = baseline
    again = _replay(sample, server.url, out)
    assert _diff(files, again) == []


def test_sigkill_of_each_service_in_turn_changes_nothing(baseline, sample: ReplayInput, server: RedisServer) -> None:
    out, files = baseline
    rng = random.Random(20181231)
    victims = ["scanner-0", "risk-0", "executor-0", "exits-0", "analytics-0"]
    kills: list[tuple[int, str]] = []

    def hook(step: int, label: str, procs: ServiceProcs) -> None:
        if step % 23 == 11:
            key = victims[len(kills) % len(victims)]
            time.sleep(rng.random() * 0.01)  # land anywhere in the handling of the step
            procs.kill(key)
            kills.append((step, key))
            service, replica = key.rsplit("-", 1)
            procs.start(service, int(replica))

    crashed = _replay(sample, server.url, out, hook=hook)
    assert len({k for _, k in kills}) == len(victims)
    assert _diff(files, crashed) == []


def test_redis_restart_with_aof_mid_run_changes_nothing(baseline, sample: ReplayInput, server: RedisServer) -> None:
    out, files = baseline
    restarts: list[int] = []

    def hook(step: int, label: str, procs: ServiceProcs) -> None:
        if step in (60, 170):
            server.crash()
            server.start()
            restarts.append(step)

    restarted = _replay(sample, server.url, out, hook=hook)
    assert restarts == [60, 170]
    assert _diff(files, restarted) == []


def test_two_replicas_of_risk_exits_and_analytics_change_nothing(baseline, sample: ReplayInput,
                                                                 server: RedisServer) -> None:
    out, files = baseline
    scaled = _replay(sample, server.url, out, replicas=2)
    assert _diff(files, scaled) == []


def test_perturbing_bars_after_d_changes_nothing_dated_up_to_d(baseline, server: RedisServer, tmp_path: Path) -> None:
    out, files = baseline
    cut = "2018-02-15"
    raw = load_bars(SAMPLE)
    frame = raw.frame.copy()
    later = frame["trade_date"] > cut
    for col in ("open", "high", "low", "close"):
        frame.loc[later, col] = frame.loc[later, col] * 0.7
    frame.loc[later, "volume"] = frame.loc[later, "volume"] * 3
    path = tmp_path / "perturbed.csv"
    frame.rename(columns={"trade_date": "date"})[["date", "symbol", "open", "high", "low", "close", "volume"]].to_csv(
        path, index=False)
    perturbed = _replay(prepare(path, None, START, END), server.url, out)

    def upto(fs: dict[str, bytes]) -> dict[str, bytes]:
        keep = {}
        for k, v in fs.items():
            m = DATED.search(k)
            if m and m.group(1) <= cut:
                keep[k] = v
        return keep

    base, pert = upto(files), upto(perturbed)
    assert len(base) > 20
    assert _diff(base, pert) == []
    assert _diff(files, perturbed), "the perturbation must change something after D"


def test_replay_candidates_match_avwap_scan(baseline, tmp_path: Path) -> None:
    out, files = baseline
    d = "2018-03-01"
    proc = subprocess.run([str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "avwap"), "scan",
                           "--bars", str(SAMPLE), "--date", d, "--out", str(tmp_path)],
                          capture_output=True, text=True, env={**__import__("os").environ, **ENV})
    assert proc.returncode == 0, proc.stderr
    mine = (tmp_path / "candidates" / f"{d}.json").read_bytes()
    assert json.loads(mine)["scan_date"] == d
    assert mine == files[f"artifacts/candidates/{d}.json"]


def test_every_trade_of_the_replay_agrees_with_the_exit_simulator(baseline) -> None:
    """Analytics' broker-independent exit simulator predicts every real exit of the PAPER_SIM replay
    (scanner-chosen entries, risk-sized, simulator-filled, stops ratcheted by the exits service)."""
    import msgspec

    from services.analytics.exit_sim import parity, rules_from
    from shared.clock import calendar as cal
    from shared.schemas import DailyTrades
    from shared.settings import load_settings

    out, files = baseline
    trades = {}
    for k in sorted(k for k in files if k.startswith("artifacts/trades/")):
        for t in msgspec.json.decode(files[k], type=DailyTrades).trades:
            trades[t.trade_id] = t  # a trade's last record (its close, or the last day it was open)
    end_ns = cal().open_close_ns(END)[1]
    daily = [b for b in load_bars(SAMPLE).rows() if b.ts <= end_ns]
    rows = parity(list(trades.values()), daily, [], rules_from(load_settings().exits), price_tol=float("inf"))
    closed = [t for t in trades.values() if t.status == "closed"]
    assert len(closed) >= 10 and len(rows) == len(trades)
    assert [r.symbol for r in rows if not r.agree] == []  # same exit session (or still open in both)
    slippage = 5.0 / 10_000  # SIM_SLIPPAGE_BPS default: an adverse fill below the stop
    for r in rows:
        if r.sim_exit_price:
            assert r.actual_exit_price == pytest.approx(r.sim_exit_price * (1 - slippage), abs=0.01), r


def test_every_artifact_of_the_replay_carries_provenance(baseline) -> None:
    """Issue 2's trust check on a whole run: code version, settings hash and inputs on every artifact
    (JSON: a top-level block; JSONL: every line; reports: a footer; the candidates CSV: its digest in the
    rejects artifact; PNG charts: their report)."""
    import hashlib

    from shared.artifacts import code_version

    _, files = baseline
    version = code_version()
    seen: dict[str, int] = {}
    for k, data in sorted(files.items()):
        ext = k.rsplit(".", 1)[-1]
        seen[ext] = seen.get(ext, 0) + 1
        if ext == "json":
            blocks = [json.loads(data).get("provenance")]
        elif ext == "jsonl":
            blocks = [json.loads(line).get("provenance") for line in data.splitlines() if line.strip()]
        elif ext in ("md", "html"):
            assert version in data.decode() and "settings" in data.decode(), k
            continue
        elif ext == "csv":
            rejects = json.loads(files[k[:-4] + ".rejects.json"])["provenance"]
            assert rejects["output:csv_sha256"] == hashlib.sha256(data).hexdigest(), k
            continue
        elif ext == "png":
            continue
        else:
            raise AssertionError(f"unexpected artifact kind {k}")
        for prov in blocks:
            assert isinstance(prov, dict) and prov.get("code_version") == version and prov.get("settings_hash"), (k, prov)
            assert any(key.startswith("input:") for key in prov), (k, prov)
            assert not any(isinstance(v, str) and v.startswith("/") for v in prov.values()), (k, prov)  # no paths
    assert {"json", "jsonl", "csv", "md", "html", "png"} <= set(seen), seen
