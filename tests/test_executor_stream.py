"""Order events from Alpaca's trade-update websocket: alpaca-py's TradingStream against a local
stand-in of the stream, feeding the path polling takes; polling stays the fallback."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.executor.trade_stream import TradeUpdates, stream_url_for
from services.executor.worker import Executor
from shared.artifacts import read_jsonl
from standins.alpaca_api import AlpacaStandIn
from tests.executor_helpers import (
    KEY,
    SECRET,
    alpaca_executor,
    clean_ledger,
    coid,
    daily,
    entry,
    exit_intent,
    orders,
    poll,
    session,
    standin_at_open,
    stop_place,
)

D1, D2 = "2018-03-01", "2018-03-02"
SLOW = 3600.0  # polling slowed to once an hour: what arrives, arrives by the stream


@pytest.fixture
def standin() -> Iterator[AlpacaStandIn]:
    with standin_at_open(stream=True, keys=(KEY, SECRET), response_delay_s=1.0) as s:
        yield s


@pytest.fixture
def started(fake_redis, tmp_path: Path, standin: AlpacaStandIn) -> Iterator[tuple[Executor, TradeUpdates]]:
    updates = TradeUpdates(KEY, SECRET, url=standin.stream_url, paper=True, backoff_min_s=0.5, backoff_max_s=1.0)
    ex = alpaca_executor(fake_redis, tmp_path, standin, updates=updates, broker_poll_s=SLOW, broker_poll_streaming_s=SLOW)
    try:
        assert standin.stream is not None
        standin.stream.wait_connected(1)
        pump(ex, lambda: updates.connected)
        ex.idle()  # the first poll (and the one every (re)connection asks for)
        yield ex, updates
    finally:
        updates.stop()


def pump(ex: Executor, until: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Run the worker's idle step (as the consumer does between reads) until ``until()``."""
    deadline = time.monotonic() + timeout_s
    while not until():
        assert time.monotonic() < deadline, "timed out"
        ex.idle()
        time.sleep(0.01)


def event_list(r) -> list[tuple[str, int, int]]:
    return [(e.event, e.fill_qty, e.filled_qty) for e in orders(r)]


def confirm_entry(ex: Executor) -> str:
    it = entry(D1, "AAA", 100, level=50.0, stop=48.0)
    for m in (session(D1, "PRE_MARKET"), it, session(D1, "OPEN"), daily(D1, ("AAA", 50.5, 52.0, 50.0, 51.0))):
        ex.handle(m, None)
    return coid(it.intent_id)


def test_stream_url_follows_the_trading_endpoint() -> None:
    assert stream_url_for("https://paper-api.alpaca.markets") == "wss://paper-api.alpaca.markets/stream"
    assert stream_url_for("https://api.alpaca.markets/") == "wss://api.alpaca.markets/stream"
    assert stream_url_for("http://127.0.0.1:5000") == "ws://127.0.0.1:5000/stream"


def test_fills_arrive_by_the_stream_and_a_poll_or_a_resent_update_repeats_nothing(
        fake_redis, tmp_path: Path, standin: AlpacaStandIn, started) -> None:
    ex, updates = started
    assert standin.stream is not None
    c = confirm_entry(ex)
    assert event_list(fake_redis) == [("accepted", 0, 0)]
    http = len(standin.requests)
    standin.fill(c, 40, 50.4)
    pump(ex, lambda: len(orders(fake_redis)) == 2)
    assert len(standin.requests) == http  # no poll, no lookup: the fill came by the stream
    poll(ex)  # the same fill seen by polling
    assert len(standin.requests) > http and len(orders(fake_redis)) == 2
    # the last fill reaches the poll first and the stream later
    n = updates.received
    standin.fill(c, 60, 50.6)
    deadline = time.monotonic() + 10
    while updates.received < n + 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    late = updates.drain()
    poll(ex)
    assert len(orders(fake_redis)) == 3
    for item in late:
        updates._queue.put(item)  # noqa: SLF001 - delivered after the poll
    ex.idle()
    assert updates._queue.empty()  # noqa: SLF001
    # and the same update once more on the stream
    standin.stream.resend_last()
    pump(ex, lambda: updates.received == n + 2)
    ex.idle()
    evs = orders(fake_redis)
    assert event_list(fake_redis) == [("accepted", 0, 0), ("partially_filled", 40, 40), ("filled", 60, 100)]
    assert evs[1].fill_price == pytest.approx(50.4) and evs[2].fill_price == pytest.approx(50.6)
    assert evs[2].avg_fill_price == pytest.approx(50.52) and evs[2].broker_order_id == standin.by_client_id(c).id
    recs = clean_ledger(fake_redis, tmp_path)
    assert [r["provenance"]["input:trigger"] for r in recs][1:] == ["broker:trade_update", "broker:poll"]


