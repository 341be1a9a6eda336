"""Flatten with a stop at the broker: the real alpaca-py client against the local Alpaca stand-in. The
stop is cancelled and the cancel confirmed before the market exit is sent; a refused exit, or one still
unfilled after EXIT_MAX_UNPROTECTED_S, restores the stop at once; the unprotected gap is measured; the
exits core adopts the restored stop."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from services.exits import core as exits_core
from shared.clock import dt_to_ns, ny_datetime
from shared.controls import flatten_request, read_state, request_flatten
from shared.schemas import Alert, FlattenRequest, decode
from shared.streams import ALERTS, CONTROL
from standins.alpaca_api import AlpacaStandIn
from tests.executor_helpers import alpaca_executor, coid, entry, minute, orders, poll, session, stop_place
from tests.exits_helpers import Book, entry_fill

D1, D2 = "2018-03-01", "2018-03-02"


@pytest.fixture
def standin() -> Iterator[AlpacaStandIn]:
    with AlpacaStandIn(response_delay_s=0.6) as s:
        yield s


def held_with_stop(ex, standin: AlpacaStandIn) -> str:
    """AAA 100 filled on D1, its stop (47.0) live at the broker on D2; returns the stop's client id."""
    it = entry(D1, "AAA", 100, level=50.0, stop=48.0)
    from tests.executor_helpers import daily

    for m in (session(D1, "PRE_MARKET"), it, session(D1, "OPEN"), daily(D1, ("AAA", 50.5, 52.0, 50.0, 51.0))):
        ex.handle(m, None)
    standin.fill(coid(it.intent_id), 100, 50.5)
    poll(ex)
    for m in (session(D1, "CLOSE"), session(D2, "PRE_MARKET"), session(D2, "OPEN")):
        ex.handle(m, None)
    si = stop_place(D2, "AAA", 100, 47.0, session(D2, "WINDOW_OPEN").ts)
    ex.handle(si, None)
    stop = coid(si.intent_id)
    assert standin.by_client_id(stop).status in ("accepted", "new")
    return stop


def flatten(r: redis.Redis, ex, symbols: list[str], ts: int) -> FlattenRequest:
    """What `avwap flatten` / Slack does (REDUCING + request), then the executor handles the request."""
    _, req = request_flatten(r, symbols, who="cli:op", source="cli", reason="earnings", ts=ts)
    assert read_state(r).state == "REDUCING"
    (msg,) = [m for _, f in r.xrange(CONTROL) if isinstance(m := decode(f[b"data"]), FlattenRequest)]
    assert msg == req
    ex.handle(req, None)
    return req


def spy_orders(standin: AlpacaStandIn, stop: str) -> list[tuple[str, str]]:
    """Each POST /v2/orders with the stop's broker status at that moment."""
    seen: list[tuple[str, str]] = []
    orig = standin.api

    def api(method, path, query, body):  # noqa: ANN001, ANN202
        if method == "POST" and path == "/v2/orders":
            seen.append((body.get("client_order_id", ""), standin.by_client_id(stop).status))
        return orig(method, path, query, body)

    standin.api = api  # type: ignore[method-assign]
    return seen


def test_flatten_cancels_and_confirms_the_stop_then_sells(fake_redis, tmp_path: Path, standin: AlpacaStandIn) -> None:
    ex = alpaca_executor(fake_redis, tmp_path, standin)
    stop = held_with_stop(ex, standin)
    seen = spy_orders(standin, stop)
    req = flatten(fake_redis, ex, ["AAA", "ZZZ"], dt_to_ns(ny_datetime(D2, "10:00")))
    evs = [(e.kind, e.event) for e in orders(fake_redis)]
    assert evs[-2:] == [("stop", "cancelled"), ("exit", "accepted")]
    exit_coid = orders(fake_redis)[-1].client_order_id
    # the exit reached the broker only after the stop's cancel was confirmed there
    assert seen == [(exit_coid, "canceled")]
    ex_order = standin.by_client_id(exit_coid)
    assert (ex_order.side, ex_order.qty, ex_order.type) == ("sell", 100, "market")
    al = [a for _, f in fake_redis.xrange(ALERTS) if isinstance(a := decode(f[b"data"]), Alert) and a.kind == "flatten"]
    assert len(al) == 1 and "AAA 100" in al[0].title and "not held: ZZZ" in al[0].title and req.request_id in al[0].title
    standin.fill(exit_coid, 100, 51.0)
    poll(ex)
    fill = orders(fake_redis)[-1]
    assert (fill.kind, fill.event, fill.fill_qty) == ("exit", "filled", 100)
    assert fill.reason.startswith("unprotected ") and "ms since the stop's confirmed cancel" in fill.reason
    assert standin.positions.get("AAA") is None or standin.positions["AAA"].qty == 0


