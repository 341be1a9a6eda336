"""The operator CLI on a real Redis: streams, dlq list|show|requeue, kill-switch, health, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from shared.bus import Bus, Delivery, fields_of
from shared.consumer import Consumer
from shared.redis_conn import free_port
from shared.schemas import Alert, Message
from shared.streams import ALERTS, CANDIDATES, DLQ, KILL_SWITCH_KEY

ROOT = Path(__file__).resolve().parent.parent


def avwap(*args: str, url: str | None, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the real `avwap` command line (``python -m avwap``) against ``url``."""
    e = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "KILL_SWITCH")}
    e.update(PYTHONPATH=str(ROOT), **env)
    if url is not None:
        e["REDIS_URL"] = url
    return subprocess.run([sys.executable, "-m", "avwap", *args], cwd=ROOT, env=e, capture_output=True,
                          text=True, timeout=60)


def assert_one_line_error(res: subprocess.CompletedProcess[str], contains: str) -> None:
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("avwap: error: ") and contains in lines[0], res.stderr
    assert res.stdout == ""


def alert(i: int | str) -> Alert:
    return Alert(alert_id=f"al-{i}", severity="info", kind="test", source="t", title=f"m{i}")


def dead_letter_one(r: redis.Redis, msg: Message, stream: str = ALERTS) -> tuple[str, str]:
    """Publish ``msg`` and let a consumer that always fails dead-letter it; (source id, DLQ id)."""
    def boom(m: Message, d: Delivery) -> None:
        raise RuntimeError("notifier down")

    c = Consumer(r, "notifier", [stream], boom, name="n1", max_deliveries=1, block_ms=20)
    c.ensure_groups()
    src = Bus(r).publish(stream, msg)
    c.run(install_signals=False, until_idle=True)
    (dlq_id, _), = r.xrange(DLQ)
    return src, dlq_id.decode()


def test_streams_shows_length_groups_pending_consumers_last_id_and_dlq(redis_url: str, real_redis: redis.Redis) -> None:
    r = real_redis
    Consumer(r, "risk", [CANDIDATES], lambda m, d: None).ensure_groups()
    ids = Bus(r).publish_many([(CANDIDATES, alert(i)) for i in range(3)])
    r.xreadgroup("risk", "risk-0", {CANDIDATES: ">"}, count=2)  # 2 pending, 1 lag
    r.xadd(DLQ, {"dlq_reason": "x"})
    r.set("avwap:hb:risk:risk-0", "{}", ex=30)

    res = avwap("streams", url=redis_url)
    assert res.returncode == 0, res.stderr
    row = next(ln for ln in res.stdout.splitlines() if ln.startswith(CANDIDATES))
    assert row.split()[1] == "3" and row.split()[2] == ids[-1] and "risk(2/1/1)" in row
    assert "DLQ size: 1" in res.stdout and "risk:risk-0" in res.stdout

    data = json.loads(avwap("streams", "--json", url=redis_url).stdout)
    cand = next(s for s in data["streams"] if s["stream"] == CANDIDATES)
    assert cand["length"] == 3 and cand["last_id"] == ids[-1]
    assert cand["groups"] == [{"group": "risk", "pending": 2, "consumers": 1, "lag": 1, "last_delivered": ids[1]}]
    assert data["heartbeats"] == ["avwap:hb:risk:risk-0"]


def test_dlq_list_show_and_requeue_puts_the_original_back(redis_url: str, real_redis: redis.Redis) -> None:
    r = real_redis
    msg = alert("lost")
    src_id, dlq_id = dead_letter_one(r, msg)

    listed = avwap("dlq", "list", url=redis_url)
    assert listed.returncode == 0, listed.stderr
    assert dlq_id in listed.stdout and ALERTS in listed.stdout and "group=notifier" in listed.stdout
    assert "deliveries=1" in listed.stdout and "notifier down" in listed.stdout

    shown = avwap("dlq", "show", dlq_id, url=redis_url)
    assert shown.returncode == 0, shown.stderr
    f = json.loads(shown.stdout)
    assert f["dlq_source_stream"] == ALERTS and f["dlq_source_id"] == src_id and f["dlq_group"] == "notifier"
    assert f["dlq_reason"] == "HANDLER_FAILED after 1 deliveries: RuntimeError: notifier down"
    assert f["data"] == fields_of(msg)["data"].decode()  # type: ignore[union-attr]

    res = avwap("dlq", "requeue", dlq_id, url=redis_url)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"requeued {dlq_id} to {ALERTS} as ")
    assert r.xlen(DLQ) == 0  # removed from the DLQ
    new_id, fields = r.xrange(ALERTS)[-1]
    assert res.stdout.split()[-1] == new_id.decode() and new_id.decode() != src_id
    original = fields_of(msg)
    assert fields == {b"type": b"alert", b"v": str(original["v"]).encode(), b"data": original["data"]}

    got: list[Message] = []  # the fixed consumer now handles it
    Consumer(r, "notifier", [ALERTS], lambda m, d: got.append(m), name="n2", block_ms=20).run(
        install_signals=False, until_idle=True)
    assert got == [msg] and r.xlen(DLQ) == 0

    assert "DLQ is empty" in avwap("dlq", "list", url=redis_url).stdout