def test_a_dropped_connection_reconnects_and_the_poll_catches_what_it_missed(
        fake_redis, tmp_path: Path, standin: AlpacaStandIn, started) -> None:
    ex, updates = started
    assert standin.stream is not None
    c = confirm_entry(ex)
    standin.stream.drop()
    pump(ex, lambda: standin.stream.listening == 0 and not updates.connected)  # type: ignore[union-attr]
    standin.fill(c, 40, 50.4)  # while nobody listens: Alpaca does not replay it
    assert standin.stream.lost == 1
    http = len(standin.requests)
    pump(ex, lambda: updates.connects == 2 and len(orders(fake_redis)) == 2)  # reconnected (backoff), then polled
    assert len(standin.requests) > http and event_list(fake_redis)[-1] == ("partially_filled", 40, 40)
    http = len(standin.requests)
    standin.fill(c, 60, 50.6)  # after the reconnection: by the stream again
    pump(ex, lambda: len(orders(fake_redis)) == 3)
    assert len(standin.requests) == http
    assert event_list(fake_redis) == [("accepted", 0, 0), ("partially_filled", 40, 40), ("filled", 60, 100)]
    clean_ledger(fake_redis, tmp_path)


def test_an_unreadable_update_triggers_a_poll(fake_redis, tmp_path: Path, standin: AlpacaStandIn, started) -> None:
    ex, updates = started
    assert standin.stream is not None
    c = confirm_entry(ex)
    with standin.lock:  # the fill happens, but its update arrives mangled
        standin.stream.publish = lambda *a, **k: standin.stream._send(  # type: ignore[method-assign,union-attr]
            {"stream": "trade_updates", "data": {"event": "fill", "order": {"id": "garbage"}}})
        standin.fill(c, 100, 50.5)
    pump(ex, lambda: len(orders(fake_redis)) == 2)
    assert updates.unparsed == 1 and event_list(fake_redis)[-1] == ("filled", 100, 100)


def test_a_cancel_confirmed_by_the_stream_releases_the_waiting_exit(
        fake_redis, tmp_path: Path, standin: AlpacaStandIn, started) -> None:
    ex, _ = started
    c = confirm_entry(ex)
    standin.fill(c, 100, 50.5)
    pump(ex, lambda: len(orders(fake_redis)) == 2)
    si = stop_place(D2, "AAA", 100, 48.0, session(D2, "WINDOW_OPEN").ts)
    ex.handle(si, None)
    standin.stick_pending_cancel(coid(si.intent_id))
    xi = exit_intent(D2, "AAA", 100, session(D2, "WINDOW_OPEN").ts + 1)
    ex.handle(xi, None)
    assert standin.orders_for(coid(xi.intent_id)) == []  # waits for the stop's cancel
    standin.finish_cancel(coid(si.intent_id))  # Alpaca confirms the cancel on the stream
    pump(ex, lambda: len(standin.orders_for(coid(xi.intent_id))) == 1)
    assert [(e.kind, e.event) for e in orders(fake_redis)][-3:] == [("stop", "accepted"), ("stop", "cancelled"),
                                                                   ("exit", "accepted")]
    ledger_recs = [x for p in sorted((tmp_path / "ledger" / "ALPACA_PAPER").glob("*.jsonl")) for x in read_jsonl(p)]
    assert ledger_recs[-1]["provenance"]["input:trigger"] == "broker:trade_update"
    clean_ledger(fake_redis, tmp_path)
