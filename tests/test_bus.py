"""The stream bus on a real Redis: crash redelivery, DLQ, graceful stop, no busy-spin, heartbeats."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from shared.bus import (
    HEARTBEAT_PREFIX,
    Bus,
    Committed,
    Delivery,
    Emit,
    fields_of,
)
from shared.consumer import Consumer
from shared.schemas import Alert, Message, encode, replace
from shared.streams import DLQ

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "tests" / "bus_consumer.py"
IN, OUT = "test:in", "test:out"


def alert(i: int | str) -> Alert:
    return Alert(alert_id=f"al-{i}", severity="info", kind="test", source="producer", title=f"message {i}")


def echo(out: str = OUT) -> Callable[[Message, Delivery], list[Emit]]:
    def handle(msg: Message, d: Delivery) -> list[Emit]:
        return [(out, replace(msg, source=d.consumer))]

    return handle


def out_ids(r: redis.Redis, stream: str = OUT) -> list[str]:
    return [json.loads(f[b"data"])["alert_id"] for _, f in r.xrange(stream)]


def until(pred: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


def spawn(procs: list[subprocess.Popen], url: str, name: str, *extra: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, str(STANDIN), url, "g", IN, OUT, name, *extra], cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    procs.append(p)
    return p


# -- crash and redelivery -------------------------------------------------------------------

def test_sigkill_mid_message_is_redelivered_via_xautoclaim_and_lands_once(
        redis_url: str, real_redis: redis.Redis, procs: list[subprocess.Popen]) -> None:
    r = real_redis
    Consumer(r, "g", [IN], echo()).ensure_groups()
    Bus(r).publish_many([(IN, alert(i)) for i in range(3)])
    victim = spawn(procs, redis_url, "victim", "--hang")
    until(lambda: r.llen("test:inhand") == 1)  # the victim holds message 0 in its handler
    assert r.xpending(IN, "g")["pending"] == 3  # the whole batch was delivered to it
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=10) == -signal.SIGKILL
    assert r.xlen(OUT) == 0  # it died before committing anything

    seen: list[Delivery] = []

    def handle(msg: Message, d: Delivery) -> list[Emit]:
        seen.append(d)
        return echo()(msg, d)

    rescuer = Consumer(r, "g", [IN], handle, name="rescuer", claim_idle_ms=100, block_ms=50)
    until(lambda: r.xpending_range(IN, "g", "-", "+", 1)[0]["time_since_delivered"] >= 100)
    rescuer.run(install_signals=False, until_idle=True)

    assert rescuer.stats.claimed == 3  # taken over from the dead consumer by XAUTOCLAIM
    assert [d.deliveries for d in seen] == [2, 2, 2] and {d.consumer for d in seen} == {"rescuer"}
    assert sorted(out_ids(r)) == ["al-0", "al-1", "al-2"]  # each effect exactly once
    assert {json.loads(f[b"data"])["source"] for _, f in r.xrange(OUT)} == {"rescuer"}
    assert r.xpending(IN, "g")["pending"] == 0


def test_slow_consumer_and_claimer_both_finish_but_outputs_land_once(real_redis: redis.Redis) -> None:
    """First committer wins: a consumer that lost its entry to XAUTOCLAIM publishes nothing for it."""
    r = real_redis
    release, holding = threading.Event(), threading.Event()

    def slow(msg: Message, d: Delivery) -> list[Emit]:
        holding.set()
        release.wait(10)
        return echo()(msg, d)

    zombie = Consumer(r, "g", [IN], slow, name="zombie", block_ms=50)
    claimer = Consumer(r, "g", [IN], echo(), name="claimer", claim_idle_ms=100, block_ms=50)
    zombie.ensure_groups()
    Bus(r).publish(IN, alert("x"))
    t = threading.Thread(target=zombie.step)
    t.start()
    assert holding.wait(10)
    until(lambda: r.xpending_range(IN, "g", "-", "+", 1)[0]["time_since_delivered"] >= 100)
    claimer.run(install_signals=False, until_idle=True)
    assert claimer.stats.claimed == 1 and out_ids(r) == ["al-x"]
    release.set()
    t.join(10)
    assert zombie.stats.handled == 1 and zombie.stats.lost_races == 1
    assert out_ids(r) == ["al-x"]  # the zombie's late commit published nothing
    assert json.loads(r.xrange(OUT)[0][1][b"data"])["source"] == "claimer"
    assert r.xpending(IN, "g")["pending"] == 0


COUNT = "test:count"


def self_committing(before_commit: Callable[[], None] = lambda: None) -> Callable[[Message, Delivery], Committed]:
    """A handler that commits its own state (``<count>:<consumer>``) + output + ack in a unit of work.

    No WATCH on purpose: only the script's first-committer-wins guard keeps a late commit out.
    """

    def handle(msg: Message, d: Delivery) -> Committed:
        r = handle.r  # type: ignore[attr-defined]
        for uow in Bus(r).unit_of_work("g", d):
            with uow:
                n = int((uow.r.get(COUNT) or b"0").split(b":")[0])
                before_commit()
                uow.set(COUNT, f"{n + 1}:{d.consumer}".encode())
                uow.emit(OUT, replace(msg, source=d.consumer))
        assert uow.result is not None
        return uow.result

    return handle


def test_self_committing_handler_is_acked_once_and_counts_no_lost_race(real_redis: redis.Redis) -> None:
    """``Committed``: the handler's own transaction acked the entry; the bus does not ack again."""
    r = real_redis
    h = self_committing()
    h.r = r  # type: ignore[attr-defined]
    c = Consumer(r, "g", [IN], h, name="c", block_ms=50)
    c.ensure_groups()
    Bus(r).publish_many([(IN, alert(i)) for i in range(5)])
    c.run(install_signals=False, until_idle=True)
    assert c.stats.handled == 5 and c.stats.lost_races == 0
    assert out_ids(r) == [f"al-{i}" for i in range(5)] and r.get(COUNT) == b"5:c"
    assert r.xpending(IN, "g")["pending"] == 0