def test_requeue_refuses_an_entry_that_still_does_not_decode(redis_url: str, real_redis: redis.Redis) -> None:
    r = real_redis
    c = Consumer(r, "notifier", [ALERTS], lambda m, d: None, name="n1", block_ms=20)
    c.ensure_groups()
    r.xadd(ALERTS, {"type": "alert", "v": 99, "data": b'{"type":"alert","v":99}'})
    c.run(install_signals=False, until_idle=True)
    (dlq_id, _), = r.xrange(DLQ)
    res = avwap("dlq", "requeue", dlq_id.decode(), url=redis_url)
    assert_one_line_error(res, "still does not decode (UNKNOWN_VERSION")
    assert r.xlen(DLQ) == 1 and r.xlen(ALERTS) == 1  # nothing moved


@pytest.mark.parametrize(("args", "contains"), [
    (("dlq", "show", "1-0"), "no DLQ entry 1-0"),
    (("dlq", "requeue", "1-0"), "no DLQ entry 1-0"),
    (("dlq", "show", "12-abc"), "not a stream entry id: '12-abc'"),
])
def test_unknown_or_malformed_dlq_id_is_one_clear_line(redis_url: str, args: tuple[str, ...], contains: str) -> None:
    assert_one_line_error(avwap(*args, url=redis_url), contains)


@pytest.mark.parametrize("args", [("streams",), ("dlq", "list"), ("kill-switch", "status"), ("health", "risk")])
def test_redis_unreachable_is_one_clear_line(args: tuple[str, ...]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    assert_one_line_error(avwap(*args, url=url), f"cannot reach Redis at {url}")


def test_redis_password_never_printed() -> None:
    port = free_port()
    res = avwap("streams", url=f"redis://:hunter2-secret@127.0.0.1:{port}/0")
    assert_one_line_error(res, f"cannot reach Redis at redis://:***@127.0.0.1:{port}/0")
    assert "hunter2-secret" not in res.stderr + res.stdout


def test_redis_url_unset_is_one_clear_line() -> None:
    assert_one_line_error(avwap("streams", url=None), "REDIS_URL is not set")


def test_kill_switch_on_off_status(redis_url: str, real_redis: redis.Redis) -> None:
    r = real_redis
    assert avwap("kill-switch", "status", url=redis_url).stdout.startswith("kill switch: OFF")
    on = avwap("kill-switch", "on", "--reason", "broker outage", url=redis_url)
    assert on.returncode == 0 and "ON" in on.stdout
    state = json.loads(r.get(KILL_SWITCH_KEY))
    assert state["on"] is True and state["reason"] == "broker outage"
    assert avwap("kill-switch", "status", url=redis_url).stdout.startswith("kill switch: ON (redis=on, env=off)")
    off = avwap("kill-switch", "off", url=redis_url)
    assert off.returncode == 0 and json.loads(r.get(KILL_SWITCH_KEY))["on"] is False
    assert avwap("kill-switch", "status", url=redis_url).stdout.startswith("kill switch: OFF (redis=off, env=off)")
    # the env switch alone also blocks entries, and status says so
    env_on = avwap("kill-switch", "status", url=redis_url, KILL_SWITCH="1")
    assert env_on.stdout.startswith("kill switch: ON (redis=off, env=on)")
    r.set(KILL_SWITCH_KEY, b"{garbage")  # unreadable blocks entries: status must not say OFF
    assert avwap("kill-switch", "status", url=redis_url).stdout.startswith("kill switch: ON (redis=unreadable")


def test_health_follows_the_heartbeat(redis_url: str, real_redis: redis.Redis) -> None:
    r = real_redis
    assert_one_line_error(avwap("health", "risk", url=redis_url), "risk: no live heartbeat")
    c = Consumer(r, "risk", [CANDIDATES], lambda m, d: None, name="risk-0", heartbeat_ttl_s=30, block_ms=10)
    c.step(block=False)  # a running consumer writes its heartbeat
    res = avwap("health", "risk", url=redis_url)
    assert res.returncode == 0 and res.stdout.strip() == "risk: 1 live consumer(s)"
    assert avwap("health", "exits", url=redis_url).returncode != 0  # another service's is not enough
    c.request_stop()
    c.run(install_signals=False)  # a clean stop removes it
    assert_one_line_error(avwap("health", "risk", url=redis_url), "risk: no live heartbeat")
