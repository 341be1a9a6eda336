"""Trading states (one key, fail closed), transitions on avwap:control, the audit chain, and the CLI."""

from __future__ import annotations

import json

import pytest
import redis

from shared import audit
from shared.breakers import BreakerBook, Trip, encode_book
from shared.controls import (
    Refused,
    entry_codes,
    kill_switch_value,
    orders_allowed,
    read_kill_switch,
    read_state,
    rearm_breaker,
    request_flatten,
    transition,
)
from shared.schemas import BreakerRearm, FlattenRequest, TradingStateChange, decode
from shared.streams import AUDIT_KEY, BREAKERS_KEY, CONTROL, LEGACY_KILL_SWITCH_KEY, TRADING_STATE_KEY
from tests.test_cli_ops import assert_one_line_error, avwap


def control_messages(r: redis.Redis) -> list:
    return [decode(f[b"data"]) for _, f in r.xrange(CONTROL)]


@pytest.mark.parametrize(("raw", "state"), [
    (None, "ACTIVE"),
    (b'{"state":"HALTED","reason":"x"}', "HALTED"),
    (b'{"state":"REDUCING"}', "REDUCING"),
    (b'{"state":"PAUSED"}', "UNREADABLE"),  # closed type: an unknown state does not decode
    (kill_switch_value(True, "old", 1.0).encode(), "REDUCING"),  # a value written before trading states
    (kill_switch_value(False, "old", 1.0).encode(), "ACTIVE"),
    (b"1", "REDUCING"), (b"0", "ACTIVE"), (b"{garbage", "UNREADABLE"), (b"[]", "UNREADABLE"),
])
def test_the_key_reads_as_a_state_and_fails_closed(fake_redis: redis.Redis, raw: bytes | None, state: str) -> None:
    if raw is not None:
        fake_redis.set(TRADING_STATE_KEY, raw)
    view = read_state(fake_redis)
    assert view.state == state
    # entries: only ACTIVE lets them through; unreadable blocks them with its own code
    assert entry_codes(view) == {"ACTIVE": [], "REDUCING": ["KILL_SWITCH_ON"], "HALTED": ["TRADING_HALTED"],
                                 "UNREADABLE": ["KILL_SWITCH_UNREADABLE"]}[state]
    # exits and stop replaces: refused only when HALTED; an unreadable key never freezes a stop
    assert orders_allowed(view) is (state != "HALTED")


def test_wrong_type_env_switch_and_the_old_key(fake_redis: redis.Redis) -> None:
    fake_redis.hset(TRADING_STATE_KEY, "state", "ACTIVE")
    assert read_state(fake_redis).state == "UNREADABLE" and read_kill_switch(fake_redis) == "unreadable"
    fake_redis.delete(TRADING_STATE_KEY)
    assert read_state(fake_redis, env_kill_switch=True).state == "REDUCING"
    # a deployment upgraded with the old kill switch ON stays blocked (never fail open on a rename)
    fake_redis.set(LEGACY_KILL_SWITCH_KEY, kill_switch_value(True, "old", 1.0))
    assert read_state(fake_redis).state == "REDUCING"
    fake_redis.set(LEGACY_KILL_SWITCH_KEY, b"junk")
    assert read_state(fake_redis).state == "UNREADABLE"
    # the first transition writes the new key and drops the old one
    transition(fake_redis, "ACTIVE", who="t", source="cli", reason="upgrade", ts=5)
    assert not fake_redis.exists(LEGACY_KILL_SWITCH_KEY) and read_state(fake_redis).state == "ACTIVE"