def test_a_refused_exit_restores_the_stop_at_once(fake_redis, tmp_path: Path, standin: AlpacaStandIn) -> None:
    ex = alpaca_executor(fake_redis, tmp_path, standin)
    stop = held_with_stop(ex, standin)
    flatten(fake_redis, ex, [], dt_to_ns(ny_datetime(D2, "10:00")))  # ALL
    exit_coid = orders(fake_redis)[-1].client_order_id
    standin.set_status(exit_coid, "rejected")  # the broker refuses the market exit
    poll(ex)
    tail = orders(fake_redis)[-2:]
    assert [(e.kind, e.event) for e in tail] == [("exit", "rejected"), ("stop", "accepted")]
    assert "stop restored" in tail[0].reason and tail[0].reason_code == "STOP_RESTORED"
    restored = tail[1]
    assert restored.reason.startswith(f"restores {stop}; unprotected ") and restored.reason_code == "RESTORES"
    assert restored.stop_price == 47.0 and restored.qty == 100
    at_broker = standin.by_client_id(restored.client_order_id)
    assert (at_broker.side, at_broker.type, at_broker.qty, float(at_broker.stop_price)) == ("sell", "stop", 100, 47.0)
    assert at_broker.status in ("accepted", "new")
    # and if the broker refuses the restored stop too, the operator is told at once (critical)
    standin.set_status(restored.client_order_id, "rejected")
    poll(ex)
    al = [a for _, f in fake_redis.xrange(ALERTS) if isinstance(a := decode(f[b"data"]), Alert) and a.kind == "restore_refused"]
    assert len(al) == 1 and al[0].severity == "critical" and "NO stop" in al[0].title


def test_an_exit_unfilled_too_long_is_cancelled_and_the_stop_restored(fake_redis, tmp_path: Path,
                                                                       standin: AlpacaStandIn) -> None:
    ex = alpaca_executor(fake_redis, tmp_path, standin, exit_max_unprotected_s=60.0)
    held_with_stop(ex, standin)
    t0 = dt_to_ns(ny_datetime(D2, "10:00"))
    flatten(fake_redis, ex, ["AAA"], t0)
    exit_coid = orders(fake_redis)[-1].client_order_id
    ex.handle(minute(D2, "10:00", ("AAA", 50.0, 50.1, 49.9, 50.0)), None)  # within the bound: nothing
    assert standin.by_client_id(exit_coid).status != "canceled"
    ex.handle(minute(D2, "10:02", ("AAA", 50.0, 50.1, 49.9, 50.0)), None)  # 120 s > 60 s: cancelled, restored
    assert standin.by_client_id(exit_coid).status == "canceled"
    tail = orders(fake_redis)[-2:]
    assert [(e.kind, e.event) for e in tail] == [("exit", "cancelled"), ("stop", "accepted")]
    assert "unprotected for more than 60 s" in tail[0].reason and tail[0].reason_code == "STOP_RESTORED"
    assert tail[1].reason.startswith("restores ") and tail[1].reason_code == "RESTORES"


def test_flatten_request_shape() -> None:
    req = flatten_request(["msft", "aapl"], who="slack:U1", source="slack", reason="x", ts=5)
    assert req.symbols == ["AAPL", "MSFT"] and not req.all_positions


def test_exits_blocks_a_new_stop_during_the_exit_and_adopts_the_restored_one() -> None:
    book = Book()
    d = "2019-02-12"
    t = dt_to_ns(ny_datetime(d, "10:00"))
    res = book.order(entry_fill("T", 100, 10.5, t, d, stop=9.0), exits_core.History())
    (place,) = res.intents
    from tests.exits_helpers import stop_event

    book.order(stop_event(place, "accepted", t + 1))
    live = book.positions["T"].live_stop_client_order_id
    # the executor cancels the stop for an exit: exits must not place another one meanwhile
    res = book.order(stop_event(place, "cancelled", t + 2, reason="exit_intent=fx-1", coid=live, code="EXIT_INTENT"))
    assert res.intents == [] and book.positions["T"].blocked.startswith(exits_core.B_HELD)
    # the exit is refused and the executor restores the stop: still no second stop, then adopted
    from shared.schemas import OrderEvent

    rej = OrderEvent(event_id="ev-r", event="rejected", mode="ALPACA_PAPER", intent_id="fx-1", client_order_id="av-x",
                     symbol="T", side="sell", kind="exit", qty=100, reason="rejected by broker; stop restored",
                     reason_code="STOP_RESTORED", trade_date=d, ts=t + 3)
    assert book.order(rej).intents == [] and book.positions["T"].blocked
    restored = OrderEvent(event_id="ev-s", event="accepted", mode="ALPACA_PAPER", intent_id="rs-1",
                          client_order_id="av-restored", symbol="T", side="sell", kind="stop", qty=100, order_type="stop",
                          stop_price=9.0, reason=f"restores {live}; unprotected 12 ms since the stop's confirmed cancel",
                          reason_code="RESTORES", trade_date=d, ts=t + 4)
    res = book.order(restored)
    pos = book.positions["T"]
    assert (pos.live_stop_client_order_id, pos.live_stop_price, pos.blocked) == ("av-restored", 9.0, "")
    assert res.intents == []  # the restored stop is the intended one: nothing more to send