def test_self_committing_handler_that_lost_its_entry_writes_nothing_and_counts_the_race(real_redis: redis.Redis) -> None:
    r = real_redis
    release, holding = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(10)

    slow, fast = self_committing(hold), self_committing()
    slow.r = fast.r = r  # type: ignore[attr-defined]
    zombie = Consumer(r, "g", [IN], slow, name="zombie", block_ms=50)
    claimer = Consumer(r, "g", [IN], fast, name="claimer", claim_idle_ms=100, block_ms=50)
    zombie.ensure_groups()
    Bus(r).publish(IN, alert("x"))
    t = threading.Thread(target=zombie.step)
    t.start()
    assert holding.wait(10)  # the zombie read the counter (0) and holds its commit
    until(lambda: r.xpending_range(IN, "g", "-", "+", 1)[0]["time_since_delivered"] >= 100)
    claimer.run(install_signals=False, until_idle=True)
    assert claimer.stats.claimed == 1 and claimer.stats.lost_races == 0 and r.get(COUNT) == b"1:claimer"
    release.set()
    t.join(10)
    assert zombie.stats.handled == 1 and zombie.stats.lost_races == 1
    assert r.get(COUNT) == b"1:claimer"  # the zombie's SET (from its stale read) was not applied
    assert out_ids(r) == ["al-x"] and json.loads(r.xrange(OUT)[0][1][b"data"])["source"] == "claimer"
    assert r.xpending(IN, "g")["pending"] == 0


@pytest.mark.parametrize("watched", [True, False])
def test_unit_of_work_commits_once_after_the_server_lost_its_scripts(real_redis: redis.Redis, watched: bool) -> None:
    """The commit runs by EVALSHA: a Redis that lost the script (restart, SCRIPT FLUSH) gets it loaded and the
    commit made exactly once — a watched block runs again on fresh reads, an unwatched one is resent."""
    r = real_redis
    bus = Bus(r)
    r.xgroup_create(IN, "g", id="0", mkstream=True)
    bus.publish(IN, alert("s"))
    (_, entries), = r.xreadgroup("g", "c", {IN: ">"}, count=1)
    entry_id = entries[0][0].decode()
    d = Delivery(stream=IN, entry_id=entry_id, consumer="c", deliveries=1)
    r.set(COUNT, b"0")
    runs = 0
    for uow in bus.unit_of_work("g", d, watch=[COUNT] if watched else []):
        with uow:
            runs += 1
            n = int(uow.r.get(COUNT) or b"0")
            if runs == 1:
                r.script_flush()
            uow.set(COUNT, str(n + 1).encode())
            uow.emit(OUT, alert("s"))
    assert uow.result == Committed(lost_race=False)
    assert runs == (2 if watched else 1) and r.get(COUNT) == b"1"
    assert out_ids(r) == ["al-s"] and r.xpending(IN, "g")["pending"] == 0


