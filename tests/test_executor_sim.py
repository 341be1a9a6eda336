"""Executor in PAPER_SIM and DRY_RUN (fakeredis): session behaviour, simulator fills, exits conventions, ledger."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.executor.settings import BrokerSettings
from services.executor.worker import Executor
from shared.artifacts import read_jsonl
from shared.clock import dt_to_ns, ny_datetime
from shared.schemas import BrokerSnapshot, OrderEvent, Rejection
from tests.executor_helpers import (
    coid,
    daily,
    entry,
    exit_intent,
    feed,
    minute,
    orders,
    rejections,
    session,
    sim_executor,
    snapshots,
    stop_place,
    stop_replace,
)

D1, D2, D3 = "2018-03-01", "2018-03-02", "2018-03-05"


def make(fake_redis, tmp_path: Path, mode: str = "PAPER_SIM", **bs: object) -> Executor:
    return sim_executor(fake_redis, tmp_path, mode, **{"sim_slippage_bps": 10.0, **bs})


def at(d: str, hhmm: str) -> int:
    return dt_to_ns(ny_datetime(d, hhmm))


def test_session_snapshots_carry_reason_date_and_event_ts(fake_redis, tmp_path: Path) -> None:
    ex = make(fake_redis, tmp_path)
    feed(ex, session(D1, "PRE_MARKET"), session(D1, "OPEN"), session(D1, "CLOSE"))
    snaps = snapshots(fake_redis)
    assert [s.reason for s in snaps] == ["pre_market", "open", "close"]
    assert all(isinstance(s, BrokerSnapshot) and s.trade_date == D1 and s.mode == "PAPER_SIM" for s in snaps)
    assert [s.ts for s in snaps] == [session(D1, p).ts for p in ("PRE_MARKET", "OPEN", "CLOSE")]
    assert snaps[0].equity == 100_000.0 and snaps[0].cash == 100_000.0 and snaps[0].positions == []
    feed(ex, session(D1, "PRE_MARKET"))  # redelivered: nothing new
    assert len(snapshots(fake_redis)) == 3


def test_daily_confirmation_fills_at_open_plus_slippage_with_the_intents_stop(fake_redis, tmp_path: Path) -> None:
    ex = make(fake_redis, tmp_path)
    it = entry(D1, "AAA", 100, level=50.0, stop=48.0)
    feed(ex, session(D1, "PRE_MARKET"), it, session(D1, "OPEN"), daily(D1, ("AAA", 50.5, 52.0, 50.0, 51.0)),
         session(D1, "CLOSE"))
    evs = orders(fake_redis)
    assert [e.event for e in evs] == ["accepted", "filled"]
    fill = evs[1]
    assert fill.kind == "entry" and fill.side == "buy" and fill.intent_id == it.intent_id
    assert fill.client_order_id == coid(it.intent_id) and fill.stop_price == 48.0
    assert fill.fill_price == pytest.approx(50.5 * 1.001) and fill.filled_qty == 100 and fill.trade_id
    close = snapshots(fake_redis)[-1]
    assert close.reason == "close" and close.positions[0].qty == 100 and close.positions[0].current_price == 51.0
    assert close.cash == pytest.approx(100_000 - 100 * 50.5 * 1.001)
    assert rejections(fake_redis) == []
    led = list(read_jsonl(tmp_path / "ledger" / "PAPER_SIM" / f"{D1}.jsonl"))
    assert [x["event"] for x in led] == ["accepted", "filled"]
    assert led[1]["client_order_id"] == fill.client_order_id and led[1]["broker_order_id"] == fill.broker_order_id


def test_unconfirmed_entry_expires_at_close_with_a_rejection(fake_redis, tmp_path: Path) -> None:
    ex = make(fake_redis, tmp_path)
    it = entry(D1, "AAA", 100, level=50.0, stop=48.0)
    feed(ex, session(D1, "PRE_MARKET"), it, session(D1, "OPEN"), daily(D1, ("AAA", 49.9, 52.0, 49.0, 51.0)),
         session(D1, "CLOSE"))
    assert orders(fake_redis) == []
    rj = rejections(fake_redis)
    assert len(rj) == 1 and isinstance(rj[0], Rejection)
    assert rj[0].source == "executor" and rj[0].reasons == ["ENTRY_NOT_CONFIRMED"] and rj[0].intent_id == it.intent_id
    assert rj[0].ts == session(D1, "CLOSE").ts
    # the snapshot comes after the expiry, and a late intent for D1 is refused
    feed(ex, entry(D1, "BBB", 10, 20.0, 19.0))
    assert rejections(fake_redis)[-1].reasons == ["INTENT_EXPIRED"]


def _open_position(ex: Executor, qty: int = 100) -> str:
    it = entry(D1, "AAA", qty, level=50.0, stop=48.0)
    feed(ex, session(D1, "PRE_MARKET"), it, session(D1, "OPEN"), daily(D1, ("AAA", 50.0, 52.0, 50.0, 51.0)),
         session(D1, "CLOSE"), session(D2, "PRE_MARKET"), session(D2, "OPEN"))
    return it.intent_id


def test_stop_fills_at_stop_and_gap_through_fills_at_open(fake_redis, tmp_path: Path) -> None:
    ex = make(fake_redis, tmp_path, sim_slippage_bps=0.0)
    _open_position(ex)
    si = stop_place(D2, "AAA", 100, 49.0, at(D2, "09:35"))
    feed(ex, session(D2, "WINDOW_OPEN"), si, daily(D2, ("AAA", 50.0, 50.5, 48.5, 49.5)))
    stop_evs = [e for e in orders(fake_redis) if e.kind == "stop"]
    assert [e.event for e in stop_evs] == ["accepted", "filled"]
    assert stop_evs[0].intent_id == si.intent_id and stop_evs[0].client_order_id == coid(si.intent_id)
    assert stop_evs[0].stop_price == 49.0 and stop_evs[1].fill_price == 49.0 and stop_evs[1].side == "sell"

    fake_redis.flushall()
    ex = make(fake_redis, tmp_path / "gap", sim_slippage_bps=0.0)
    _open_position(ex)
    feed(ex, stop_place(D2, "AAA", 100, 49.0, at(D2, "09:35")), daily(D2, ("AAA", 47.0, 47.5, 46.0, 47.2)))
    fill = [e for e in orders(fake_redis) if e.kind == "stop" and e.event == "filled"][0]
    assert fill.fill_price == 47.0  # gapped below the stop: the open


def test_replace_emits_replaced_with_new_client_id_and_no_cancel_for_the_old(fake_redis, tmp_path: Path) -> None:
    ex = make(fake_redis, tmp_path)
    _open_position(ex)
    si = stop_place(D2, "AAA", 100, 47.0, at(D2, "09:35"))
    feed(ex, si, daily(D2, ("AAA", 51.0, 53.0, 50.5, 52.5)), session(D2, "CLOSE"), session(D3, "PRE_MARKET"))
    rep = stop_replace(D3, "AAA", 100, 49.5, coid(si.intent_id), at(D3, "09:35"))
    feed(ex, rep)
    stop_evs = [e for e in orders(fake_redis) if e.kind == "stop"]
    assert [e.event for e in stop_evs] == ["accepted", "replaced"]
    assert stop_evs[1].client_order_id == coid(rep.intent_id) and stop_evs[1].intent_id == rep.intent_id
    assert coid(si.intent_id) in stop_evs[1].reason and stop_evs[1].stop_price == 49.5
    snap_orders = None
    feed(ex, session(D3, "OPEN"))
    snap_orders = snapshots(fake_redis)[-1].open_orders
    assert [(o.client_order_id, o.stop_price) for o in snap_orders] == [(coid(rep.intent_id), 49.5)]


def test_exit_cancels_the_stop_first_then_sells_at_next_open(fake_redis, tmp_path: Path) -> None:
    ex = make(fake_redis, tmp_path, sim_slippage_bps=0.0)
    _open_position(ex)
    si = stop_place(D2, "AAA", 100, 45.0, at(D2, "09:35"))
    xi = exit_intent(D2, "AAA", 100, at(D2, "16:01"))
    feed(ex, si, daily(D2, ("AAA", 51.0, 53.0, 50.5, 52.5)), xi)
    evs = orders(fake_redis)
    tail = [(e.kind, e.event) for e in evs][-3:]
    assert tail == [("stop", "accepted"), ("stop", "cancelled"), ("exit", "accepted")]
    assert f"exit_intent={xi.intent_id}" in evs[-2].reason and evs[-2].client_order_id == coid(si.intent_id)
    feed(ex, session(D2, "CLOSE"), session(D3, "PRE_MARKET"), session(D3, "OPEN"), daily(D3, ("AAA", 53.0, 54.0, 52.0, 53.5)))
    fill = orders(fake_redis)[-1]
    assert (fill.kind, fill.event, fill.fill_price, fill.side) == ("exit", "filled", 53.0, "sell")
    feed(ex, session(D3, "CLOSE"))
    assert snapshots(fake_redis)[-1].positions == []


def test_partial_fills_and_fees(fake_redis, tmp_path: Path) -> None:
    ex = make(fake_redis, tmp_path, sim_slippage_bps=0.0, sim_max_volume_pct=1.0, sim_commission_per_share=0.01,
              sim_commission_per_order=1.0)
    it = entry(D1, "AAA", 300, level=50.0, stop=48.0)
    feed(ex, session(D1, "PRE_MARKET"), it, session(D1, "OPEN"),
         daily(D1, ("AAA", 50.0, 52.0, 50.0, 51.0), volume=20_000), session(D1, "CLOSE"),
         session(D2, "PRE_MARKET"), daily(D2, ("AAA", 51.0, 52.0, 50.5, 51.5), volume=50_000))
    evs = [e for e in orders(fake_redis) if e.event != "accepted"]
    assert [(e.event, e.fill_qty, e.filled_qty) for e in evs] == [("partially_filled", 200, 200), ("filled", 100, 300)]
    assert evs[0].fees == pytest.approx(200 * 0.01 + 1.0) and evs[1].fees == pytest.approx(1.0)
    assert evs[1].fill_price == 51.0 and evs[0].trade_id != evs[1].trade_id
    assert evs[1].avg_fill_price == pytest.approx((200 * 50 + 100 * 51) / 300, abs=1e-4)


def test_intraday_ten_minute_confirmation_then_fill_at_next_minute_open(fake_redis, tmp_path: Path) -> None:
    ex = make(fake_redis, tmp_path, sim_slippage_bps=0.0)
    it = entry(D1, "AAA", 10, level=50.0, stop=48.0)
    feed(ex, session(D1, "PRE_MARKET"), it, session(D1, "OPEN"))
    # 10-minute bars: 09:30-09:40 closes 50.2 (> level), 09:40-09:50 closes 50.1 (>= level): confirmed at 09:50
    price = {"09:40": 50.2, "09:50": 50.1}
    for m in range(31, 52):
        hhmm = f"09:{m:02d}"
        c = price.get(hhmm, 49.9 if m < 40 else 50.05)
        feed(ex, minute(D1, hhmm, ("AAA", c, c + 0.1, c - 0.1, c)))
    evs = orders(fake_redis)
    assert [e.event for e in evs] == ["accepted", "filled"]
    assert evs[0].ts == at(D1, "09:50") and evs[1].ts == at(D1, "09:51") and evs[1].fill_price == 50.05
    feed(ex, daily(D1, ("AAA", 49.0, 51.0, 48.5, 50.5)), session(D1, "CLOSE"))
    assert len(orders(fake_redis)) == 2  # the daily bar neither re-confirms nor re-fills


def test_dry_run_accepts_only_and_marks_it(fake_redis, tmp_path: Path) -> None:
    ex = make(fake_redis, tmp_path, mode="DRY_RUN")
    it = entry(D1, "AAA", 100, level=50.0, stop=48.0)
    feed(ex, session(D1, "PRE_MARKET"), it, it, daily(D1, ("AAA", 50.5, 52.0, 50.0, 51.0)),
         stop_place(D1, "AAA", 100, 48.0, at(D1, "15:00")), session(D1, "CLOSE"))
    evs = orders(fake_redis)
    assert [(e.kind, e.event) for e in evs] == [("entry", "accepted"), ("stop", "accepted")]
    assert all(e.mode == "DRY_RUN" and "DRY_RUN" in e.reason for e in evs)
    assert evs[0].stop_price == 48.0
    assert [s.reason for s in snapshots(fake_redis)] == ["pre_market", "close"]
    assert (tmp_path / "ledger" / "DRY_RUN" / f"{D1}.jsonl").read_text().count("\n") == 2


def test_kill_switch_refuses_entries_but_not_exits(fake_redis, tmp_path: Path) -> None:
    ex = make(fake_redis, tmp_path, sim_slippage_bps=0.0)
    _open_position(ex)
    fake_redis.set("avwap:control:kill_switch", '{"on": true, "reason": "test"}')
    feed(ex, entry(D2, "BBB", 10, 20.0, 19.0), exit_intent(D2, "AAA", 100, at(D2, "09:40")))
    assert rejections(fake_redis)[-1].reasons == ["KILL_SWITCH_ON"]
    assert [(e.kind, e.event) for e in orders(fake_redis)][-1] == ("exit", "accepted")


def test_replay_is_byte_identical(fake_redis, tmp_path: Path) -> None:
    def run(sub: str) -> tuple[list[bytes], bytes]:
        fake_redis.flushall()
        ex = make(fake_redis, tmp_path / sub)
        _open_position(ex)
        feed(ex, stop_place(D2, "AAA", 100, 49.0, at(D2, "09:35")), daily(D2, ("AAA", 50.0, 50.5, 48.5, 49.5)),
             session(D2, "CLOSE"))
        data = [f[b"data"] for s in ("avwap:orders", "avwap:broker", "avwap:rejections") for _, f in fake_redis.xrange(s)]
        ledgers = b"".join(p.read_bytes() for p in sorted((tmp_path / sub / "ledger").rglob("*.jsonl")))
        return data, ledgers

    assert run("a") == run("b")


def test_order_events_are_unique(fake_redis, tmp_path: Path) -> None:
    ex = make(fake_redis, tmp_path)
    _open_position(ex)
    evs = orders(fake_redis)
    assert len({e.event_id for e in evs}) == len(evs)
    assert all(isinstance(e, OrderEvent) for e in evs)


def test_ledger_torn_line_is_isolated_and_records_land_once(fake_redis, tmp_path: Path) -> None:
    from shared.artifacts import canonical_line

    ex = make(fake_redis, tmp_path)
    it = entry(D1, "AAA", 100, level=50.0, stop=48.0)
    feed(ex, session(D1, "PRE_MARKET"), it, session(D1, "OPEN"))
    path = tmp_path / "ledger" / "PAPER_SIM" / f"{D1}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'{"record_id":"torn","tra')  # a crash mid-write left half a line
    feed(ex, daily(D1, ("AAA", 50.5, 52.0, 50.0, 51.0)))
    lines = path.read_bytes().split(b"\n")
    assert lines[0] == b'{"record_id":"torn","tra' and len(lines) == 4 and lines[-1] == b""
    recs = list(read_jsonl(path))
    assert [r["event"] for r in recs] == ["accepted", "filled"]
    # a crash after the append but before the queue was trimmed: the records are queued again
    fake_redis.rpush(ex.ledger_key, *(canonical_line(r) for r in recs))
    ex.flush_ledger()
    assert [r["event"] for r in read_jsonl(path)] == ["accepted", "filled"]
    assert fake_redis.llen(ex.ledger_key) == 0


def test_kill_switch_values() -> None:
    """One parser for every reader (risk, executor, CLI); unreadable blocks (fail closed)."""
    from shared.controls import kill_switch_value, parse_kill_switch

    def kill_switch_blocks(raw: bytes | None) -> bool:  # what every reader does with the state
        return parse_kill_switch(raw) != "off"

    assert not kill_switch_blocks(None) and not kill_switch_blocks(b'{"on": false}') and not kill_switch_blocks(b"0")
    assert kill_switch_blocks(b'{"on": true}') and kill_switch_blocks(b"1") and kill_switch_blocks(b"garbage{")
    assert parse_kill_switch(b'{"reason": "x"}') == "unreadable" and parse_kill_switch(b'"on"') == "unreadable"
    assert parse_kill_switch(kill_switch_value(True, "ops", 1.0)) == "on"
    assert parse_kill_switch(kill_switch_value(False, "ops", 1.0)) == "off"


def test_simulator_on_real_daily_bars_gap_down_through_a_stop(fake_redis, tmp_path: Path) -> None:
    """Real vendor bars: buy on a day's open, stop just under the next day's open on a real gap-down day."""
    from shared.bars import load_bars
    from tests.conftest import DAILY_FILE

    frame = load_bars(DAILY_FILE).frame
    f = frame[frame["symbol"] == "AAPL"].reset_index(drop=True)
    # first day whose open is below the previous day's low (a gap down), from 2016 on
    i = next(k for k in range(1, len(f)) if f.trade_date[k] >= "2016-01-01" and f.open[k] < f.low[k - 1])
    d1, d2 = f.trade_date[i - 1], f.trade_date[i]
    b1, b2 = f.iloc[i - 1], f.iloc[i]
    ex = make(fake_redis, tmp_path, sim_slippage_bps=5.0)
    it = entry(d1, "AAPL", 10, level=float(b1.open) - 0.01, stop=float(b1.low) - 1)
    feed(ex, session(d1, "PRE_MARKET"), it, session(d1, "OPEN"),
         daily(d1, ("AAPL", float(b1.open), float(b1.high), float(b1.low), float(b1.close))), session(d1, "CLOSE"))
    stop = round(float(b1.low) - 0.01, 2)  # above d2's open: d2 gaps through it
    si = stop_place(d2, "AAPL", 10, stop, session(d2, "WINDOW_OPEN").ts)
    feed(ex, session(d2, "PRE_MARKET"), session(d2, "OPEN"), si,
         daily(d2, ("AAPL", float(b2.open), float(b2.high), float(b2.low), float(b2.close))))
    fills = [e for e in orders(fake_redis) if e.event == "filled"]
    assert [e.kind for e in fills] == ["entry", "stop"]
    assert fills[0].fill_price == pytest.approx(round(float(b1.open) * 1.0005, 4))
    assert float(b2.open) < stop and fills[1].fill_price == pytest.approx(round(float(b2.open) * 0.9995, 4))


def test_the_consumer_handles_a_bar_before_the_intent_published_after_it(fake_redis) -> None:
    from shared.bus import Bus
    from shared.consumer import Consumer
    from shared.streams import BARS_1D, BARS_1M, CLOCK, INTENTS

    bus = Bus(fake_redis)
    c = Consumer(fake_redis, "executor", [INTENTS, CLOCK, BARS_1M, BARS_1D], lambda m, d: seen.append(type(m).__name__),
                        block_ms=10)
    c.ensure_groups()
    seen: list[str] = []
    bus.publish(CLOCK, session(D2, "WINDOW_OPEN"))
    bus.publish(BARS_1D, daily(D2, ("AAA", 51.0, 53.0, 50.5, 52.5)))
    bus.publish(INTENTS, stop_place(D2, "AAA", 100, 49.0, at(D2, "16:00")))
    while c.step(block=False):
        pass
    assert seen == ["SessionEvent", "BarBatch", "StopIntent"]


def test_a_redelivered_entry_after_the_commit_changes_nothing(fake_redis, tmp_path: Path) -> None:
    """Each handle commits with its entry's XACK: the same entry handled again after that commit (a slow
    duplicate, a redelivery) finds it acked and writes nothing."""
    from shared.bus import Bus, Delivery
    from shared.streams import BARS_1D, CLOCK, INTENTS

    ex = make(fake_redis, tmp_path)
    ids = {}
    for stream, m in [(CLOCK, session(D1, "PRE_MARKET")), (INTENTS, entry(D1, "AAA", 10, 50.0, 48.0)),
                      (BARS_1D, daily(D1, ("AAA", 50.5, 52.0, 50.0, 51.0)))]:
        fake_redis.xgroup_create(stream, "executor", id="0", mkstream=True)
        ids[stream] = (Bus(fake_redis).publish(stream, m), m)
        fake_redis.xreadgroup("executor", "executor-0", {stream: ">"})

    def handle(stream: str, deliveries: int) -> None:
        entry_id, m = ids[stream]
        ex.handle(m, Delivery(stream, entry_id, deliveries, "executor-0"))

    handle(CLOCK, 1)
    handle(CLOCK, 2)  # redelivered
    handle(INTENTS, 1)
    handle(BARS_1D, 1)
    handle(BARS_1D, 3)
    assert len(snapshots(fake_redis)) == 1 and [e.event for e in orders(fake_redis)] == ["accepted", "filled"]


def test_every_ledger_line_carries_its_provenance(fake_redis, tmp_path: Path) -> None:
    """/work/notes/provenance.md: code version, settings hash, inputs (stable ids only: no path, no wall clock)."""
    from services.executor.core import batch_id
    from shared.artifacts import code_version

    ex = make(fake_redis, tmp_path)
    it = entry(D1, "AAA", 100, level=50.0, stop=48.0)
    it2 = entry(D1, "BBB", 10, level=20.0, stop=19.0)
    bar = daily(D1, ("AAA", 50.5, 52.0, 50.0, 51.0), ("BBB", 19.0, 19.5, 18.5, 19.2))
    feed(ex, session(D1, "PRE_MARKET"), it, it2, session(D1, "OPEN"), bar, session(D1, "CLOSE"))
    path = tmp_path / "ledger" / "PAPER_SIM" / f"{D1}.jsonl"
    recs = list(read_jsonl(path))
    assert [(r["record"], r.get("event", "")) for r in recs] == [("order_event", "accepted"), ("order_event", "filled"),
                                                                  ("rejection", "")]
    base = {"code_version": code_version(), "settings_hash": ex.ctx.settings.hash(),
            "broker_settings_hash": ex.bs.hash(), "mode": "PAPER_SIM", "run_id": ex.ctx.settings.resolved_run_id()}
    assert [r["provenance"] for r in recs] == [
        {**base, "input:intent": it.intent_id, "input:trigger": batch_id(bar)},
        {**base, "input:intent": it.intent_id, "input:trigger": batch_id(bar)},
        {**base, "input:intent": it2.intent_id, "input:trigger": f"session:{D1}:CLOSE"},
    ]
    assert str(tmp_path).encode() not in path.read_bytes()
    # the broker-settings hash follows the settings that change fills, not the ones that change transport
    assert BrokerSettings(sim_slippage_bps=1.0).hash() != BrokerSettings(sim_slippage_bps=2.0).hash()
    assert BrokerSettings(feed_poll_s=1.0).hash() == BrokerSettings(feed_poll_s=9.0).hash()
