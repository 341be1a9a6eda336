"""The scanner worker, the rq shards and the rq cron job on a real Redis (real rq workers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import redis

from services.scanner.artifacts import artifact_bytes, paths
from services.scanner.core import scan
from services.scanner.schedule import NYCronScheduler, next_ny_run, premarket_job, run_scheduled
from services.scanner.session import CLAIM_KEY, last_session_before, publish_once, scan_for, store_panel
from services.scanner.shards import sharded_results
from services.scanner.worker import SPEC
from shared.bars import BarStore, LoadResult, Panel, load_bars
from shared.bus import Bus, Delivery
from shared.clock import NY, UTC, calendar, dt_to_ns, ny_datetime
from shared.schemas import Alert, CandidateBatch, SessionEvent, decode
from shared.service import make_consumer, make_context
from shared.settings import load_settings
from shared.streams import ALERTS, CANDIDATES, CLOCK
from tests.conftest import DAILY_FILE, ROOT, SAMPLE_DIR

D = "2018-06-01"  # the sample has candidates that day (none in March 2018: volatility too high)


@pytest.fixture(scope="module")
def sample() -> LoadResult:
    return load_bars(SAMPLE_DIR / "daily_2017_2018.csv.gz")


@pytest.fixture
def store(tmp_path: Path, sample: LoadResult) -> Path:
    root = tmp_path / "bars"
    BarStore(root).import_result(LoadResult(tf="1d", frame=sample.frame[sample.frame["trade_date"] < "2018-06-10"]))
    return root


def settings_for(url: str, tmp: Path, bars: Path, **kw):  # noqa: ANN003
    kw = {"scan_market_gate": "universe_proxy", **kw}
    return load_settings(redis_url=url, artifacts_dir=str(tmp / "artifacts"), bars_dir=str(bars), bus_block_ms=50, **kw)


def pre_market(d: str) -> SessionEvent:
    return SessionEvent(trade_date=d, phase="PRE_MARKET", ts=dt_to_ns(ny_datetime(d, "08:30")))


def stream(r: redis.Redis, name: str) -> list:
    return [decode(f[b"data"]) for _, f in r.xrange(name)]


def test_pre_market_gives_one_batch_and_one_alert_and_the_artifacts(redis_url, real_redis, tmp_path, store) -> None:
    s = settings_for(redis_url, tmp_path, store)
    consumer = make_consumer(SPEC, make_context("scanner", s, real_redis), consumer_name="scanner-0")
    consumer.ensure_groups()
    bus = Bus(real_redis)
    bus.publish(CLOCK, SessionEvent(trade_date=D, phase="OPEN", ts=1))  # other phases: nothing
    bus.publish(CLOCK, pre_market(D))
    consumer.run(install_signals=False, until_idle=True)
    (batch,) = stream(real_redis, CANDIDATES)
    assert isinstance(batch, CandidateBatch) and batch.scan_date == D and batch.market_gate_ok
    assert batch.candidates and batch.bars_through == "2018-05-31" and batch.universe_size == 36
    (alert,) = stream(real_redis, ALERTS)
    assert isinstance(alert, Alert) and alert.kind == "scan_summary" and alert.trade_date == D
    assert alert.fields["candidates"] == str(len(batch.candidates)) and batch.candidates[0].symbol in alert.fields["top"]
    files = paths(tmp_path / "artifacts", D)
    assert all(p.exists() for p in files.values())
    # the artifact is the published batch, and the CLI path (a file) gives the same bytes
    from shared.artifacts import canonical_json

    assert files["batch"].read_bytes() == canonical_json(batch)
    pan = Panel.from_frame(load_bars(SAMPLE_DIR / "daily_2017_2018.csv.gz").frame, before=D, lookback=260)
    assert artifact_bytes(scan_for(pan, D, s))["batch"] == files["batch"].read_bytes()
    assert real_redis.xpending(CLOCK, "scanner")["pending"] == 0
    # a second PRE_MARKET entry for D (a repeated clock event) gives no second batch
    bus.publish(CLOCK, pre_market(D))
    consumer.run(install_signals=False, until_idle=True)
    assert real_redis.xlen(CANDIDATES) == 1


def test_a_redelivered_pre_market_returns_the_identical_batch(redis_url, real_redis, tmp_path, store) -> None:
    s = settings_for(redis_url, tmp_path, store)
    handle = SPEC.build(make_context("scanner", s, real_redis))
    d = Delivery(stream=CLOCK, entry_id="1-0", deliveries=1, consumer="c")
    first = handle(pre_market(D), d)
    again = handle(pre_market(D), Delivery(stream=CLOCK, entry_id="1-0", deliveries=2, consumer="c"))
    assert first == again and len(first) == 2
    other_entry = handle(pre_market(D), Delivery(stream=CLOCK, entry_id="2-0", deliveries=1, consumer="c"))
    assert other_entry == []


def test_a_crash_before_the_commit_still_publishes_the_batch_once(redis_url, real_redis, tmp_path, store) -> None:
    s = settings_for(redis_url, tmp_path, store)
    c1 = make_consumer(SPEC, make_context("scanner", s, real_redis), consumer_name="a")
    inner = c1.handler

    def crash(msg, d):  # noqa: ANN001, ANN202
        inner(msg, d)  # claim + artifacts done...
        raise RuntimeError("crash before the commit")

    c1.handler = crash
    c1.ensure_groups()
    Bus(real_redis).publish(CLOCK, pre_market(D))
    c1.step(block=False)
    assert real_redis.xlen(CANDIDATES) == 0
    c1.handler = inner  # the restarted process re-reads its pending entry
    c1.run(install_signals=False, until_idle=True)
    assert real_redis.xlen(CANDIDATES) == 1 and real_redis.xpending(CLOCK, "scanner")["pending"] == 0


def test_gate_closed_and_unreadable_universe_still_give_a_batch(redis_url, real_redis, tmp_path, store) -> None:
    s = settings_for(redis_url, tmp_path, store, scan_market_gate="symbol")  # the sample has no SPY
    out = SPEC.build(make_context("scanner", s, real_redis))(pre_market(D), Delivery(CLOCK, "1-0", 1, "c"))
    (_, batch), (_, alert) = out
    assert not batch.market_gate_ok and batch.candidates == [] and batch.market_gate_reason.startswith("MARKET_SYMBOL_MISSING")
    assert alert.severity == "warning"
    bad = tmp_path / "universe.txt"
    bad.write_text("AAPL,Tech,extra\n")
    s2 = settings_for(redis_url, tmp_path, store, scan_universe_file=str(bad))
    out = SPEC.build(make_context("scanner", s2, real_redis))(pre_market("2018-06-04"), Delivery(CLOCK, "2-0", 1, "c"))
    batch = out[0][1]
    assert not batch.market_gate_ok and batch.market_gate_reason.startswith("UNIVERSE_ERROR") and batch.candidates == []


def test_universe_file_restricts_and_names_sectors(redis_url, real_redis, tmp_path, store) -> None:
    uni = tmp_path / "universe.txt"
    uni.write_text("# mine\nAAPL,Technology\nMSFT, Technology\nJPM\nNOPE,Nowhere\n")
    s = settings_for(redis_url, tmp_path, store, scan_universe_file=str(uni), scan_market_gate="off")
    res = scan_for(store_panel(BarStore(store), D, s), D, s)
    assert res.batch.universe_size == 4 and res.rejects["rejects"]["NOPE"]["code"] == "NO_BARS"
    syms = {c.symbol: c.sector for c in res.batch.candidates} | {k: "" for k in res.rejects["rejects"]}
    assert set(syms) == {"AAPL", "MSFT", "JPM", "NOPE"}
    assert {c.symbol: c.sector for c in res.batch.candidates} == {"MSFT": "Technology"}
    assert res.rejects["rejects"]["AAPL"]["code"] == "STOP_NOT_BELOW_ENTRY"  # on D its stop is above its entry
    assert res.rejects["rejects"]["JPM"]["code"] != "NO_BARS"


def _rq_workers(url: str, n: int, queue: str, log_dir: Path) -> list[subprocess.Popen]:
    rq = Path(sys.executable).parent / "rq"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = []
    for i in range(n):
        log = open(log_dir / f"rq-{i}.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen([str(rq), "worker", "-w", "avwap.rqworker.Worker", "--url", url, "--name",
                                       f"scan-test-{os.getpid()}-{i}", queue], cwd=ROOT, env=env, stdout=log,
                                      stderr=subprocess.STDOUT))
    return procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()


def test_sharded_scan_on_real_rq_workers_is_byte_identical(redis_url, real_redis, tmp_path) -> None:
    from rq.registry import FinishedJobRegistry

    from shared.jobs import job_queue

    real = load_bars(DAILY_FILE)
    s = load_settings(scan_market_gate="universe_proxy", scan_rq_queue="avwap-scan-test", scan_shard_timeout_s=60)
    d = "2018-10-01"
    pan = Panel.from_frame(real.frame, before=d, lookback=260)
    unsharded = artifact_bytes(scan_for(pan, d, s))
    workers = _rq_workers(redis_url, 2, "avwap-scan-test", tmp_path)
    try:
        t0 = time.monotonic()
        while len(real_redis.smembers("rq:workers")) < 2 and time.monotonic() - t0 < 30:
            time.sleep(0.1)
        sharded = artifact_bytes(scan_for(pan, d, s, r=real_redis, shards=4))
        reg = FinishedJobRegistry(queue=job_queue("avwap-scan-test", real_redis))
        assert len(reg.get_job_ids()) == 4  # all four shards ran on the rq workers
    finally:
        _stop(workers)
    assert sharded == unsharded


def test_shards_fall_back_in_process_when_no_rq_worker_runs(redis_url, real_redis, sample) -> None:
    s = load_settings(scan_market_gate="universe_proxy", scan_rq_queue="avwap-scan-nobody")
    pan = Panel.from_frame(sample.frame, before=D, lookback=260)
    res = sharded_results(real_redis, pan, pan.symbols, {}, D, last_session_before(D), s.scanner, shards=3,
                          timeout_s=0.3)
    merged = scan(pan, None, {}, D, last_session_before(D), s.scanner, results=res)
    assert artifact_bytes(merged) == artifact_bytes(scan_for(pan, D, s))
    from rq import Queue

    q = Queue("avwap-scan-nobody", connection=real_redis)
    assert len(q.finished_job_registry.get_job_ids()) == 0 and q.count == 0  # nothing ran on rq; none left queued


def test_ny_cron_fires_at_0830_new_york_across_daylight_saving() -> None:
    expr = "30 8 * * 1-5"
    winter = next_ny_run(expr, datetime(2018, 3, 9, 12, 0, tzinfo=UTC))  # Fri before DST: EST
    assert winter.astimezone(UTC) == datetime(2018, 3, 9, 13, 30, tzinfo=UTC)
    summer = next_ny_run(expr, datetime(2018, 3, 9, 14, 0, tzinfo=UTC))  # next: Mon 12 Mar, EDT
    assert summer.astimezone(UTC) == datetime(2018, 3, 12, 12, 30, tzinfo=UTC)
    assert summer.astimezone(NY).strftime("%H:%M") == "08:30"


def test_cron_job_scans_sessions_only_and_never_doubles_a_batch(redis_url, real_redis, tmp_path, store) -> None:
    s = settings_for(redis_url, tmp_path, store)
    sat = dt_to_ns(ny_datetime("2018-06-02", "08:30"))
    assert run_scheduled(real_redis, s, sat).startswith("skipped")
    at = dt_to_ns(ny_datetime(D, "08:30"))
    assert run_scheduled(real_redis, s, at).startswith("published")
    assert run_scheduled(real_redis, s, at).startswith("already published")
    # the worker's PRE_MARKET for the same session now publishes nothing
    out = SPEC.build(make_context("scanner", s, real_redis))(pre_market(D), Delivery(CLOCK, "9-0", 1, "c"))
    assert out == [] and real_redis.xlen(CANDIDATES) == 1
    assert real_redis.hget(CLAIM_KEY, D).decode().endswith(" cron")
    # and the other way round: the worker first, then cron and the CLI's --publish do nothing
    d2 = "2018-06-04"
    out = SPEC.build(make_context("scanner", s, real_redis))(pre_market(d2), Delivery(CLOCK, "10-0", 1, "c"))
    Bus(real_redis).publish_many(out)
    assert run_scheduled(real_redis, s, dt_to_ns(ny_datetime(d2, "08:30"))).startswith("already published")
    res = scan_for(store_panel(BarStore(store), d2, s), d2, s)
    assert not publish_once(real_redis, res, owner="cli")
    assert real_redis.xlen(CANDIDATES) == 2


def test_rq_cron_scheduler_enqueues_the_job_and_a_real_rq_worker_runs_it(redis_url, real_redis, tmp_path) -> None:
    from avwap.rqworker import Worker
    from shared.jobs import job_queue

    s = load_settings(redis_url=redis_url, scan_rq_queue="avwap-cron-test")
    sched = NYCronScheduler(connection=real_redis, name="test-cron")
    job = sched.register(premarket_job, "avwap-cron-test", cron=s.scanner.scan_cron, name="t")
    assert job.next_enqueue_time.astimezone(NY).strftime("%H:%M") == "08:30"
    job.next_enqueue_time = datetime(2000, 1, 1, tzinfo=UTC)  # due now
    assert [j.name for j in sched.enqueue_jobs()] == ["t"]
    q = job_queue("avwap-cron-test", real_redis)
    assert q.count == 1
    env = {"REDIS_URL": redis_url, "BARS_DIR": str(tmp_path / "empty-bars"), "ARTIFACTS_DIR": str(tmp_path / "art"),
           "SCAN_MARKET_GATE": "off"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from shared.settings import get_settings

    get_settings.cache_clear()
    try:
        Worker([q], connection=real_redis).work(burst=True)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()
    (jid,) = q.finished_job_registry.get_job_ids()
    result = q.fetch_job(jid).return_value()
    today = datetime.now(NY).date().isoformat()
    if calendar().is_session(today):  # an empty bar store: a fail-closed batch, but a batch
        assert result.startswith("published")
        (batch,) = stream(real_redis, CANDIDATES)
        assert batch.scan_date == today and not batch.market_gate_ok and batch.market_gate_reason.startswith("BARS_STALE")
    else:
        assert result.startswith("skipped")


@pytest.mark.parametrize("late_bar", [False, True])
def test_the_scan_computed_ahead_at_close_is_used_only_on_the_same_inputs(redis_url, real_redis, tmp_path, sample,
                                                                          monkeypatch, late_bar) -> None:
    """CLOSE of D computes the next session's scan; PRE_MARKET uses it only when the panel (and universe) it
    was computed from are unchanged — a bar appended after the close makes it scan again. Either way the
    batch is the fresh scan of the store as it is at PRE_MARKET."""
    import services.scanner.worker as scanner_worker
    from shared.schemas import BarRow

    calls: list[str] = []
    real_scan_for = scanner_worker.scan_for

    def counting(panel, day, settings, **kw):  # noqa: ANN001, ANN003
        calls.append(day)
        return real_scan_for(panel, day, settings, **kw)

    monkeypatch.setattr(scanner_worker, "scan_for", counting)
    prev = last_session_before(D)
    root = tmp_path / "bars"
    bars = BarStore(root)
    bars.import_result(LoadResult(tf="1d", frame=sample.frame[sample.frame["trade_date"] < D]))
    s = settings_for(redis_url, tmp_path, root)
    consumer = make_consumer(SPEC, make_context("scanner", s, real_redis), consumer_name="scanner-0")
    consumer.ensure_groups()
    bus = Bus(real_redis)
    bus.publish(CLOCK, SessionEvent(trade_date=prev, phase="CLOSE", ts=dt_to_ns(ny_datetime(prev, "16:00"))))
    consumer.run(install_signals=False, until_idle=True)
    assert real_redis.xpending(CLOCK, "scanner")["pending"] == 0  # CLOSE is acked at once, the scan runs in a thread
    assert consumer.handler.ahead.wait(timeout=60) is not None
    assert calls == [D] and real_redis.xlen(CANDIDATES) == 0  # computed ahead, nothing published at CLOSE
    if late_bar:  # a bar of a new symbol for the last session, arriving after the close
        ts = dt_to_ns(ny_datetime(prev, "16:00"))
        bars.append("1d", [BarRow(symbol="ZZZZ", ts=ts, open=10.0, high=10.5, low=9.5, close=10.2, volume=1e6)])
    bus.publish(CLOCK, pre_market(D))
    consumer.run(install_signals=False, until_idle=True)
    assert calls == ([D, D] if late_bar else [D])
    (batch,) = stream(real_redis, CANDIDATES)
    assert batch.universe_size == (37 if late_bar else 36)
    fresh = real_scan_for(store_panel(BarStore(root), D, s), D, s)
    assert paths(tmp_path / "artifacts", D)["batch"].read_bytes() == artifact_bytes(fresh)["batch"]
    assert paths(tmp_path / "artifacts", D)["rejects"].read_bytes() == artifact_bytes(fresh)["rejects"]


def test_a_scan_ahead_fits_only_the_same_day_files(sample, tmp_path) -> None:
    """``Kept.fits`` compares the sessions and file versions a panel was read from with those the store has
    now: unchanged files fit; a bar appended to one day, a day rewritten in place, another session's window,
    another universe file or a panel not read from a store do not."""
    from shared.ahead import Kept
    from shared.schemas import BarRow

    store = BarStore(tmp_path)
    store.import_result(LoadResult(tf="1d", frame=sample.frame[sample.frame["trade_date"] < D]))
    pan = store.daily_panel(before=D, lookback=260)
    kept = Kept.of(D, pan, "u", None)
    assert kept.fits(D, store.day_versions(before=D, lookback=260), "u")
    assert kept.fits(D, BarStore(tmp_path).day_versions(before=D, lookback=260), "u")  # another process's view
    assert not kept.fits(D, store.day_versions(before=D, lookback=260), "other universe")
    assert not kept.fits(D, store.day_versions(before=D, lookback=259), "u")
    assert not Kept.of(D, Panel.from_frame(sample.frame, before=D, lookback=260), "u", None).fits(
        D, store.day_versions(before=D, lookback=260), "u")
    day = pan.dates[-3]
    ts = int(pan.ts[-3])
    store.append("1d", [BarRow(symbol="ZZZZ", ts=ts, open=10.0, high=10.5, low=9.5, close=10.2, volume=1e6)])
    assert not kept.fits(D, store.day_versions(before=D, lookback=260), "u")  # a late bar of an earlier day
    pan = store.daily_panel(before=D, lookback=260)
    kept = Kept.of(D, pan, "u", None)
    path = store.path("1d", day)
    data = path.read_bytes()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)  # the same bytes, rewritten (the backfill's purge): read again, never trusted
    assert not kept.fits(D, store.day_versions(before=D, lookback=260), "u")