def test_unit_of_work_guard_that_answers_otherwise_writes_nothing_and_runs_the_block_again(
        real_redis: redis.Redis) -> None:
    """``uow.expect``: the commit checks what the block assumed; a guard that answers otherwise (another writer
    came between) fails the whole commit before any write, XACK or output, and the block runs again with
    ``attempt`` 1 on what it then reads; nil answers compare as ""."""
    r = real_redis
    bus = Bus(r)
    r.xgroup_create(IN, "g", id="0", mkstream=True)
    bus.publish(IN, alert("s"))
    (_, entries), = r.xreadgroup("g", "c", {IN: ">"}, count=1)
    d = Delivery(stream=IN, entry_id=entries[0][0].decode(), consumer="c", deliveries=1)
    attempts_seen: list[tuple[int, bytes | None]] = []
    for uow in bus.unit_of_work("g", d):
        with uow:
            seen = None if uow.attempt == 0 else r.get(COUNT)  # the first attempt guesses "absent"
            attempts_seen.append((uow.attempt, seen))
            uow.expect("GET", COUNT, answer=seen)
            if uow.attempt == 0:
                r.set(COUNT, b"7")  # another writer, between the guess and the commit
            uow.set(COUNT, str(int(seen or 0) + 1).encode())
            uow.emit(OUT, alert("s"))
            assert r.xpending(IN, "g")["pending"] == 1
    assert attempts_seen == [(0, None), (1, b"7")]
    assert uow.result == Committed(lost_race=False) and r.get(COUNT) == b"8"
    assert out_ids(r) == ["al-s"] and r.xpending(IN, "g")["pending"] == 0


def test_own_pending_entries_are_reread_on_start(real_redis: redis.Redis) -> None:
    r = real_redis
    Consumer(r, "g", [IN], echo()).ensure_groups()
    Bus(r).publish_many([(IN, alert(i)) for i in range(2)])
    r.xreadgroup("g", "same-name", {IN: ">"})  # a previous life read them and died
    seen: list[int] = []
    c = Consumer(r, "g", [IN], lambda m, d: seen.append(d.deliveries) or echo()(m, d), name="same-name")
    c.run(install_signals=False, until_idle=True)
    assert sorted(out_ids(r)) == ["al-0", "al-1"] and seen == [2, 2] and c.stats.claimed == 0
    assert r.xpending(IN, "g")["pending"] == 0