def test_transition_message_audit_and_refusals(real_redis: redis.Redis) -> None:
    r = real_redis
    ch = transition(r, "HALTED", who="cli:alice", source="cli", reason="broker outage", ts=10)
    assert (ch.state, ch.previous, ch.who, ch.reason, ch.ts) == ("HALTED", "ACTIVE", "cli:alice", "broker outage", 10)
    stored = json.loads(r.get(TRADING_STATE_KEY))
    assert stored["state"] == "HALTED" and stored["on"] is True and stored["who"] == "cli:alice"
    assert control_messages(r) == [ch]
    with pytest.raises(Refused):
        transition(r, "ACTIVE", who="cli:alice", source="cli", reason="  ", ts=11)
    # a breaker trip never lowers HALTED to REDUCING
    trip = transition(r, "REDUCING", who="breaker:drawdown", source="breaker", reason="dd", ts=12,
                      breaker="drawdown", figures={"drawdown_pct": 9.5}, never_lower=True)
    assert trip.state == "HALTED" and trip.breaker == "drawdown"
    # resume is refused while a breaker is tripped (and when the book is unreadable)
    r.set(BREAKERS_KEY, encode_book(BreakerBook(tripped={"drawdown": Trip(breaker="drawdown", ts=12, reason="dd")})))
    with pytest.raises(Refused, match="drawdown"):
        transition(r, "ACTIVE", who="cli:alice", source="cli", reason="go", ts=13)
    r.set(BREAKERS_KEY, b"{bad")
    with pytest.raises(Refused, match="book_unreadable"):
        transition(r, "ACTIVE", who="cli:alice", source="cli", reason="go", ts=13)
    r.set(BREAKERS_KEY, encode_book(BreakerBook(equity=90.0, hwm=100.0,
                                                tripped={"drawdown": Trip(breaker="drawdown", ts=12, reason="dd")})))
    with pytest.raises(Refused, match="not tripped"):
        rearm_breaker(r, "daily_loss", who="cli:alice", source="cli", reason="x", ts=14)
    ra = rearm_breaker(r, "drawdown", who="cli:alice", source="cli", reason="reviewed", ts=14)
    assert read_state(r).state == "HALTED"  # re-arming does not resume
    ok = transition(r, "ACTIVE", who="cli:alice", source="cli", reason="reviewed", ts=15)
    assert ok.state == "ACTIVE"
    msgs = control_messages(r)
    assert [type(m) for m in msgs] == [TradingStateChange, TradingStateChange, BreakerRearm, TradingStateChange]
    assert msgs[2] == ra
    kinds = [json.loads(x)["kind"] for x in r.lrange(AUDIT_KEY, 0, -1)]
    assert kinds == ["state_change", "breaker_trip", "breaker_rearm", "state_change"]
    assert audit.verify(audit.read_all(r)).ok


def test_flatten_request_sets_reducing_in_the_same_transaction(real_redis: redis.Redis) -> None:
    r = real_redis
    transition(r, "HALTED", who="cli:a", source="cli", reason="x", ts=1)
    ch, req = request_flatten(r, ["aapl", " msft", "AAPL"], who="slack:U1", source="slack", reason="gap down", ts=2)
    assert ch.state == "REDUCING" and req.symbols == ["AAPL", "MSFT"] and not req.all_positions
    assert [type(m) for m in control_messages(r)] == [TradingStateChange, TradingStateChange, FlattenRequest]
    _, every = request_flatten(r, [], who="cli:a", source="cli", reason="eod", ts=3)
    assert every.all_positions and every.symbols == []
    recs = [json.loads(x) for x in audit.read_all(r)]
    assert [x["kind"] for x in recs] == ["state_change", "state_change", "flatten", "state_change", "flatten"]
    assert recs[2]["detail"]["request_id"] == req.request_id and audit.verify(audit.read_all(r)).ok


def test_audit_verify_names_the_first_broken_record(real_redis: redis.Redis, tmp_path) -> None:
    r = real_redis
    for i in range(5):
        audit.append(r, "command", f"cli:u{i}", f"/avwap status {i}", ts=100 + i, detail={"i": str(i)})
    lines = audit.read_all(r)
    assert audit.verify(lines) == audit.Verdict(ok=True, records=5)
    tampered = json.loads(lines[2])
    tampered["actor"] = "cli:mallory"
    r.lset(AUDIT_KEY, 2, json.dumps(tampered, sort_keys=True, separators=(",", ":")))
    v = audit.verify(audit.read_all(r))
    assert not v.ok and v.first_bad == 2 and "hash does not match" in v.why
    # recomputing the tampered record's own hash still breaks the chain at the next record
    body = {k: v for k, v in tampered.items() if k != "hash"}
    rec = audit.AuditRecord(**body)
    r.lset(AUDIT_KEY, 2, audit.line_of(audit.AuditRecord(**{**body, "hash": audit.record_hash(rec)})))
    v = audit.verify(audit.read_all(r))
    assert not v.ok and v.first_bad == 3 and "does not point" in v.why
    # removing a record breaks it too
    r.lset(AUDIT_KEY, 2, lines[2])
    r.lrem(AUDIT_KEY, 1, lines[1])
    assert audit.verify(audit.read_all(r)).first_bad == 1
    assert audit.verify([]) == audit.Verdict(ok=True, records=0)


