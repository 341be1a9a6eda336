"""Risk's state stored as a root and a record log (services/risk/store.py) on a real Redis: what is read back is
the state the worker holds, the log is appended to and rewritten only after a prune, and a root without its
log (lost, or written before the log existed) never lends records that are not its own."""

from __future__ import annotations

from pathlib import Path

import msgspec
import redis

from services.risk.core import Controls, Limits, RiskState, encode_state, step
from services.risk.store import LOG_KEY, STATE_KEY, added, holds_records, load_state, marks
from services.risk.worker import StateCache, limits_for, transact
from shared.bus import Bus
from shared.clock import calendar
from shared.schemas import Message
from shared.settings import load_settings
from tests.test_risk_support import D, batch, cand, decisions, session, snapshot

SESSIONS = calendar().sessions_in_range("2018-11-26", "2018-12-11")


def day(d: str) -> list[Message]:
    """One session's inputs: PRE_MARKET, a snapshot, analytics' decisions and a batch of candidates."""
    cb = batch([cand(s, d=d, score=90.0 - i) for i, s in enumerate(["AAA", "BBB", "CCC", "DDD"])], d=d)
    return [session(d), snapshot(d), decisions(cb, {"BBB": "BLOCK"}), cb, session(d, "OPEN")]


def messages() -> list[Message]:
    return [m for d in SESSIONS for m in day(d)]


def setup(redis_url: str, tmp_path: Path) -> tuple[Bus, object, Limits]:
    settings = load_settings(redis_url=redis_url, artifacts_dir=str(tmp_path / "art"), portfolio_decision_enforce=True)
    return Bus(redis.Redis.from_url(redis_url)), settings, limits_for(settings)


def played(redis_url: str, tmp_path: Path, n: int) -> tuple[Bus, object, Limits, list[Message], StateCache]:
    """The first ``n`` messages committed by one worker: (bus, settings, limits, all messages, its StateCache)."""
    bus, settings, limits = setup(redis_url, tmp_path)
    msgs, held = messages(), StateCache()
    for msg in msgs[:n]:
        transact(bus, settings, limits, msg, None, held)
    return bus, settings, limits, msgs, held


def stored_is_held(r: redis.Redis, held: StateCache) -> RiskState:
    raw, st = load_state(r)
    assert held.state is not None and raw == held.raw
    assert encode_state(st) == encode_state(held.state)
    root = msgspec.json.decode(r.get(STATE_KEY), type=RiskState)
    assert not holds_records(root) and root.records == r.llen(LOG_KEY)
    return st


def test_what_is_read_back_is_the_state_the_worker_holds_through_prunes(redis_url: str, real_redis: redis.Redis,
                                                                        tmp_path: Path) -> None:
    bus, settings, limits = setup(redis_url, tmp_path)
    held = StateCache()
    pushed: list[int] = []
    for msg in messages():
        before = real_redis.llen(LOG_KEY)
        transact(bus, settings, limits, msg, None, held)
        st = stored_is_held(real_redis, held)
        pushed.append(real_redis.llen(LOG_KEY) - before)
    assert len(SESSIONS) > 5 and sorted(st.decided) == SESSIONS[-5:]  # pruned to KEEP_DATES sessions
    assert all(len(recs) == 4 for recs in st.decided.values()) and all(len(v) == 4 for v in st.shadow.values())
    # a day's records are appended (4 decisions, 1 batch + 4 shadow records); the log shrinks only at a prune
    assert max(pushed) <= 5 and min(pushed) < 0


def test_added_is_the_new_records_in_order_and_none_after_a_prune() -> None:
    limits = Limits()
    st = RiskState()
    for m in day(D)[:3]:
        st = step(st, m, Controls(), limits).state
    before = marks(st)
    cb = day(D)[3]
    st = step(st, cb, Controls(), limits).state
    new = added(before, st)
    assert new is not None and [e.split(b",")[0] for e in new] == [b'["d"'] * 4
    assert [msgspec.json.decode(e)[2] for e in new] == list(st.decided[D])
    before = marks(st)
    later = calendar().next_session(D)
    for _ in range(6):
        st = step(st, session(later), Controls(), limits).state
        later = calendar().next_session(later)
    assert added(before, st) is None  # D was pruned: the log is rewritten whole
    # a map that kept its length but not its records did not only grow either
    b = day(D)[2]
    k = b.batch_id  # type: ignore[attr-defined]
    st.decision_batches = {k: b}  # type: ignore[dict-item]
    before = marks(st)
    st.decision_batches = {"pdb-other": b}
    assert added(before, st) is None
    st.decision_batches = {k: b, "pdb-other": b}
    assert added(before, st) is not None and len(added(before, st)) == 1


def test_a_root_written_before_the_log_loads_whole_and_its_records_move_to_the_log(redis_url: str,
                                                                                     real_redis: redis.Redis,
                                                                                     tmp_path: Path) -> None:
    bus, settings, limits, msgs, _ = played(redis_url, tmp_path, 12)
    _, whole = load_state(real_redis)
    legacy = encode_state(msgspec.structs.replace(whole, records=0))  # one blob, as the layout before the log
    real_redis.set(STATE_KEY, legacy)
    real_redis.delete(LOG_KEY)
    _, back = load_state(real_redis)
    assert encode_state(back) == encode_state(msgspec.structs.replace(whole, records=0))
    fresh = StateCache()
    for msg in msgs[12:]:
        transact(bus, settings, limits, msg, None, fresh)
        stored_is_held(real_redis, fresh)


def test_a_log_without_its_root_is_not_used_and_is_rewritten(redis_url: str, real_redis: redis.Redis,
                                                            tmp_path: Path) -> None:
    bus, settings, limits, msgs, _ = played(redis_url, tmp_path, 8)
    real_redis.delete(STATE_KEY)  # Redis lost the root: its log must not lend records to a fresh state
    _, st = load_state(real_redis)
    assert not st.decided and not st.decision_batches
    fresh = StateCache()
    transact(bus, settings, limits, msgs[8], None, fresh)
    st = stored_is_held(real_redis, fresh)
    assert real_redis.llen(LOG_KEY) == len(st.decision_batches) + sum(map(len, st.decided.values())) \
        + sum(map(len, st.shadow.values()))


def test_a_log_changed_behind_the_worker_is_read_again_not_trusted(redis_url: str, real_redis: redis.Redis,
                                                                   tmp_path: Path) -> None:
    bus, settings, limits, msgs, held = played(redis_url, tmp_path, 8)
    real_redis.rpush(LOG_KEY, b'["d","2018-11-26","cd-x",{}]')  # not the root's: its length no longer matches
    for msg in msgs[8:12]:
        transact(bus, settings, limits, msg, None, held)
        stored_is_held(real_redis, held)
