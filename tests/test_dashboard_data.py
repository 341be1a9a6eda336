"""The dashboard's banner rule (pure) and the Now view's trading state, fast (fakeredis)."""

from __future__ import annotations

from services.dashboard.now import GroupRow, Heartbeat, NowView, health_problems, now_view
from shared.controls import kill_switch_value
from shared.streams import KILL_SWITCH_KEY

HEALTHY = dict(trading_state="ACTIVE", trading_detail="", heartbeats=[Heartbeat("risk", ["risk-0"])],
               groups=[GroupRow("avwap:candidates", "risk", 0, 0, 1)], streams={}, dlq=0, last_bar={},
               last_bar_ns=1_000_000_000_000, broker={"reconciled": "yes"}, alerts=[])


def view(**kw: object) -> NowView:
    return NowView(**{**HEALTHY, **kw})  # type: ignore[arg-type]


def test_a_healthy_view_has_no_problem() -> None:
    assert health_problems(view(), ["risk"], max_lag=10) == []


def test_each_unhealthy_input_is_named() -> None:
    assert health_problems(view(heartbeats=[Heartbeat("risk", [])]), ["risk", "exits"], 10) == [
        "risk: no live heartbeat", "exits: no live heartbeat"]
    assert health_problems(view(groups=[GroupRow("avwap:clock", "risk", 0, 11, 1)]), ["risk"], 10) == [
        "risk lags 11 entries on avwap:clock"]
    assert health_problems(view(groups=[GroupRow("avwap:clock", "risk", 0, 10, 1)]), ["risk"], 10) == []
    assert health_problems(view(dlq=3), ["risk"], 10) == ["DLQ holds 3 entries (avwap dlq list)"]
    assert health_problems(view(trading_state="HALTED", trading_detail="operator"), ["risk"], 10) == [
        "trading state HALTED: operator"]
    assert health_problems(view(breakers=["daily_loss"]), ["risk"], 10) == ["circuit breaker tripped: daily_loss"]
    assert health_problems(view(broker={"reconciled": "no"}), ["risk"], 10) == ["broker positions not reconciled"]
    stale = health_problems(view(), ["risk"], 10, feed_max_age_s=60, now_ns=1_000_000_000_000 + 61 * 10**9)
    assert stale == ["feed: last bar older than 60s"]
    assert health_problems(view(), ["risk"], 10, feed_max_age_s=60, now_ns=1_000_000_000_000 + 59 * 10**9) == []


def test_the_kill_switch_turns_the_banner_red(fake_redis) -> None:  # noqa: ANN001
    assert now_view(fake_redis, []).trading_state == "ACTIVE"
    fake_redis.set(KILL_SWITCH_KEY, kill_switch_value(True, "operator", 0.0))
    v = now_view(fake_redis, [])
    assert v.trading_state != "ACTIVE"
    assert any(p.startswith(f"trading state {v.trading_state}") for p in health_problems(v, [], 10))
    fake_redis.set(KILL_SWITCH_KEY, "garbage")  # unreadable blocks entries: never shown as ACTIVE
    assert now_view(fake_redis, []).trading_state != "ACTIVE"
    fake_redis.delete(KILL_SWITCH_KEY)
    assert now_view(fake_redis, [], env_kill=True).trading_state != "ACTIVE"


def test_benchmark_is_the_symbol_or_the_equal_weight_universe(tmp_path) -> None:  # noqa: ANN001
    from services.dashboard.data import benchmark_series
    from shared.bars import BarStore
    from shared.clock import calendar
    from shared.schemas import BarRow

    store = BarStore(tmp_path)
    days = ["2018-01-02", "2018-01-03", "2018-01-04"]
    closes = {"AAA": [10.0, 11.0, 12.0], "BBB": [20.0, 20.0, 10.0]}
    for i, d in enumerate(days):
        ts = calendar().open_close_ns(d)[1]
        store.append("1d", [BarRow(symbol=s, ts=ts, open=c[i], high=c[i], low=c[i], close=c[i], volume=1000)
                            for s, c in closes.items()])
    growth, label = benchmark_series(store, days[1:], "AAA")
    assert growth == [1.0, 12 / 11] and label == "AAA buy and hold"
    growth, label = benchmark_series(store, days, "SPY")
    assert growth == [1.0, (1.1 + 1.0) / 2, (1.2 + 0.5) / 2] and "equal-weight universe (2 symbols" in label
