"""Circuit breakers on live equity: each breaker on a crafted equity path (pure core), and the analytics
hook on real Redis (trip -> state transition + alert + audit; stays tripped; re-arm; fail closed)."""

from __future__ import annotations

import json

import redis

from services.analytics.breaker_hook import BreakerHook
from shared import audit
from shared.breakers import (
    BreakerBook,
    BreakerConfig,
    decode_book,
    evaluate,
    on_bars,
    on_fill,
    on_snapshot,
    rearm,
)
from shared.controls import read_state, rearm_breaker, transition
from shared.ids import stable_id
from shared.schemas import (
    Alert,
    BarBatch,
    BarRow,
    BrokerPosition,
    BrokerSnapshot,
    OrderEvent,
    TradingStateChange,
    decode,
)
from shared.streams import ALERTS, AUDIT_KEY, BREAKERS_KEY, CONTROL

D1, D2 = "2019-02-11", "2019-02-12"
T0 = 1_549_900_000_000_000_000
MIN = 60 * 10**9


def snap(d: str, equity: float, ts: int, cash: float | None = None, positions: tuple = ()) -> BrokerSnapshot:
    return BrokerSnapshot(snapshot_id=stable_id("bs", d, ts), mode="PAPER_SIM", trade_date=d, ts=ts, equity=equity,
                          cash=equity if cash is None else cash, buying_power=equity, positions=list(positions),
                          reason="pre_market")


def bar(sym: str, close: float, ts: int, d: str = D1) -> BarBatch:
    return BarBatch(tf="1m", trade_date=d, bars=[BarRow(symbol=sym, ts=ts, open=close, high=close, low=close,
                                                        close=close, volume=100)])


def fill(sym: str, side: str, qty: int, price: float, ts: int, kind: str, n: int = 0) -> OrderEvent:
    return OrderEvent(event_id=stable_id("ev", sym, side, kind, ts, n), event="filled", mode="PAPER_SIM",
                      intent_id="i", client_order_id=f"c{n}", symbol=sym, side=side, kind=kind, qty=qty,
                      fill_qty=qty, fill_price=price, filled_qty=qty, trade_date=D1, ts=ts)


def test_daily_loss_on_marked_equity_between_snapshots() -> None:
    cfg = BreakerConfig(daily_loss_pct=2.0)
    book = BreakerBook()
    # opening equity 100k: 50k cash + 500 AAA @ 100
    pos = BrokerPosition(symbol="AAA", qty=500, avg_entry_price=100.0, current_price=100.0)
    assert on_snapshot(book, snap(D1, 100_000.0, T0, cash=50_000.0, positions=(pos,)), cfg) == []
    assert book.open_equity == 100_000.0
    assert on_bars(book, bar("AAA", 97.0, T0 + MIN), cfg) == []  # -1.5%
    assert book.equity == 98_500.0
    trips = on_bars(book, bar("AAA", 96.0, T0 + 2 * MIN), cfg)  # -2.0%: trips
    assert [t.breaker for t in trips] == ["daily_loss"]
    assert trips[0].figures == {"equity": 98_000.0, "open_equity": 100_000.0, "loss": 2_000.0, "loss_pct": 2.0}
    assert "2.00%" in trips[0].reason and trips[0].ts == T0 + 2 * MIN
    # stays tripped, never trips twice, and never re-arms by itself (equity recovers, new session)
    assert on_bars(book, bar("AAA", 110.0, T0 + 3 * MIN), cfg) == []
    on_snapshot(book, snap(D2, 105_000.0, T0 + 86_400 * 10**9), cfg)
    assert "daily_loss" in book.tripped and book.open_equity == 105_000.0
    assert rearm(book, "daily_loss") and not book.tripped and not rearm(book, "daily_loss")


def test_daily_loss_in_dollars_and_off_unless_configured() -> None:
    book = BreakerBook()
    on_snapshot(book, snap(D1, 10_000.0, T0), BreakerConfig())
    book.equity = 9_000.0
    assert evaluate(book, BreakerConfig(), T0 + 1) == []  # nothing configured: nothing trips
    assert [t.breaker for t in evaluate(book, BreakerConfig(daily_loss_usd=500.0), T0 + 2)] == ["daily_loss"]