def test_a_pending_entry_trimmed_before_handling_is_acked_counted_and_logged(
        real_redis: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    r = real_redis
    Consumer(r, "g", [IN], echo()).ensure_groups()
    ids = Bus(r).publish_many([(IN, alert(i)) for i in range(3)])
    r.xreadgroup("g", "same-name", {IN: ">"})  # read, then the consumer died...
    r.xdel(IN, ids[1])  # ...and the stream was trimmed under its pending entry
    c = Consumer(r, "g", [IN], echo(), name="same-name")
    with caplog.at_level("WARNING", logger="shared.bus"):
        c.run(install_signals=False, until_idle=True)
    assert sorted(out_ids(r)) == ["al-0", "al-2"] and c.stats.trimmed == 1
    assert r.xpending(IN, "g")["pending"] == 0
    assert any("trimmed or deleted before it was handled" in rec.getMessage() for rec in caplog.records)


# -- dead letters ------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["real_redis", "fake_redis"])
def test_poison_message_goes_to_dlq_after_n_deliveries_and_the_rest_flow(
        request: pytest.FixtureRequest, backend: str) -> None:
    r = request.getfixturevalue(backend)
    calls: dict[str, list[int]] = {}

    def handle(msg: Message, d: Delivery) -> list[Emit]:
        assert isinstance(msg, Alert)
        calls.setdefault(msg.alert_id, []).append(d.deliveries)
        if msg.alert_id == "al-poison":
            raise ValueError("cannot digest this")
        return echo()(msg, d)

    c = Consumer(r, "g", [IN], handle, name="c1", max_deliveries=3, block_ms=50)
    c.ensure_groups()
    poison = alert("poison")
    ids = Bus(r).publish_many([(IN, alert(0)), (IN, poison), (IN, alert(1)), (IN, alert(2))])
    c.run(install_signals=False, until_idle=True)

    assert calls["al-poison"] == [1, 2, 3]  # N deliveries, counted by Redis
    assert calls["al-0"] == calls["al-1"] == calls["al-2"] == [1]  # the others were not charged retries
    assert out_ids(r) == ["al-0", "al-1", "al-2"]  # nothing lost, order kept
    (dlq_id, f), = r.xrange(DLQ)
    assert f[b"dlq_reason"].decode() == "HANDLER_FAILED after 3 deliveries: ValueError: cannot digest this"
    assert f[b"dlq_source_stream"] == IN.encode() and f[b"dlq_source_id"] == ids[1].encode()
    assert f[b"dlq_group"] == b"g" and f[b"dlq_consumer"] == b"c1" and f[b"dlq_deliveries"] == b"3"
    original = fields_of(poison)
    assert f[b"type"] == b"alert" and f[b"v"] == str(original["v"]).encode() and f[b"data"] == original["data"]
    assert c.stats.dead_lettered == 1 and c.stats.failed == 3
    assert r.xpending(IN, "g")["pending"] == 0


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"type": "alert", "v": 99, "data": b'{"type":"alert","v":99,"alert_id":"a"}'}, "UNKNOWN_VERSION"),
        ({"type": "nope", "v": 1, "data": b'{"type":"nope","v":1}'}, "UNKNOWN_TYPE"),
        ({"type": "alert", "v": 1, "data": b"\xff\x00 not json"}, "INVALID_PAYLOAD"),
        ({"type": "alert", "v": 1, "data": b'{"type":"alert","v":1,"alert_id":7}'}, "INVALID_PAYLOAD"),
        ({"type": "alert", "v": 1}, "SCHEMA_ERROR"),
    ],
    ids=["unknown-version", "unknown-type", "undecodable", "invalid-field", "no-data"],
)
def test_undecodable_messages_go_to_dlq_at_once(real_redis: redis.Redis, fields: dict, code: str) -> None:
    r = real_redis
    handled: list[str] = []
    c = Consumer(r, "g", [IN], lambda m, d: handled.append(m.alert_id) or echo()(m, d), name="c1", block_ms=50)
    c.ensure_groups()
    bad_id = r.xadd(IN, fields).decode()
    Bus(r).publish(IN, alert("after"))
    c.run(install_signals=False, until_idle=True)

    assert handled == ["al-after"] and out_ids(r) == ["al-after"]  # the consumer kept going
    (_, f), = r.xrange(DLQ)
    assert f[b"dlq_reason"].decode().startswith(f"{code}: ")
    assert f[b"dlq_deliveries"] == b"1" and f[b"dlq_source_id"].decode() == bad_id  # at once, first delivery
    for k, v in fields.items():  # the original fields, unchanged
        assert f[k.encode()] == (v if isinstance(v, bytes) else str(v).encode())
    assert c.stats.failed == 0 and c.stats.dead_lettered == 1
    assert r.xpending(IN, "g")["pending"] == 0


def test_group_deleted_under_a_running_consumer_is_recreated(real_redis: redis.Redis) -> None:
    r = real_redis
    c = Consumer(r, "g", [IN], echo(), name="c1", block_ms=20)
    c.run(install_signals=False, until_idle=True)
    r.delete(IN)  # an operator deleted the stream (and with it the group)
    assert c.step(block=False) == 0  # NOGROUP: re-created, no crash
    Bus(r).publish(IN, alert(1))
    c.run(install_signals=False, until_idle=True)
    assert out_ids(r) == ["al-1"]


# -- graceful stop and heartbeat ---------------------------------------------------------------

