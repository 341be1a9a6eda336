"""The replay driver's quiescence check: a group is busy while it has pending or unread entries."""

from __future__ import annotations

import pytest
import redis

from avwap.quiesce import _busy_groups_pipelined, busy_groups, wait_quiescent
from shared.bus import Bus
from shared.schemas import Alert
from shared.streams import ALERTS, ALL_STREAMS, CANDIDATES, DLQ

WATCHED = [s for s in ALL_STREAMS if s != DLQ]


def alert(i: int) -> Alert:
    return Alert(alert_id=f"al-{i}", severity="info", kind="test", source="t", title=f"m{i}")


def both(r: redis.Redis) -> list[str]:
    lua, piped = busy_groups(r), _busy_groups_pipelined(r, WATCHED)
    assert lua == piped  # the one-round-trip script and the pipelined reads agree
    return lua


def test_busy_while_pending_or_unread_quiet_after_the_ack(real_redis: redis.Redis) -> None:
    r = real_redis
    assert both(r) == []
    r.xgroup_create(ALERTS, "notifier", id="0", mkstream=True)
    r.xgroup_create(ALERTS, "analytics", id="0", mkstream=True)
    r.xgroup_create(CANDIDATES, "risk", id="0", mkstream=True)
    assert both(r) == []
    (eid,) = Bus(r).publish_many([(ALERTS, alert(1))])
    assert sorted(both(r)) == [f"{ALERTS}/analytics", f"{ALERTS}/notifier"]  # unread by both groups
    assert busy_groups(r, limit=1) in ([f"{ALERTS}/analytics"], [f"{ALERTS}/notifier"])  # a poll stops at the first
    r.xreadgroup("notifier", "n-0", {ALERTS: ">"})
    r.xreadgroup("analytics", "a-0", {ALERTS: ">"})
    assert sorted(both(r)) == [f"{ALERTS}/analytics", f"{ALERTS}/notifier"]  # read, not acked: pending
    r.xack(ALERTS, "notifier", eid)
    assert both(r) == [f"{ALERTS}/analytics"]
    r.xack(ALERTS, "analytics", eid)
    assert both(r) == []
    wait_quiescent(r, timeout=1)
    Bus(r).publish(CANDIDATES, alert(2))  # any message type: only ids matter
    assert both(r) == [f"{CANDIDATES}/risk"]
    with pytest.raises(TimeoutError, match="not quiescent"):
        wait_quiescent(r, timeout=0.05)


def test_same_millisecond_ids_compare_by_sequence(real_redis: redis.Redis) -> None:
    r = real_redis
    r.xadd(ALERTS, {"x": "1"}, id="5-1")
    r.xgroup_create(ALERTS, "g", id="5-0")  # delivered up to 5-0, the stream is at 5-1
    assert both(r) == [f"{ALERTS}/g"]
    r.xgroup_setid(ALERTS, "g", id="5-1")
    assert both(r) == []


def test_a_group_whose_lag_the_server_cannot_count_is_judged_by_the_streams_last_id(real_redis: redis.Redis) -> None:
    r = real_redis
    for i in (1, 2, 3):
        r.xadd(ALERTS, {"x": "1"}, id=f"{i}-1")
    r.xdel(ALERTS, "2-1")  # a deleted entry inside the range: Redis reports no lag (NULL)
    r.xgroup_create(ALERTS, "g", id="1-1")
    (group,) = r.xinfo_groups(ALERTS)
    assert group["lag"] is None  # the fallback below is what decides
    assert both(r) == [f"{ALERTS}/g"]
    r.xgroup_setid(ALERTS, "g", id="3-1")
    assert r.xinfo_groups(ALERTS)[0]["lag"] in (None, 0)
    assert both(r) == []
