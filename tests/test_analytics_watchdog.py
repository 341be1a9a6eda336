"""Heartbeat watchdog and system-alive summary: the pure core, then the notifier shell on a real Redis."""

from __future__ import annotations

import redis

from services.analytics.notifier import SPEC, WATCH, check_heartbeats, live_heartbeats
from services.analytics.watchdog import ServiceHealth, WatchState, observe, summary, watched
from shared.bus import HEARTBEAT_PREFIX, Bus
from shared.schemas import Alert, SessionEvent, decode
from shared.service import make_consumer, make_context
from shared.settings import load_settings
from shared.streams import ALERTS, CLOCK, DLQ
from standins.slack_api import SlackStandIn

S = 1_000_000_000
T0 = 1_700_000_000 * S
SERVICES = ["analytics", "executor", "risk"]


def test_missing_after_the_grace_then_recovered_once() -> None:
    st = WatchState()
    st, out = observe(st, {"analytics": 1, "executor": 2, "risk": 1}, SERVICES, T0, 90)
    assert out == [] and st.services["executor"].consumers == 2
    st, out = observe(st, {"analytics": 1, "risk": 1}, SERVICES, T0 + 10 * S, 90)  # executor's key expired
    assert out == [] and st.services["executor"].status == "missing"
    st, out = observe(st, {"analytics": 1, "risk": 1}, SERVICES, T0 + 99 * S, 90)  # 89 s: still within the grace
    assert out == []
    st, out = observe(st, {"analytics": 1, "risk": 1}, SERVICES, T0 + 100 * S, 90)
    (miss,) = out
    assert (miss.kind, miss.severity, miss.runbook, miss.fields["service"]) == (
        "heartbeat_missing", "critical", "service-heartbeat-missing", "executor")
    assert miss.fields["last_consumers"] == "2"
    st2, again = observe(st, {"analytics": 1, "risk": 1}, SERVICES, T0 + 500 * S, 90)
    assert again == []  # one alert per outage
    st3, out = observe(st2, {"analytics": 1, "executor": 1, "risk": 1}, SERVICES, T0 + 600 * S, 90)
    (back,) = out
    assert (back.kind, back.severity, back.fields["service"]) == ("heartbeat_recovered", "info", "executor")
    # the same transition computed again (a replica) gives the same alert ids
    assert observe(st, {"analytics": 1, "risk": 1}, SERVICES, T0 + 100 * S, 90)[1] == []  # already alerted in st
    before = WatchState(services={**st.services, "executor": ServiceHealth(status="missing", since_ns=T0 + 10 * S,
                                                                             consumers=2)})
    assert observe(before, {"analytics": 1, "risk": 1}, SERVICES, T0 + 100 * S, 90)[1][0].alert_id == miss.alert_id
    assert observe(st3, {}, [], T0, 90)[0].services == {}  # no longer watched: forgotten


def test_a_service_never_seen_is_missing_and_a_blip_within_the_grace_is_not() -> None:
    st, _ = observe(WatchState(), {}, ["exits"], T0, 60)
    st, out = observe(st, {}, ["exits"], T0 + 60 * S, 60)
    assert [a.fields["service"] for a in out] == ["exits"] and out[0].fields["last_consumers"] == "0"
    st, _ = observe(WatchState(), {"risk": 1}, ["risk"], T0, 60)
    st, _ = observe(st, {}, ["risk"], T0 + 30 * S, 60)
    st, out = observe(st, {"risk": 1}, ["risk"], T0 + 40 * S, 60)
    assert out == [] and st.services["risk"].status == "up"  # restarted inside the grace: no noise


def test_summary_lists_every_service_and_warns_when_one_is_down() -> None:
    ok = summary("2018-10-01", T0, {"analytics": 1, "executor": 1, "risk": 2}, SERVICES, dlq=0, backlog=0)
    assert (ok.kind, ok.severity, ok.title, ok.runbook) == ("heartbeat", "info", "System alive 2018-10-01", "")
    assert ok.fields["risk"] == "up (2 consumers)" and ok.fields["analytics"] == "up (1 consumer)"
    down = summary("2018-10-01", T0, {"analytics": 1}, SERVICES, dlq=3, backlog=5)
    assert down.severity == "warning" and "2 service(s) down (executor, risk)" in down.title
    assert down.fields["executor"] == "NO HEARTBEAT" and down.fields["dlq"] == "3" and down.fields["slack_backlog"] == "5"
    assert down.runbook == "service-heartbeat-missing" and down.alert_id == ok.alert_id  # one summary per date
    dlq_only = summary("2018-10-01", T0, {"analytics": 1, "executor": 1, "risk": 1}, SERVICES, dlq=2, backlog=0)
    assert dlq_only.severity == "warning" and dlq_only.runbook == "dead-letter-queue"
    assert watched(" risk, exits ,,risk") == ["exits", "risk"]