def test_drawdown_from_the_high_water_mark_across_sessions() -> None:
    cfg = BreakerConfig(max_drawdown_pct=5.0)
    book = BreakerBook()
    on_snapshot(book, snap(D1, 100_000.0, T0), cfg)
    on_snapshot(book, snap(D1, 110_000.0, T0 + MIN), cfg)  # new high
    assert on_snapshot(book, snap(D2, 105_000.0, T0 + 2 * MIN), cfg) == []  # -4.5% from 110k
    trips = on_snapshot(book, snap(D2, 104_500.0, T0 + 3 * MIN), cfg)  # -5.0%
    assert [t.breaker for t in trips] == ["drawdown"] and trips[0].figures["high_water_mark"] == 110_000.0
    rearm(book, "drawdown")  # measurement restarts at the current equity
    assert book.hwm == 104_500.0
    assert on_snapshot(book, snap(D2, 104_000.0, T0 + 4 * MIN), cfg) == []


def test_consecutive_stop_outs_at_a_loss() -> None:
    cfg = BreakerConfig(max_consecutive_stops=2)
    book = BreakerBook()
    on_snapshot(book, snap(D1, 100_000.0, T0), cfg)
    ts = T0
    # loss by stop, then a profitable exit resets, then two losing stops trip (at the bar after the fill)
    seq = [("AAA", 50.0, 48.0, "stop"), ("BBB", 20.0, 22.0, "exit"), ("CCC", 10.0, 9.5, "stop"), ("DDD", 30.0, 29.0, "stop")]
    got = []
    for n, (sym, buy, sell, kind) in enumerate(seq):
        ts += MIN
        assert on_fill(book, fill(sym, "buy", 10, buy, ts, "entry", n), cfg) == []
        ts += MIN
        assert on_fill(book, fill(sym, "sell", 10, sell, ts, kind, n), cfg) == []  # applied at the next bar
        ts += MIN
        trips = on_bars(book, bar("ZZZ", 1.0, ts), cfg)
        got.append((book.consecutive_stops, [t.breaker for t in trips]))
    assert got == [(1, []), (0, []), (1, []), (2, ["consecutive_stops"])]
    # a redelivered fill is not counted again
    assert on_fill(book, fill("DDD", "sell", 10, 29.0, ts - MIN, "stop", 3), cfg) == []
    on_bars(book, bar("ZZZ", 1.0, ts + MIN), cfg)
    assert book.consecutive_stops == 2


def test_the_figures_do_not_depend_on_whether_a_fill_or_its_bar_arrives_first() -> None:
    cfg = BreakerConfig(daily_loss_usd=1_000_000.0)
    books = []
    for order in ("bar_first", "fill_first"):
        book = BreakerBook()
        on_snapshot(book, snap(D1, 100_000.0, T0), cfg)
        b1, f1 = bar("AAA", 50.2, T0 + MIN), fill("AAA", "buy", 100, 50.0, T0 + MIN, "entry")
        msgs = [b1, f1] if order == "bar_first" else [f1, b1]
        for m in [*msgs, bar("AAA", 50.4, T0 + 2 * MIN)]:
            (on_bars if isinstance(m, BarBatch) else on_fill)(book, m, cfg)
        books.append(book)
    a, b = books
    assert a.equity == b.equity == 100_000.0 - 100 * 50.0 + 100 * 50.4 and a.holdings == b.holdings
    # a fill the last snapshot already includes changes nothing, but a stop-out in it still counts
    book = BreakerBook()
    on_snapshot(book, snap(D1, 100_000.0, T0, cash=95_000.0, positions=(BrokerPosition(
        symbol="AAA", qty=100, avg_entry_price=50.0, current_price=50.0),)), cfg)
    on_snapshot(book, snap(D1, 99_800.0, T0 + 2 * MIN), cfg)  # AAA gone: stopped out before this snapshot
    on_fill(book, fill("AAA", "sell", 100, 48.0, T0 + MIN, "stop"), cfg)  # ... whose fill arrives late
    assert book.equity == 99_800.0 and book.consecutive_stops == 1


def test_invalid_equity_trips_fail_closed() -> None:
    cfg = BreakerConfig(daily_loss_pct=50.0, max_drawdown_pct=50.0)
    book = BreakerBook()
    on_snapshot(book, snap(D1, 100_000.0, T0), cfg)
    trips = on_snapshot(book, snap(D1, 0.0, T0 + MIN), cfg)
    assert sorted(t.breaker for t in trips) == ["daily_loss", "drawdown"] and "fail closed" in trips[0].reason


