"""Risk worker on a real Redis: atomic state + publish + ack, controls, replicas, SIGKILL restarts, artifacts."""

from __future__ import annotations

import dataclasses
import json
import random
import signal
import threading
import time
from pathlib import Path

import pytest
import redis

from avwap.procs import ServiceProcs
from services.risk.core import build_book, decode_state
from services.risk.worker import SPEC, STATE_KEY, STREAMS, artifact_path
from shared.artifacts import code_version
from shared.bus import Bus
from shared.redis_conn import connect
from shared.schemas import Alert, CandidateBatch, EntryIntent, Rejection, decode
from shared.service import make_consumer, make_context
from shared.settings import load_settings
from shared.streams import ALERTS, BROKER, CANDIDATES, CLOCK, INTENTS, KILL_SWITCH_KEY, PORTFOLIO, REJECTIONS
from tests.test_risk_support import D, batch, cand, position, session, snapshot

SYMS = [f"S{i:02d}" for i in range(40)]


def worker(redis_url: str, tmp_path: Path, name: str = "t0", **overrides):
    settings = load_settings(redis_url=redis_url, artifacts_dir=str(tmp_path / "art"), bus_block_ms=50, **overrides)
    ctx = make_context("risk", settings, connect(redis_url))
    return settings, make_consumer(SPEC, ctx, name)


def drain(consumer) -> None:
    consumer.run(install_signals=False, until_idle=True)


def read(r: redis.Redis, stream: str) -> list:
    return [decode(f[b"data"]) for _, f in r.xrange(stream)]