def _alerts(r: redis.Redis) -> list[Alert]:
    return [m for _, f in r.xrange(ALERTS) if isinstance(m := decode(f[b"data"]), Alert)]


def test_check_heartbeats_raises_each_transition_once_across_replicas(redis_url: str, real_redis: redis.Redis) -> None:
    settings = load_settings(redis_url=redis_url, heartbeat_watch_services="risk,exits", heartbeat_grace_s=30)
    one = make_context("notifier", settings, redis.Redis.from_url(redis_url))
    two = make_context("notifier", settings, redis.Redis.from_url(redis_url))
    real_redis.set(f"{HEARTBEAT_PREFIX}:risk:r-1", "{}", ex=60)
    real_redis.set(f"{HEARTBEAT_PREFIX}:exits:e-1", "{}", ex=60)
    real_redis.set(f"{HEARTBEAT_PREFIX}:exits:e-2", "{}", ex=60)
    assert live_heartbeats(real_redis) == {"risk": 1, "exits": 2}
    assert check_heartbeats(one, T0) == [] and check_heartbeats(two, T0 + S) == []
    real_redis.delete(f"{HEARTBEAT_PREFIX}:exits:e-1", f"{HEARTBEAT_PREFIX}:exits:e-2")  # exits died
    check_heartbeats(one, T0 + 2 * S)
    got = check_heartbeats(one, T0 + 40 * S) + check_heartbeats(two, T0 + 41 * S)
    assert [a.kind for a in got] == ["heartbeat_missing"]
    assert [(a.kind, a.fields["service"]) for a in _alerts(real_redis)] == [("heartbeat_missing", "exits")]
    real_redis.set(f"{HEARTBEAT_PREFIX}:exits:e-3", "{}", ex=60)
    check_heartbeats(two, T0 + 50 * S)
    assert [a.kind for a in _alerts(real_redis)] == ["heartbeat_missing", "heartbeat_recovered"]
    assert real_redis.get(WATCH)


def test_pre_market_summary_is_posted_to_slack_once(redis_url: str, real_redis: redis.Redis) -> None:
    with SlackStandIn(token="xoxb-t") as slack:
        settings = load_settings(redis_url=redis_url, slack_bot_token="xoxb-t", slack_base_url=slack.base_url,
                                 slack_rate_per_min=6000, bus_block_ms=50, heartbeat_watch_services="risk,exits")
        real_redis.set(f"{HEARTBEAT_PREFIX}:risk:r-1", "{}", ex=60)
        real_redis.xadd(DLQ, {"type": "x", "v": "1", "data": "{}"})
        c = make_consumer(SPEC, make_context("notifier", settings, real_redis), consumer_name="n1")
        ev = SessionEvent(trade_date="2018-10-01", phase="PRE_MARKET", ts=T0)
        Bus(real_redis).publish_many([(CLOCK, ev), (CLOCK, SessionEvent(trade_date="2018-10-01", phase="OPEN", ts=T0 + S))])
        c.run(install_signals=False, until_idle=True)
        Bus(real_redis).publish(CLOCK, ev)  # the clock event again: the same summary id, posted once
        c.run(install_signals=False, until_idle=True)
        summaries = [m for m in slack.messages if "System check 2018-10-01" in m["text"]]
        assert len(summaries) == 1
        fields = {f["text"] for b in summaries[0]["blocks"] if "fields" in b for f in b["fields"]}
        assert {"*risk*\nup (1 consumer)", "*exits*\nNO HEARTBEAT", "*dlq*\n1"} <= fields
        assert "docs/runbook.md#service-heartbeat-missing" in summaries[0]["blocks"][-1]["elements"][0]["text"]