def alerts(r: redis.Redis) -> list[Alert]:
    return [m for _, f in r.xrange(ALERTS) if isinstance(m := decode(f[b"data"]), Alert)]


def test_hook_trips_the_state_alerts_audits_and_stays_tripped(real_redis: redis.Redis) -> None:
    r = real_redis
    hook = BreakerHook(r, BreakerConfig(daily_loss_pct=1.0, trip_state="HALTED"))
    pos = BrokerPosition(symbol="AAA", qty=100, avg_entry_price=100.0, current_price=100.0)
    assert hook(snap(D1, 20_000.0, T0, cash=10_000.0, positions=(pos,))) == []
    assert read_state(r).state == "ACTIVE"
    trips = hook(bar("AAA", 97.9, T0 + MIN))  # 10k + 9790 = 19790: -1.05%
    assert [t.breaker for t in trips] == ["daily_loss"]
    assert read_state(r).state == "HALTED"
    ch = [m for _, f in r.xrange(CONTROL) if isinstance(m := decode(f[b"data"]), TradingStateChange)]
    assert len(ch) == 1 and ch[0].breaker == "daily_loss" and ch[0].who == "breaker:daily_loss"
    assert ch[0].ts == T0 + MIN and ch[0].figures["equity"] == 19_790.0  # event time, the figures that tripped it
    al = [a for a in alerts(r) if a.kind == "breaker_tripped"]
    assert len(al) == 1 and al[0].severity == "critical" and al[0].fields["loss_pct"] == "1.0500"
    assert [json.loads(x)["kind"] for x in r.lrange(AUDIT_KEY, 0, -1)] == ["breaker_trip"]
    # the same bar again (redelivery) and later bars: no second trip, no second transition
    assert hook(bar("AAA", 97.9, T0 + MIN)) == [] and hook(bar("AAA", 90.0, T0 + 2 * MIN)) == []
    assert r.xlen(CONTROL) == 1
    # the operator resumes only after a re-arm
    rearm_breaker(r, "daily_loss", who="cli:op", source="cli", reason="reviewed", ts=T0 + 3 * MIN)
    transition(r, "ACTIVE", who="cli:op", source="cli", reason="reviewed", ts=T0 + 3 * MIN)
    assert hook(bar("AAA", 89.5, T0 + 4 * MIN)) == []  # -0.56% from the re-arm's equity (19000)
    assert audit.verify(audit.read_all(r)).ok


def test_hook_is_off_unless_configured_and_fails_closed_on_a_bad_book(real_redis: redis.Redis) -> None:
    r = real_redis
    assert BreakerHook(r, BreakerConfig())(snap(D1, 1.0, T0)) == [] and not r.exists(BREAKERS_KEY)
    r.set(BREAKERS_KEY, b"{not a book")
    hook = BreakerHook(r, BreakerConfig(max_drawdown_pct=5.0))
    hook(snap(D1, 100_000.0, T0))
    assert read_state(r).state == "REDUCING"
    assert any(a.kind == "breaker_book_unreadable" and a.severity == "critical" for a in alerts(r))
    hook(snap(D1, 100_000.0, T0 + 1))  # once: not again while the state is already REDUCING
    assert r.xlen(CONTROL) == 1 and decode_book(r.get(BREAKERS_KEY)) is None
    rearm_breaker(r, "drawdown", who="cli:op", source="cli", reason="fresh book", ts=T0 + 2)
    assert decode_book(r.get(BREAKERS_KEY)) == BreakerBook()


def test_two_trips_of_one_message_chain_their_transitions(real_redis: redis.Redis) -> None:
    r = real_redis
    hook = BreakerHook(r, BreakerConfig(daily_loss_pct=1.0, max_drawdown_pct=1.0))
    hook(snap(D1, 100_000.0, T0))
    trips = hook(snap(D1, 98_000.0, T0 + MIN))
    assert sorted(t.breaker for t in trips) == ["daily_loss", "drawdown"]
    ch = [m for _, f in r.xrange(CONTROL) if isinstance(m := decode(f[b"data"]), TradingStateChange)]
    assert [(c.previous, c.state) for c in ch] == [("ACTIVE", "REDUCING"), ("REDUCING", "REDUCING")]
    assert audit.verify(audit.read_all(r)) == audit.Verdict(ok=True, records=2)