def test_sigterm_finishes_the_batch_in_hand_and_exits_0_with_nothing_pending(
        redis_url: str, real_redis: redis.Redis, procs: list[subprocess.Popen]) -> None:
    r = real_redis
    Consumer(r, "g", [IN], echo()).ensure_groups()
    Bus(r).publish_many([(IN, alert(i)) for i in range(5)])
    p = spawn(procs, redis_url, "worker", "--slow", "0.2")
    until(lambda: r.llen("test:inhand") >= 1)  # it is inside a handler with the batch of 5 in hand
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=20) == 0
    assert r.llen("test:inhand") == 5  # it did not stop mid-batch ...
    assert sorted(out_ids(r)) == [f"al-{i}" for i in range(5)]  # ... and committed all of it
    assert r.xpending(IN, "g")["pending"] == 0
    assert not r.exists(f"{HEARTBEAT_PREFIX}:g:worker")  # removed on a clean exit


def test_risk_service_sigterm_exits_0_with_nothing_pending_and_heartbeat_has_ttl(
        redis_url: str, real_redis: redis.Redis, tmp_path: Path) -> None:
    from avwap.commands.demo import demo_candidate
    from shared.streams import CANDIDATES

    r = real_redis
    env = {**os.environ, "REDIS_URL": redis_url, "CONSUMER_NAME": "risk-t", "BUS_BLOCK_MS": "100",
           "HEARTBEAT_TTL_S": "7", "PYTHONPATH": str(ROOT), "ARTIFACTS_DIR": str(tmp_path / "art"),
           "LEDGER_DIR": str(tmp_path / "ledger")}
    p = subprocess.Popen([sys.executable, "-m", "services.risk"], cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        hb = f"{HEARTBEAT_PREFIX}:risk:risk-t"
        until(lambda: r.exists(hb))
        assert 0 < r.ttl(hb) <= 7  # a heartbeat with a TTL while running
        assert json.loads(r.get(hb))["pid"] == p.pid
        Bus(r).publish_many([(CANDIDATES, demo_candidate()) for _ in range(20)])
        until(lambda: r.xinfo_groups(CANDIDATES)[0]["entries-read"] == 20)
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert r.xpending(CANDIDATES, "risk")["pending"] == 0
    assert not r.exists(hb)


def test_heartbeat_key_has_ttl_and_is_refreshed(fake_redis: redis.Redis) -> None:
    c = Consumer(fake_redis, "g", [IN], echo(), name="c1", heartbeat_ttl_s=9, block_ms=10)
    c.step(block=False)
    key = f"{HEARTBEAT_PREFIX}:g:c1"
    assert 0 < fake_redis.ttl(key) <= 9
    assert json.loads(fake_redis.get(key))["pid"] == os.getpid()
    fake_redis.delete(key)
    c.step(block=False)
    assert not fake_redis.exists(key)  # not rewritten on every step (rate-limited to TTL/3) ...
    c.heartbeat(force=True)
    assert fake_redis.exists(key)  # ... but whenever it is due


# -- no busy-spin --------------------------------------------------------------------------------

def _idle_reads(r: redis.Redis, block_ms: int, idle_s: float) -> tuple[int, float]:
    """XREADGROUP calls and CPU seconds of a consumer that sat idle for ``idle_s``."""
    c = Consumer(r, "g", [IN], echo(), name="idle", block_ms=block_ms)
    c.ensure_groups()
    t = threading.Thread(target=c.run, kwargs={"install_signals": False})
    cpu0 = time.process_time()
    t.start()
    time.sleep(idle_s)
    c.request_stop()
    t.join(10)
    assert not t.is_alive()
    return c.stats.reads, time.process_time() - cpu0


def test_no_busy_spin_on_fakeredis(fake_redis: redis.Redis) -> None:
    # fakeredis returns at once from XREADGROUP BLOCK with COUNT: the consumer must back off
    reads, cpu = _idle_reads(fake_redis, block_ms=1000, idle_s=1.0)
    assert reads <= 15, reads  # a spinning loop makes thousands
    assert cpu < 0.5, cpu


def test_no_busy_spin_on_real_redis(real_redis: redis.Redis) -> None:
    reads, cpu = _idle_reads(real_redis, block_ms=200, idle_s=1.0)
    assert reads <= 10, reads  # one blocking read per block_ms (+ the start-up backlog read)
    assert cpu < 0.5, cpu


def test_publish_trims_streams_approximately_to_maxlen(real_redis: redis.Redis) -> None:
    bus = Bus(real_redis, maxlen=1000)
    for start in range(0, 5000, 500):
        bus.publish_many([(IN, alert(i)) for i in range(start, start + 500)])
    n = real_redis.xlen(IN)
    assert 1000 <= n < 1500, n  # MAXLEN ~: whole macro nodes are dropped, never below maxlen
    newest = json.loads(real_redis.xrevrange(IN, count=1)[0][1][b"data"])["alert_id"]
    assert newest == "al-4999"  # the oldest entries go, the newest stay


def test_encoded_entry_is_readable_json(real_redis: redis.Redis) -> None:
    Bus(real_redis).publish(IN, alert(1))
    (_, f), = real_redis.xrange(IN)
    assert f[b"type"] == b"alert" and f[b"data"] == encode(alert(1))
    assert json.loads(f[b"data"])["alert_id"] == "al-1"


@pytest.mark.parametrize("client", ["pooled", "pinned"])
def test_consumer_rides_out_a_redis_restart(tmp_path: Path, client: str) -> None:
    """A lost connection is retried with backoff, never a crash; consuming resumes after the restart, also on
    the client a service consumes with (``pinned_client``: one connection kept, reconnected by redis-py)."""
    from shared.redis_conn import start_redis_server
    from shared.service import pinned_client

    (tmp_path / "redis").mkdir()
    private_redis = start_redis_server(appendonly=True, workdir=str(tmp_path / "redis"))
    url = private_redis.url
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    r = redis.Redis.from_url(url)
    if client == "pinned":
        r = pinned_client(r, threading.Event(), url, "test")
        assert r is not None and r.connection is not None  # one connection, kept
    c = Consumer(r, "g", [IN], echo(), name="c1", block_ms=100)
    c.ensure_groups()
    t = threading.Thread(target=c.run, kwargs={"install_signals": False})
    t.start()
    try:
        Bus(r).publish(IN, alert(1))
        until(lambda: out_ids(r) == ["al-1"])
        private_redis.stop()  # Redis goes away (AOF keeps the streams and the group)
        until(lambda: c.stats.redis_errors >= 1)
        assert t.is_alive()
        restarted = start_redis_server(appendonly=True, port=port, workdir=str(tmp_path / "redis"))
        try:
            r2 = redis.Redis.from_url(url)
            Bus(r2).publish(IN, alert(2))
            until(lambda: out_ids(r2) == ["al-1", "al-2"])
            assert r2.xpending(IN, "g")["pending"] == 0
        finally:
            c.request_stop()
            t.join(15)
            restarted.stop()
    finally:
        c.request_stop()
        t.join(15)
        private_redis.stop()
    assert not t.is_alive()


def test_service_waits_for_redis_instead_of_crashing(tmp_path: Path) -> None:
    """A service started before Redis waits (logging why), then serves; SIGTERM still exits 0."""
    from shared.redis_conn import free_port, start_redis_server

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    log = tmp_path / "risk.log"
    env = {**os.environ, "REDIS_URL": url, "CONSUMER_NAME": "risk-w", "BUS_BLOCK_MS": "100",
           "PYTHONPATH": str(ROOT), "ARTIFACTS_DIR": str(tmp_path / "art"), "LEDGER_DIR": str(tmp_path / "ledger")}
    with open(log, "wb") as out:
        p = subprocess.Popen([sys.executable, "-m", "services.risk"], cwd=ROOT, env=env, stdout=out,
                             stderr=subprocess.STDOUT)
    (tmp_path / "redis").mkdir()
    server = None
    try:
        until(lambda: "waiting for Redis" in log.read_text())
        assert p.poll() is None  # alive, not crash-looping
        server = start_redis_server(port=port, workdir=str(tmp_path / "redis"))
        r = redis.Redis.from_url(url)
        until(lambda: r.exists(f"{HEARTBEAT_PREFIX}:risk:risk-w"))  # it joined its group and runs
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if server is not None:
            server.stop()


def test_service_stopped_while_waiting_for_redis_exits_0(tmp_path: Path) -> None:
    """...and the Redis password in REDIS_URL never reaches the log."""
    from shared.redis_conn import free_port

    log = tmp_path / "risk.log"
    env = {**os.environ, "REDIS_URL": f"redis://avwap:s3cret-pw-42@127.0.0.1:{free_port()}/0", "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as out:
        p = subprocess.Popen([sys.executable, "-m", "services.risk"], cwd=ROOT, env=env, stdout=out,
                             stderr=subprocess.STDOUT)
    try:
        until(lambda: "waiting for Redis" in log.read_text())
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=20) == 0
        text = log.read_text()
        assert "s3cret-pw-42" not in text and "redis://avwap:***@127.0.0.1" in text
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_on_idle_runs_while_every_read_returns_entries(real_redis: redis.Redis) -> None:
    """A consumer that never sees an empty read (a stream it is always behind on) still runs its
    periodic work once per block interval: the executor's trade updates and polls live there."""
    r = real_redis
    idle_calls: list[int] = []

    def slow(msg: Message, d: Delivery) -> list[Emit]:
        time.sleep(0.01)
        return []

    c = Consumer(r, "g", [IN], slow, name="busy", block_ms=50, count=1,
                 on_idle=lambda: idle_calls.append(int(r.xlen(IN))) or [(OUT, alert("idle"))])
    c.ensure_groups()
    Bus(r).publish_many([(IN, alert(i)) for i in range(40)])
    reads = 0
    while c.step(block=False):
        reads += 1
    assert reads == 40 and c.stats.empty_reads == 1  # busy throughout: one empty read, at the very end
    assert len(idle_calls) >= 3  # ~400 ms of handling at one call per 50 ms; before: only the final empty read
    assert out_ids(r).count("al-idle") == len(idle_calls)  # what on_idle returns is published each time


# -- exclusive groups ------------------------------------------------------------------------

def test_an_exclusive_group_has_one_reader_and_a_new_holder_takes_the_pending_entries_first(
        real_redis: redis.Redis) -> None:
    """Only the lease holder reads; when it dies holding entries, the standby waits for the lease to run
    out, claims every pending entry (whatever its idle time) and handles them before the newer ones."""
    from shared.lease import holder_of, lease_key

    r = real_redis
    a = Consumer(r, "g", [IN], echo(), name="a", claim_idle_ms=300, block_ms=20, exclusive=True)
    b = Consumer(r, "g", [IN], echo(), name="b", claim_idle_ms=300, block_ms=20, exclusive=True)
    a.ensure_groups()
    bus = Bus(r)
    bus.publish(IN, alert("first"))
    assert a.step(block=False) == 1 and holder_of(r, lease_key("g")) == "a"
    bus.publish(IN, alert("held"))
    r.xreadgroup("g", "a", {IN: ">"}, count=1)  # a takes the entry and dies with it, still holding the lease
    bus.publish(IN, alert("later"))
    assert b.step(block=False) == 0 and out_ids(r) == ["al-first"]  # standing by
    until(lambda: holder_of(r, lease_key("g")) is None)  # a's lease runs out
    b.run(install_signals=False, until_idle=True)
    assert out_ids(r) == ["al-first", "al-held", "al-later"] and b.stats.claimed == 1
    assert r.xpending(IN, "g")["pending"] == 0
    assert holder_of(r, lease_key("g")) is None  # a clean stop releases the lease at once


def test_an_alert_never_carries_a_secret_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``make_alert`` redacts its title, text and every field with the secrets read once from the environment:
    secret-named variables and the password of a URL."""
    from shared.alerts import make_alert

    monkeypatch.setenv("ALPACA_API_SECRET", "sk-live-0123456789")
    monkeypatch.setenv("REDIS_URL", "redis://avwap:pw-for-redis@127.0.0.1:6379/0")
    a = make_alert("executor", "broker_error", "refused with sk-live-0123456789", text="auth pw-for-redis failed",
                   fields={"detail": "key=sk-live-0123456789", "other": "plain"})
    assert a.title == "refused with ***" and a.text == "auth *** failed"
    assert a.fields == {"detail": "key=***", "other": "plain"}
    monkeypatch.delenv("ALPACA_API_SECRET")
    assert make_alert("executor", "k", "sk-live-0123456789").title == "sk-live-0123456789"  # read at each alert
