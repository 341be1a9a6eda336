"""Sweeps on real Redis with real rq workers: one worker vs three (one SIGKILLed mid-job) give the same
bytes, a rerun skips finished points, walk-forward picks each train window's best and stitches the tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import redis

from avwap.sweep import results as R
from avwap.sweep.grid import parse_grid, parse_walk_forward
from avwap.sweep.runner import Sweep, SweepConfig
from shared.clock import calendar
from tests.conftest import SAMPLE_DIR

ROOT = Path(__file__).resolve().parent.parent
SYMBOLS = ["AAPL", "CSCO", "INTC", "JPM", "KO", "MSFT", "PFE", "XOM"]


@pytest.fixture(scope="module")
def small_bars(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight symbols of the demo sample through 2018-03 (2017 is the scanner's history)."""
    f = pd.read_csv(SAMPLE_DIR / "daily_2017_2018.csv.gz")
    path = tmp_path_factory.mktemp("bars") / "small.csv"
    f[f["symbol"].isin(SYMBOLS) & (f["date"] <= "2018-03-31")].to_csv(path, index=False)
    return path


def start_worker(url: str, queue: str, name: str, tmp: Path) -> subprocess.Popen:
    """A real rq worker (``avwap sweep-worker``) in its own session, so that the whole of it can be killed."""
    log = open(tmp / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
    env = {**os.environ, "REDIS_URL": url, "SWEEP_CACHE_DIR": str(tmp / f"cache-{name}"),
           "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "avwap", "sweep-worker", "--queue", queue, "--name", name],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def session_pids(sid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[3]) == sid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the worker, its work horse and the replay it runs (redis-server, services): a machine lost."""
    for pid in session_pids(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            kill_session(p)


def sessions(start: str, end: str) -> list[str]:
    return calendar().sessions_in_range(start, end)


def outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


GRID = {"metric": "total_return", "params": {"MAX_CONCURRENT_POSITIONS": [2, 4], "STOP_BUFFER": [0.05, 0.1]},
        "fixed": {"SCAN_MARKET_GATE": "universe_proxy"}, "sample": {"n": 3, "seed": 11},
        "heatmap": ["MAX_CONCURRENT_POSITIONS", "STOP_BUFFER"]}
SPAN = ("2018-01-02", "2018-01-12")


@pytest.mark.timeout(900)  # ~2-3 min on a quiet 2-core machine: 6 replays and one re-run after a kill
def test_one_worker_and_three_with_one_killed_give_identical_bytes(redis_url: str, small_bars: Path,
                                                                   tmp_path: Path) -> None:
    r = redis.Redis.from_url(redis_url)
    g = parse_grid(GRID)
    one = SweepConfig(bars=small_bars, start=SPAN[0], end=SPAN[1], grid=g, out=tmp_path / "one", queue="t-sweep",
                      poll_s=0.2)
    procs = [start_worker(redis_url, "t-sweep", "w0", tmp_path)]
    try:
        res1 = Sweep(r, one, sessions(*SPAN), progress=False).run()
    finally:
        stop(procs)
    assert not res1.failed and len(res1.rows) == 3 and len({row["settings_hash"] for row in res1.rows}) == 3
    assert sorted(row["point"] for row in res1.rows) == [1, 2, 3]  # the seeded sample of the 4-point grid

    r.flushdb()
    three = SweepConfig(bars=small_bars, start=SPAN[0], end=SPAN[1], grid=g, out=tmp_path / "three",
                        queue="t-sweep", poll_s=0.2)
    procs = [start_worker(redis_url, "t-sweep", f"w{i}", tmp_path) for i in range(3)]
    box: dict[str, object] = {}
    th = threading.Thread(target=lambda: box.setdefault("res", Sweep(r, three, sessions(*SPAN), progress=False).run()))
    th.start()
    try:
        from rq import Queue, Worker
        from rq.serializers import JSONSerializer

        q = Queue("t-sweep", connection=r, serializer=JSONSerializer)
        victim, job_id = None, None
        deadline = time.monotonic() + 120
        while victim is None and time.monotonic() < deadline:
            for w in Worker.all(queue=q):
                jid = w.get_current_job_id()
                if jid:
                    victim, job_id = w.name, jid
                    break
            time.sleep(0.2)
        assert victim is not None, "no worker started a job"
        time.sleep(4)  # mid-job: its replay's services are up and playing sessions
        kill_session(procs[int(victim[1:])])
        th.join(timeout=400)
        assert not th.is_alive()
        from rq.job import Job

        job = Job.fetch(job_id, connection=r, serializer=JSONSerializer)
        assert job.get_status() == "finished" and job.retries_left == 1  # re-run once, by rq's retry
    finally:
        stop([p for p in procs if p.poll() is None])
        th.join(timeout=60)
    res3 = box["res"]
    assert not res3.failed and len(res3.rows) == 3
    a, b = outputs(one.out), outputs(three.out)
    assert set(a) == set(b) and {"results.parquet", "results.csv", "ranked.csv", "heatmap.png"} <= set(a)
    for k in a:
        assert a[k] == b[k], k

    # a rerun skips every finished point: nothing is enqueued, nothing changes
    r.flushdb()
    res = Sweep(r, one, sessions(*SPAN), progress=False).run()
    assert res.skipped == 3 and not r.keys("rq:job:*") and outputs(one.out) == a


@pytest.mark.timeout(900)
def test_walk_forward_replays_each_windows_best_point_on_its_test_window(redis_url: str, small_bars: Path,
                                                                         tmp_path: Path) -> None:
    r = redis.Redis.from_url(redis_url)
    g = parse_grid({"metric": "total_return", "params": {"MAX_CONCURRENT_POSITIONS": [1, 4]},
                    "fixed": {"SCAN_MARKET_GATE": "universe_proxy"}})
    cfg = SweepConfig(bars=small_bars, start="2018-01-02", end="2018-03-29", grid=g, out=tmp_path / "wf",
                      queue="t-wf", walk_forward=parse_walk_forward("1:1"), poll_s=0.2)
    procs = [start_worker(redis_url, "t-wf", f"w{i}", tmp_path) for i in range(2)]
    try:
        res = Sweep(r, cfg, sessions("2018-01-02", "2018-03-29"), progress=False).run()
    finally:
        stop(procs)
    assert not res.failed
    wf = pd.read_csv(cfg.out / "walkforward.csv")
    assert list(wf["train_from"]) == ["2018-01-02", "2018-02-01"] and list(wf["test_to"]) == ["2018-02-28", "2018-03-29"]
    rows = pd.read_csv(cfg.out / "results.csv")
    for _, w in wf.iterrows():
        train = rows[rows["window"] == f"w{w['window']:02d}-train"]
        best = R.rank(train.to_dict("records"), "total_return")[0]
        assert w["best_point"] == best["point"]
        test = rows[rows["window"] == f"w{w['window']:02d}-test"]
        assert list(test["point"]) == [best["point"]]
    oos = pd.read_csv(cfg.out / "oos_equity.csv")
    want = 1.0
    for r_test in rows[rows["window"].str.endswith("-test")].sort_values("window")["total_return"]:
        want *= 1 + r_test
    assert oos["equity"].iloc[-1] / 100_000.0 == pytest.approx(want, rel=1e-6)
    assert oos["date"].iloc[0] < "2018-02-01" <= oos["date"].iloc[1]  # base = the session before the first test
    assert (cfg.out / "is_equity.csv").exists() and (cfg.out / "walkforward.png").read_bytes()[:4] == b"\x89PNG"