def test_cli_state_flatten_breakers_and_audit_through_redis(redis_url: str, real_redis: redis.Redis, tmp_path) -> None:
    r = real_redis
    assert avwap("state", "show", url=redis_url).stdout.startswith("trading state: ACTIVE")
    out = avwap("state", "halt", "--reason", "news", url=redis_url)
    assert out.returncode == 0 and out.stdout.startswith("trading state: HALTED (was ACTIVE) by cli:")
    assert avwap("kill-switch", "status", url=redis_url).stdout.startswith("kill switch: ON (redis=on, env=off)")
    assert avwap("state", "reduce", "--reason", "calmer", url=redis_url).stdout.startswith("trading state: REDUCING")
    fl = avwap("flatten", "AAPL", "--reason", "earnings", url=redis_url)
    assert fl.returncode == 0 and "flatten requested: AAPL" in fl.stdout
    assert isinstance(control_messages(r)[-1], FlattenRequest)
    no_reason = avwap("state", "resume", url=redis_url)  # a reason is required (a usage error)
    assert no_reason.returncode == 2 and "Missing option '--reason'" in no_reason.stderr
    r.set(BREAKERS_KEY, encode_book(BreakerBook(tripped={"daily_loss": Trip(breaker="daily_loss", ts=1, reason="lost 3%")})))
    assert_one_line_error(avwap("state", "resume", "--reason", "go", url=redis_url), "refused: breaker(s) tripped: daily_loss")
    st = avwap("breakers", "status", url=redis_url)
    assert "TRIPPED daily_loss" in st.stdout and "lost 3%" in st.stdout
    assert_one_line_error(avwap("breakers", "rearm", "bogus", "--reason", "x", url=redis_url), "unknown breaker")
    assert avwap("breakers", "rearm", "daily_loss", "--reason", "reviewed", url=redis_url).returncode == 0
    assert avwap("state", "resume", "--reason", "reviewed", url=redis_url).stdout.startswith("trading state: ACTIVE")
    ok = avwap("audit", "verify", url=redis_url)
    assert ok.returncode == 0 and ok.stdout.startswith("audit chain OK: 6 records"), ok.stdout
    export = tmp_path / "audit.jsonl"
    assert avwap("audit", "export", str(export), url=redis_url).returncode == 0
    lines = export.read_bytes().splitlines()
    doc = json.loads(lines[1])
    doc["detail"]["reason"] = "nothing to see"
    lines[1] = json.dumps(doc).encode()
    export.write_bytes(b"\n".join(lines) + b"\n")
    assert_one_line_error(avwap("audit", "verify", "--file", str(export), url=redis_url), "broken at record 1")


def test_risk_status_on_an_empty_system_tells_the_truth(redis_url: str) -> None:
    res = avwap("risk", "status", url=redis_url)
    assert res.returncode == 0, res.stderr
    line = next(x for x in res.stdout.splitlines() if x.startswith("every_entry_blocked_by"))
    assert line.split(None, 1)[1] == "SESSION_NOT_STARTED, SNAPSHOT_MISSING"
    assert "{" not in res.stdout and "[" not in res.stdout  # no Python dicts or lists
    info = json.loads(avwap("risk", "status", "--json", url=redis_url).stdout)
    assert info["every_entry_blocked_by"] == ["SESSION_NOT_STARTED", "SNAPSHOT_MISSING"] and info["trading_state"] == "ACTIVE"