def quiet(r: redis.Redis, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        for s in STREAMS:
            if not r.exists(s):
                continue
            for g in r.xinfo_groups(s):
                if g["name"] == b"risk" and (g["pending"] or g.get("lag")):
                    busy = True
        if not busy:
            return
        time.sleep(0.05)
    raise AssertionError("risk did not go quiet")


def test_session_flow_publishes_intent_state_and_artifact(redis_url: str, real_redis: redis.Redis, tmp_path: Path) -> None:
    settings, c = worker(redis_url, tmp_path)
    bus = Bus(real_redis)
    cb = batch([cand("AAPL"), cand("MSFT", entry=50.0, stop=49.0, score=10)])
    bus.publish(CANDIDATES, cb)  # before the clock: held
    drain(c)
    assert real_redis.xlen(INTENTS) == 0 and cb.batch_id in decode_state(real_redis.get(STATE_KEY)).held
    bus.publish(CLOCK, session())
    bus.publish(BROKER, snapshot())
    drain(c)
    ins = read(real_redis, INTENTS)
    assert [i.symbol for i in ins] == ["AAPL", "MSFT"] and all(isinstance(i, EntryIntent) for i in ins)
    for s in STREAMS:
        assert real_redis.xpending(s, "risk")["pending"] == 0
    lines = artifact_path(settings, D).read_bytes().splitlines()
    assert [json.loads(x)["symbol"] for x in lines] == ["AAPL", "MSFT"]
    prov = json.loads(lines[0])["provenance"]
    assert prov["run_id"] == settings.resolved_run_id() and prov["code_version"] == code_version()
    assert prov["settings_hash"] == settings.hash() and prov["input:candidates"] == cb.batch_id
    # redelivered inputs change nothing
    bus.publish(CANDIDATES, cb)
    bus.publish(BROKER, snapshot())
    drain(c)
    assert real_redis.xlen(INTENTS) == 2 and real_redis.xlen(REJECTIONS) == 0
    # risk acks inside its own transaction and tells the bus so: no phantom lost races
    assert c.stats.handled == 5 and c.stats.lost_races == 0


def test_a_real_race_is_counted_and_the_loser_writes_nothing(redis_url: str, real_redis: redis.Redis, tmp_path: Path) -> None:
    """A slow replica whose entry was claimed and committed by another publishes nothing for it."""
    release, holding = threading.Event(), threading.Event()

    def slow_build(ctx):
        inner = SPEC.build(ctx)

        def handle(msg, d):
            if isinstance(msg, CandidateBatch):
                holding.set()
                release.wait(10)
            return inner(msg, d)

        return handle

    settings = load_settings(redis_url=redis_url, artifacts_dir=str(tmp_path / "art"), bus_block_ms=50, bus_claim_idle_ms=100)
    zombie = make_consumer(dataclasses.replace(SPEC, build=slow_build), make_context("risk", settings, connect(redis_url)), "zombie")
    claimer = make_consumer(SPEC, make_context("risk", settings, connect(redis_url)), "claimer")
    bus = Bus(real_redis)
    bus.publish(CLOCK, session())
    bus.publish(BROKER, snapshot())
    drain(claimer)
    bus.publish(CANDIDATES, batch([cand("AAPL")]))
    t = threading.Thread(target=zombie.step, kwargs={"block": False})
    t.start()
    assert holding.wait(10)
    deadline = time.monotonic() + 10
    while real_redis.xpending_range(CANDIDATES, "risk", "-", "+", 1)[0]["time_since_delivered"] < 100:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    drain(claimer)  # claims the batch and decides it
    assert claimer.stats.claimed == 1 and [i.symbol for i in read(real_redis, INTENTS)] == ["AAPL"]
    state = real_redis.get(STATE_KEY)
    release.set()
    t.join(10)
    assert zombie.stats.handled == 1 and zombie.stats.lost_races == 1 and claimer.stats.lost_races == 0
    assert real_redis.xlen(INTENTS) == 1 and real_redis.get(STATE_KEY) == state  # the loser wrote nothing
    assert real_redis.xpending(CANDIDATES, "risk")["pending"] == 0


def test_a_lost_state_never_shortens_a_days_file_and_alerts(redis_url: str, real_redis: redis.Redis, tmp_path: Path) -> None:
    settings, c = worker(redis_url, tmp_path)
    bus = Bus(real_redis)
    bus.publish(CLOCK, session())
    bus.publish(BROKER, snapshot())
    bus.publish(CANDIDATES, batch([cand("AAA"), cand("BBB", score=5)]))
    drain(c)
    before = artifact_path(settings, D).read_bytes()
    assert before.count(b"\n") == 2
    real_redis.delete(STATE_KEY)  # Redis lost risk's state
    _, c2 = worker(redis_url, tmp_path, name="t1")
    bus.publish(CLOCK, session())
    bus.publish(BROKER, snapshot())
    bus.publish(CANDIDATES, batch([cand("CCC")]))
    drain(c2)
    after = artifact_path(settings, D).read_bytes()
    assert after.startswith(before)  # nothing of the day's file was dropped
    assert [json.loads(x)["symbol"] for x in after.splitlines()] == ["AAA", "BBB", "CCC"]
    gaps = [a for a in read(real_redis, ALERTS) if isinstance(a, Alert) and a.kind == "risk_state_gap"]
    assert len(gaps) == 1 and gaps[0].severity == "critical" and gaps[0].trade_date == D
    bus.publish(CANDIDATES, batch([cand("DDD")]))  # later writes keep the kept lines, without a new alert
    drain(c2)
    assert artifact_path(settings, D).read_bytes().startswith(after)
    assert len([a for a in read(real_redis, ALERTS) if isinstance(a, Alert) and a.kind == "risk_state_gap"]) == 1


def test_never_shorter_keeps_lost_records_first_and_replaces_re_rendered_ones() -> None:
    from services.risk.worker import never_shorter

    def ln(kind: str, ident: str, extra: str = "") -> bytes:
        key = "candidate_id" if kind == "decision" else "decision_id"
        return json.dumps({"kind": kind, key: ident, "x": extra}, sort_keys=True).encode() + b"\n"

    a, b, c = ln("decision", "a"), ln("decision", "b"), ln("portfolio_decision", "p")
    assert never_shorter(b"", a) == (a, 0)
    assert never_shorter(a, a + b) == (a + b, 0)
    assert never_shorter(a + c, a + b + c) == (a + b + c, 0)  # a record inserted before the analytics lines
    assert never_shorter(a + b + c, c) == (a + b + c, 2)  # the state lost a and b: kept, first
    assert never_shorter(a + ln("decision", "b", "v1"), a + ln("decision", "b", "v2")) == (a + ln("decision", "b", "v2"), 0)
    assert never_shorter(b"torn{" + b"\n" + a, a) == (b"torn{\n" + a, 1)  # a line that is not a record is kept too


def test_kill_switch_key_and_unreadable_key(redis_url: str, real_redis: redis.Redis, tmp_path: Path) -> None:
    _, c = worker(redis_url, tmp_path)
    bus = Bus(real_redis)
    bus.publish(CLOCK, session())
    bus.publish(BROKER, snapshot())
    real_redis.set(KILL_SWITCH_KEY, json.dumps({"on": True, "reason": "test"}))
    bus.publish(CANDIDATES, batch([cand("AAA")]))
    drain(c)
    real_redis.delete(KILL_SWITCH_KEY)
    real_redis.hset(KILL_SWITCH_KEY, "on", "1")  # wrong type: GET fails
    bus.publish(CANDIDATES, batch([cand("BBB")]))
    drain(c)
    real_redis.set(KILL_SWITCH_KEY, json.dumps({"on": False}))
    bus.publish(CANDIDATES, batch([cand("CCC")]))
    drain(c)
    rejs = read(real_redis, REJECTIONS)
    assert [(r.symbol, r.reasons) for r in rejs] == [("AAA", ["KILL_SWITCH_ON"]), ("BBB", ["KILL_SWITCH_UNREADABLE"])]
    assert [i.symbol for i in read(real_redis, INTENTS)] == ["CCC"]
    alerts = [a for a in read(real_redis, ALERTS) if isinstance(a, Alert)]
    assert any(a.severity == "critical" and "KILL_SWITCH_UNREADABLE" in a.title for a in alerts)


def test_unknown_execution_mode_runs_refuses_every_entry_and_alerts(redis_url: str, real_redis: redis.Redis,
                                                                     tmp_path: Path) -> None:
    """EXECUTION_MODE=YOLO: a real risk process starts (no crash loop), alerts, and rejects MODE_UNKNOWN."""
    procs = ServiceProcs(redis_url, env={"ARTIFACTS_DIR": str(tmp_path / "art"), "BUS_BLOCK_MS": "50",
                                         "EXECUTION_MODE": "YOLO"}, log_dir=tmp_path / "logs")
    bus = Bus(real_redis)
    try:
        procs.start("risk", 0)
        procs.wait_ready()  # a live heartbeat: it runs
        bus.publish(CLOCK, session())
        bus.publish(BROKER, snapshot())
        bus.publish(CANDIDATES, batch([cand("AAA"), cand("BBB", score=1)]))
        quiet(real_redis)
    finally:
        codes = procs.stop_all()
    assert set(codes.values()) == {0}
    assert real_redis.xlen(INTENTS) == 0
    assert [(r.symbol, r.reasons) for r in read(real_redis, REJECTIONS)] == [("AAA", ["MODE_UNKNOWN"]), ("BBB", ["MODE_UNKNOWN"])]
    kinds = [(a.kind, a.severity) for a in read(real_redis, ALERTS) if isinstance(a, Alert)]
    assert kinds == [("mode_unknown", "critical"), ("entry_blocked", "critical")]


def test_dead_lettered_decision_batch_fails_closed_with_json_invalid(redis_url: str, real_redis: redis.Redis, tmp_path: Path) -> None:
    _, c = worker(redis_url, tmp_path, portfolio_decision_enforce=True)
    bus = Bus(real_redis)
    bus.publish(CLOCK, session())
    bus.publish(BROKER, snapshot())
    bus.publish(CANDIDATES, batch([cand("AAA")]))
    drain(c)
    assert real_redis.xlen(REJECTIONS) == 0  # held for the decisions
    real_redis.xadd(PORTFOLIO, {"type": "portfolio_decision_batch", "v": 1, "data": b"{not json"})
    drain(c)  # the bus dead-letters it
    bus.publish(CLOCK, session(phase="OPEN"))
    drain(c)
    (rej,) = read(real_redis, REJECTIONS)
    assert isinstance(rej, Rejection) and rej.reasons == ["DECISION_JSON_INVALID"]


# cap -> (env, snapshot positions, intents expected, the one rejection code)
CAPS = {
    "daily": ({"MAX_NEW_ENTRIES_PER_DAY": "3", "MAX_CONCURRENT_POSITIONS": "30"}, [], 3, "MAX_NEW_ENTRIES_PER_DAY"),
    # one position already held: 3 new ones reach the cap of 4
    "concurrent": ({"MAX_NEW_ENTRIES_PER_DAY": "40", "MAX_CONCURRENT_POSITIONS": "4"}, [position("HELD", 10, 50.0)], 3,
                   "MAX_CONCURRENT_POSITIONS"),
    # each full entry is 200 x $100 = $20,000 (the per-symbol cap): 20k + 20k + a 10k partial fill the $50k
    "gross": ({"MAX_NEW_ENTRIES_PER_DAY": "40", "MAX_CONCURRENT_POSITIONS": "40", "MAX_GROSS_EXPOSURE": "50000"}, [], 3,
              "MAX_GROSS_EXPOSURE"),
}


@pytest.mark.parametrize("cap", sorted(CAPS))
def test_two_replicas_never_exceed_a_cap(redis_url: str, real_redis: redis.Redis, tmp_path: Path, cap: str) -> None:
    env, held, n_intents, code = CAPS[cap]
    procs = ServiceProcs(redis_url, env={"ARTIFACTS_DIR": str(tmp_path / "art"), "BUS_BLOCK_MS": "50", "BUS_BATCH": "1", **env},
                         log_dir=tmp_path / "logs")
    bus = Bus(real_redis)
    try:
        procs.start("risk", 0)
        procs.wait_ready()
        bus.publish(CLOCK, session())
        bus.publish(BROKER, snapshot(equity=1_000_000.0, positions=held))
        quiet(real_redis)
        procs.start("risk", 1)
        procs.wait_ready()
        for s in SYMS:
            bus.publish(CANDIDATES, batch([cand(s)]))
        quiet(real_redis)
    finally:
        codes = procs.stop_all()
    assert set(codes.values()) == {0}, codes
    logs = [log.read_text() for log in sorted((tmp_path / "logs").glob("risk-*.log"))]
    handled = [int(text.rsplit("handled=", 1)[1].split()[0]) for text in logs]
    # risk-0 also handled the clock event and the snapshot: both replicas decided candidates
    assert len(handled) == 2 and handled[0] > 2 and handled[1] > 0 and sum(handled) == 2 + len(SYMS), handled
    assert all("lost_races=0" in text for text in logs)
    ins, rejs = read(real_redis, INTENTS), read(real_redis, REJECTIONS)
    assert len(ins) == n_intents and len(rejs) == len(SYMS) - n_intents
    assert all(r.reasons == [code] for r in rejs), {tuple(r.reasons) for r in rejs}
    st = decode_state(real_redis.get(STATE_KEY))
    assert st.entries_by_day == {D: n_intents}
    book = build_book(st, st.broker, D)
    assert len(book.open_symbols) <= int(env["MAX_CONCURRENT_POSITIONS"])
    assert book.gross <= float(env.get("MAX_GROSS_EXPOSURE", 100_000)) + 1e-6
    if cap == "gross":
        assert sorted(i.notional for i in ins) == [10_000.0, 20_000.0, 20_000.0]
    art = (tmp_path / "art" / "risk_decisions" / f"{D}.jsonl").read_bytes().splitlines()
    assert len(art) == len(SYMS) and [json.loads(x)["ord"] for x in art] == list(range(len(SYMS)))


def test_sigkill_at_any_point_then_restart_gives_no_duplicate(redis_url: str, real_redis: redis.Redis, tmp_path: Path) -> None:
    procs = ServiceProcs(redis_url, env={"ARTIFACTS_DIR": str(tmp_path / "art"), "BUS_BLOCK_MS": "50", "BUS_BATCH": "1",
                                         "BUS_CLAIM_IDLE_MS": "200", "MAX_NEW_ENTRIES_PER_DAY": "25", "MAX_GROSS_EXPOSURE": "1e7",
                                         "MAX_CONCURRENT_POSITIONS": "30"},
                         log_dir=tmp_path / "logs")
    bus = Bus(real_redis)
    rnd = random.Random(7)
    try:
        procs.start("risk", 0)
        procs.wait_ready()
        bus.publish(CLOCK, session())
        bus.publish(BROKER, snapshot(equity=10_000_000.0))
        for s in SYMS:
            bus.publish(CANDIDATES, batch([cand(s)]))
        kills = 0
        for threshold in (3, 10, 18, 27):  # kill while it is deciding, at a random moment after progress
            deadline = time.monotonic() + 30
            while real_redis.xlen(INTENTS) + real_redis.xlen(REJECTIONS) < threshold and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(rnd.uniform(0, 0.01))
            if real_redis.xlen(INTENTS) + real_redis.xlen(REJECTIONS) < len(SYMS):
                kills += 1
            procs.kill("risk-0", signal.SIGKILL)
            procs.start("risk", 0)
        quiet(real_redis, timeout=60)
        # a replayed batch after the restarts is a no-op too
        bus.publish(CANDIDATES, batch([cand(SYMS[0])]))
        quiet(real_redis)
    finally:
        procs.stop_all()
    assert kills >= 3  # the kills landed mid-stream
    ins, rejs = read(real_redis, INTENTS), read(real_redis, REJECTIONS)
    ids = [i.intent_id for i in ins]
    assert len(ids) == len(set(ids)) == 25
    assert len(rejs) == len(SYMS) - 25 and {r.symbol for r in rejs} | {i.symbol for i in ins} == set(SYMS)
    art = (tmp_path / "art" / "risk_decisions" / f"{D}.jsonl").read_bytes()
    assert art.count(b"\n") == len(SYMS)
    # byte-identical to the same inputs decided without any crash
    from services.risk.worker import artifact_bytes, limits_for
    from tests.test_risk_support import run

    same = load_settings(bus_block_ms=50, bus_batch=1, bus_claim_idle_ms=200, max_new_entries_per_day=25,
                         max_gross_exposure=1e7, max_concurrent_positions=30)
    msgs = [session(), snapshot(equity=10_000_000.0), *[batch([cand(s)]) for s in SYMS]]
    st, _ = run(msgs, limits=limits_for(same))
    assert artifact_bytes(st, D) == art


def _scenario(redis_url: str, r: redis.Redis, tmp_path: Path, replicas: int) -> tuple[bytes, list[str]]:
    procs = ServiceProcs(redis_url, env={"ARTIFACTS_DIR": str(tmp_path / "art"), "BUS_BLOCK_MS": "50", "BUS_BATCH": "1",
                                         "MAX_NEW_ENTRIES_PER_DAY": "2"}, log_dir=tmp_path / "logs")
    bus = Bus(r)
    sessions = ["2018-12-03", "2018-12-04", "2018-12-06"]
    try:
        procs.start_all(["risk"], replicas=replicas)
        procs.wait_ready()
        for i, d in enumerate(sessions):
            bus.publish(CLOCK, session(d))
            cb = batch([cand(s, entry=100.0 + j, stop=99.0 + j - i * 0.5, score=j % 3, d=d) for j, s in enumerate(SYMS[:6])], d=d)
            bus.publish(CANDIDATES, cb)
            bus.publish(BROKER, snapshot(d, equity=200_000.0))
            quiet(r)
            bus.publish(CLOCK, session(d, "OPEN"))
            bus.publish(CLOCK, session(d, "CLOSE"))
            quiet(r)
    finally:
        codes = procs.stop_all()
    assert set(codes.values()) == {0}
    data = b"".join((tmp_path / "art" / "risk_decisions" / f"{d}.jsonl").read_bytes() for d in sessions)
    return data, [f[b"data"].decode() for _, f in r.xrange(INTENTS)]


def test_one_or_two_replicas_give_byte_identical_artifacts(redis_url: str, real_redis: redis.Redis, tmp_path: Path) -> None:
    one, intents_one = _scenario(redis_url, real_redis, tmp_path / "one", 1)
    real_redis.flushdb()
    two, intents_two = _scenario(redis_url, real_redis, tmp_path / "two", 2)
    assert one == two and one.count(b"\n") == 18
    assert sorted(intents_one) == sorted(intents_two) and len(intents_one) == 6


class FlakyRedis(redis.Redis):
    """Transactions fail with a connection error the first ``fail`` times (other commands work)."""

    fail = 2

    def pipeline(self, transaction: bool = True, shard_hint=None):  # type: ignore[override]
        if FlakyRedis.fail > 0:
            FlakyRedis.fail -= 1
            raise redis.ConnectionError("injected: connection reset")
        return super().pipeline(transaction=transaction, shard_hint=shard_hint)


def test_redis_error_makes_no_entry_alerts_and_retries(redis_url: str, real_redis: redis.Redis, tmp_path: Path) -> None:
    settings = load_settings(redis_url=redis_url, artifacts_dir=str(tmp_path / "art"), bus_block_ms=50)
    bus = Bus(real_redis)
    bus.publish(CLOCK, session())
    bus.publish(BROKER, snapshot())
    bus.publish(CANDIDATES, batch([cand("AAA")]))
    FlakyRedis.fail = 1
    flaky = FlakyRedis.from_url(redis_url)
    ctx = make_context("risk", settings, flaky)
    c = make_consumer(SPEC, ctx, "t0")
    c.step(block=False)  # the first transaction fails: nothing published, nothing acked past it
    assert real_redis.xlen(INTENTS) == 0 and c.stats.failed == 1
    assert any(a.kind == "risk_redis_error" and a.severity == "critical" for a in read(real_redis, ALERTS))
    drain(c)  # retried once Redis answers again: decided exactly once
    assert [i.symbol for i in read(real_redis, INTENTS)] == ["AAA"]
    for s in STREAMS:
        assert real_redis.xpending(s, "risk")["pending"] == 0


def test_cli_gates_and_status(redis_url: str, real_redis: redis.Redis, tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from avwap.cli import app
    from shared.settings import get_settings

    _, c = worker(redis_url, tmp_path)
    bus = Bus(real_redis)
    bus.publish(CLOCK, session())
    bus.publish(BROKER, snapshot())
    bus.publish(CANDIDATES, batch([cand("AAA")]))
    drain(c)
    monkeypatch.setenv("REDIS_URL", redis_url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        res = runner.invoke(app, ["risk", "gates", "--json"])
        assert res.exit_code == 0 and json.loads(res.output)[0]["code"] == "KILL_SWITCH_ON"
        res = runner.invoke(app, ["risk", "status", "--json"])
        assert res.exit_code == 0, res.output
        info = json.loads(res.output)
        assert info["session"] == D and info["entries_by_ny_day"] == {D: 1} and info["pending_entries"] == ["AAA:200:open"]
        assert info["execution_mode_known"] is True and info["every_entry_blocked_by"] == []
        real_redis.set(KILL_SWITCH_KEY, "1")
        monkeypatch.setenv("EXECUTION_MODE", "YOLO")
        get_settings.cache_clear()
        info = json.loads(runner.invoke(app, ["risk", "status", "--json"]).output)
        assert info["execution_mode_known"] is False and info["every_entry_blocked_by"] == ["KILL_SWITCH_ON", "MODE_UNKNOWN"]
    finally:
        get_settings.cache_clear()


def test_live_token_status_and_kill_switch_parsing(tmp_path: Path, fake_redis: redis.Redis) -> None:
    from services.risk.worker import live_token_status
    from shared.controls import read_kill_switch

    tok = tmp_path / "token"
    base = {"execution_mode": "LIVE", "live_confirm_token_file": str(tok)}
    assert live_token_status(load_settings(execution_mode="PAPER_SIM")) == "n/a"
    assert live_token_status(load_settings(**base)) == "missing"
    assert live_token_status(load_settings(live_confirm_token="s3cret", **base)) == "file_missing"
    tok.write_text("  \n")
    assert live_token_status(load_settings(live_confirm_token="s3cret", **base)) == "file_missing"
    tok.write_text("other\n")
    assert live_token_status(load_settings(live_confirm_token="s3cret", **base)) == "mismatch"
    tok.write_text("s3cret\n")
    assert live_token_status(load_settings(live_confirm_token="s3cret", **base)) == "ok"
    for raw, want in ((None, "off"), ('{"on": true}', "on"), ('{"on": false}', "off"), ("1", "on"), ("0", "off"),
                      ("yes", "unreadable"), ('{"on": "maybe"}', "unreadable"), ("[1]", "unreadable")):
        fake_redis.delete(KILL_SWITCH_KEY)
        if raw is not None:
            fake_redis.set(KILL_SWITCH_KEY, raw)
        assert read_kill_switch(fake_redis) == want, raw
    fake_redis.delete(KILL_SWITCH_KEY)
    fake_redis.lpush(KILL_SWITCH_KEY, "x")
    assert read_kill_switch(fake_redis) == "unreadable"


def test_risk_never_consumes_exits_or_stop_intents() -> None:
    from shared.streams import EXITS, INTENTS

    assert INTENTS not in SPEC.streams and EXITS not in SPEC.streams


def test_a_worker_that_holds_the_state_sees_what_another_replica_committed(redis_url: str, real_redis: redis.Redis,
                                                                           tmp_path: Path) -> None:
    """Each worker keeps the state it committed decoded (``StateCache``); when another replica committed since,
    the stored revision differs and the worker decides on the stored state: the day's cap holds across both."""
    _, a = worker(redis_url, tmp_path, name="a", max_new_entries_per_day=2)
    _, b = worker(redis_url, tmp_path, name="b", max_new_entries_per_day=2)
    bus = Bus(real_redis)
    bus.publish(CLOCK, session())
    bus.publish(BROKER, snapshot())
    drain(a)  # a holds the state of revision 2
    rev_a = decode_state(real_redis.get(STATE_KEY)).rev
    bus.publish(CANDIDATES, batch([cand("AAA")]))
    drain(b)  # b enters AAA: a's revision is stale now
    assert decode_state(real_redis.get(STATE_KEY)).rev > rev_a
    bus.publish(CANDIDATES, batch([cand("BBB"), cand("CCC", score=5)]))
    drain(a)  # one entry left of the day's two
    assert [i.symbol for i in read(real_redis, INTENTS)] == ["AAA", "BBB"]
    st = decode_state(real_redis.get(STATE_KEY))
    assert sum(st.entries_by_day.values()) == 2 and sorted(st.pending) == sorted(i.intent_id for i in read(real_redis, INTENTS))
