"""Stream retention by session (shared/retention.py) on a real Redis: old sessions go, never an entry a
group still needs, never the DLQ, never a stream without a group."""

from __future__ import annotations

import time

import redis

from shared.bus import Bus
from shared.retention import cut_id, trim_history
from shared.schemas import Alert, SessionEvent, decode
from shared.streams import ALERTS, BARS_1D, CLOCK, DLQ

DAYS = ["2018-01-02", "2018-01-03", "2018-01-04", "2018-01-05", "2018-01-08"]
PHASES = ["PRE_MARKET", "OPEN", "WINDOW_OPEN", "CLOSE"]


def history(r: redis.Redis, groups: tuple[str, ...] = (CLOCK, ALERTS)) -> dict[str, str]:
    """Five sessions: clock events, an alert, a daily-bar entry and a DLQ entry each; returns each day's
    first clock entry id."""
    bus = Bus(r)
    for s in groups:
        r.xgroup_create(s, "g", id="0", mkstream=True)
    first = {}
    for d in DAYS:
        for i, ph in enumerate(PHASES):
            first.setdefault(d, bus.publish(CLOCK, SessionEvent(trade_date=d, phase=ph, ts=i)))
        bus.publish(ALERTS, Alert(alert_id=f"al-{d}", severity="info", kind="test", source="t", title=d))
        r.xadd(BARS_1D, {"d": d})
        r.xadd(DLQ, {"dlq_reason": d})
        time.sleep(0.003)  # sessions are hours apart: never in one millisecond (the cut keeps its whole ms)
    return first


def ack_all(r: redis.Redis, *streams: str) -> None:
    for s in streams:
        for _, entries in r.xreadgroup("g", "c", {s: ">"}):
            r.xack(s, "g", *[e for e, _ in entries])


def ms(entry_id: bytes | str) -> int:
    return int((entry_id.decode() if isinstance(entry_id, bytes) else entry_id).split("-")[0])


def kept_sessions(r: redis.Redis) -> list[str]:
    return sorted({decode(f[b"data"]).trade_date for _, f in r.xrange(CLOCK)})


def test_streams_keep_the_last_sessions_from_their_first_clock_event(real_redis: redis.Redis) -> None:
    r = real_redis
    first = history(r)
    ack_all(r, CLOCK, ALERTS)
    assert cut_id(r, 2) == first["2018-01-05"] and cut_id(r, 5) is None
    assert trim_history(r, keep_sessions=2, keep_bar_sessions=0) > 0
    cut = ms(first["2018-01-05"])
    for s in (CLOCK, ALERTS):  # nothing older than the cut's millisecond is left, every kept session is whole
        assert all(ms(e) >= cut for e, _ in r.xrange(s))
    assert {"2018-01-05", "2018-01-08"} <= set(kept_sessions(r))
    clock = [decode(f[b"data"]) for _, f in r.xrange(CLOCK)]
    assert [e.phase for e in clock if e.trade_date >= "2018-01-05"] == PHASES * 2
    assert {a.title for _, f in r.xrange(ALERTS) if (a := decode(f[b"data"]))} >= {"2018-01-05", "2018-01-08"}
    assert r.xlen(DLQ) == len(DAYS) and r.xlen(BARS_1D) == len(DAYS)  # the DLQ stays; bars: retention off, no group
    assert trim_history(r, keep_sessions=0, keep_bar_sessions=0) == 0


def test_an_entry_a_group_has_not_acked_or_not_read_is_never_trimmed(real_redis: redis.Redis) -> None:
    r = real_redis
    history(r)
    r.xgroup_create(CLOCK, "slow", id="0")
    r.xreadgroup("slow", "c", {CLOCK: ">"}, count=3)  # three of the first session's events read, none acked
    ack_all(r, CLOCK)  # ALERTS: group g has read nothing at all
    trim_history(r, keep_sessions=1, keep_bar_sessions=0)
    assert r.xlen(CLOCK) == len(DAYS) * len(PHASES)  # "slow" still needs the first session's entries
    assert r.xlen(ALERTS) == len(DAYS)  # nothing delivered to g yet: all kept
    pending = r.xpending_range(CLOCK, "slow", "-", "+", 10)
    r.xack(CLOCK, "slow", *[p["message_id"] for p in pending])
    trim_history(r, keep_sessions=1, keep_bar_sessions=0)
    assert r.xlen(CLOCK) == len(DAYS) * len(PHASES) - 2  # up to the last entry "slow" was delivered (kept)


def test_a_stream_without_a_group_is_left_alone_and_bars_have_their_own_retention(real_redis: redis.Redis) -> None:
    r = real_redis
    first = history(r)
    ack_all(r, CLOCK, ALERTS)
    trim_history(r, keep_sessions=3, keep_bar_sessions=1)
    assert r.xlen(BARS_1D) == len(DAYS)  # no consumer group on it: a group created later starts from its beginning
    assert {"2018-01-04", "2018-01-05", "2018-01-08"} <= set(kept_sessions(r)) and "2018-01-02" not in kept_sessions(r)
    r.xgroup_create(BARS_1D, "g", id="0")
    ack_all(r, BARS_1D)
    trim_history(r, keep_sessions=3, keep_bar_sessions=1)
    left = [f[b"d"].decode() for _, f in r.xrange(BARS_1D)]
    assert left[-1] == "2018-01-08" and len(left) <= 2 and all(ms(e) >= ms(first["2018-01-08"]) for e, _ in r.xrange(BARS_1D))
