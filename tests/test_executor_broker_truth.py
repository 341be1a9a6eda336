"""The executor against a stand-in that behaves as Alpaca documents it (real alpaca-py client): replace
races, refusals that must keep the old stop, optional ``related_orders``, cancels refused while a replace
is pending, ``done_for_day``, re-protection, the coverage invariant, bounded polling, the shared limiter."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.executor.worker import Executor
from shared.schemas import Alert
from shared.streams import ALERTS
from standins.alpaca_api import AlpacaStandIn, Behaviours
from tests.executor_helpers import (
    KEY,
    alpaca_executor,
    clean_ledger,
    coid,
    daily,
    entry,
    exit_intent,
    orders,
    poll,
    read,
    session,
    standin_at_open,
    standin_fixture,  # noqa: F401  (the ``standin`` fixture)
    stop_place,
    stop_replace,
)

D1, D2 = "2018-03-01", "2018-03-02"


def standin_with(**kw: object) -> AlpacaStandIn:
    return standin_at_open(behaviours=Behaviours(**kw))  # type: ignore[arg-type]


def held(fake_redis, tmp_path: Path, s: AlpacaStandIn, qty: int = 100) -> Executor:
    """An executor holding ``qty`` AAA bought at 50.5 (the last price)."""
    ex = alpaca_executor(fake_redis, tmp_path, s)
    it = entry(D1, "AAA", qty, level=50.0, stop=48.0)
    for m in (session(D1, "PRE_MARKET"), it, session(D1, "OPEN"), daily(D1, ("AAA", 50.5, 52.0, 50.0, 51.0))):
        ex.handle(m, None)
    s.fill(coid(it.intent_id), qty, 50.5)
    poll(ex)
    return ex


def place_stop(ex: Executor, price: float = 48.0, qty: int = 100, tag: str = ""):
    si = stop_place(D2, "AAA", qty, price, session(D2, "WINDOW_OPEN").ts, tag=tag)
    ex.handle(si, None)
    return si


def codes(r, kind: str = "stop") -> list[tuple[str, str]]:
    return [(e.event, e.reason_code) for e in orders(r) if e.kind == kind]


def alerts(r, kind: str) -> list[Alert]:
    return [a for a in read(r, ALERTS) if isinstance(a, Alert) and a.kind == kind]


def bar(hhmm: str, o: float, h: float, lo: float, c: float):
    from tests.test_standin_market import bar as mk

    return mk("AAA", hhmm, o, h, lo, c, d=D2)


def test_a_stop_that_fills_during_a_replace_is_booked_and_the_replacement_rejected(fake_redis, tmp_path: Path) -> None:
    """Alpaca (PATCH /v2/orders/{id}): a 200 "does NOT guarantee the existing open order has been replaced";
    if the old order fills first the new one is rejected. Before: the old order was marked replaced on
    the 200 and its fill ignored (the ledger kept a position the broker had closed)."""
    with standin_with(replace_steps=2) as s:
        ex = held(fake_redis, tmp_path, s)
        si = place_stop(ex)
        r1 = stop_replace(D2, "AAA", 100, 49.0, coid(si.intent_id), session(D2, "WINDOW_OPEN").ts + 1)
        ex.handle(r1, None)
        assert s.by_client_id(coid(si.intent_id)).status == "pending_replace"
        assert codes(fake_redis) == [("accepted", "NONE")]  # nothing announced yet: the old stop is live
        s.on_bars([bar("10:01", 48.5, 48.6, 47.5, 47.8)])  # the old stop (48) triggers first
        poll(ex)
        assert s.by_client_id(coid(r1.intent_id)).status == "rejected"
        assert codes(fake_redis) == [("accepted", "NONE"), ("filled", "NONE"), ("rejected", "FILLED_BEFORE_REPLACE")]
        fill = [e for e in orders(fake_redis) if e.event == "filled" and e.kind == "stop"][0]
        assert fill.client_order_id == coid(si.intent_id) and fill.fill_qty == 100 and fill.fill_price == 48.0
        assert "AAA" not in s.positions
        recs = clean_ledger(fake_redis, tmp_path)
        net = sum(x["fill_qty"] * (1 if x["side"] == "buy" else -1) for x in recs if x.get("fill_qty"))
        assert net == 0  # the ledger reconciles with the broker


def test_a_replace_refused_for_a_sub_penny_price_keeps_the_old_stop(fake_redis, tmp_path: Path, standin) -> None:
    """Alpaca answers 422 42210000 for a sub-penny price: that is a refusal of the request, not "order not
    at the exchange yet". Before: every 422 on PATCH cancelled the live stop and resubmitted."""
    ex = held(fake_redis, tmp_path, standin)
    si = place_stop(ex)
    standin.refuse("PATCH", "/v2/orders/", "sub_penny", field="stop_price", price="48.999")
    r1 = stop_replace(D2, "AAA", 100, 49.0, coid(si.intent_id), session(D2, "WINDOW_OPEN").ts + 1)
    ex.handle(r1, None)
    assert standin.by_client_id(coid(si.intent_id)).status == "new"  # still protecting
    assert standin.orders_for(coid(r1.intent_id)) == []
    assert codes(fake_redis) == [("accepted", "NONE"), ("rejected", "SUB_PENNY")]
    assert [r for r in standin.requests if r[0] == "DELETE"] == []


def test_an_unchanged_replace_is_refused_and_the_old_stop_stays(fake_redis, tmp_path: Path, standin) -> None:
    """Alpaca: a PATCH that changes nothing is 403 40310000 "order parameters are not changed"."""
    ex = held(fake_redis, tmp_path, standin)
    si = place_stop(ex)
    r1 = stop_replace(D2, "AAA", 100, 48.0, coid(si.intent_id), session(D2, "WINDOW_OPEN").ts + 1)
    ex.handle(r1, None)
    assert standin.by_client_id(coid(si.intent_id)).status == "new"
    assert codes(fake_redis) == [("accepted", "NONE"), ("rejected", "REPLACE_UNCHANGED")]


def test_exit_held_by_an_order_without_related_orders_in_the_403_still_goes_out(fake_redis, tmp_path: Path) -> None:
    """``related_orders`` is optional (alpaca-py's recorded 403 payload has none): the executor lists the
    symbol's open sell orders instead. Before: the exit was rejected."""
    with standin_with(related_orders=False) as s:
        ex = held(fake_redis, tmp_path, s)
        outside = s.external_order("AAA", "sell", 100, stop_price=47.0)
        ex.handle(exit_intent(D2, "AAA", 100, session(D2, "OPEN").ts), None)
        assert s.orders[outside.id].status == "canceled"
        assert [(e.event, e.reason_code) for e in orders(fake_redis) if e.kind == "exit"] == [("accepted", "NONE")]


def test_a_cancel_refused_while_a_replace_is_pending_does_not_raise_and_the_exit_follows(fake_redis, tmp_path: Path) -> None:
    """Alpaca: an order in pending_replace "will reject cancel request". Before: BrokerRejected escaped the
    cancel path, the intent was retried and dead-lettered."""
    with standin_with(replace_steps=3) as s:
        ex = held(fake_redis, tmp_path, s)
        si = place_stop(ex)
        r1 = stop_replace(D2, "AAA", 100, 49.0, coid(si.intent_id), session(D2, "WINDOW_OPEN").ts + 1)
        ex.handle(r1, None)
        xi = exit_intent(D2, "AAA", 100, session(D2, "WINDOW_OPEN").ts + 2)
        ex.handle(xi, None)  # the old stop refuses the cancel: no exception
        assert s.orders_for(coid(xi.intent_id)) == []
        for _ in range(4):
            s.step()  # the broker catches up, one bar at a time
            poll(ex)
        assert len(s.orders_for(coid(xi.intent_id))) == 1
        assert [o.status for o in s.orders.values() if o.side == "sell" and o.type == "stop"] == ["replaced", "canceled"]
        assert any(u["event"] == "order_cancel_rejected" for u in s.updates)


def test_done_for_day_is_not_final(fake_redis, tmp_path: Path, standin) -> None:
    """Alpaca: done_for_day "will not receive further updates until the next trading day". Before: it was
    treated as final (a cancelled event; a later fill ignored)."""
    ex = held(fake_redis, tmp_path, standin)
    si = place_stop(ex)
    standin.set_status(coid(si.intent_id), "done_for_day")
    poll(ex)
    assert codes(fake_redis) == [("accepted", "NONE")]
    standin.set_status(coid(si.intent_id), "new")
    standin.fill(coid(si.intent_id), 100, 47.9)
    poll(ex)
    assert codes(fake_redis) == [("accepted", "NONE"), ("filled", "NONE")]


def test_cancel_and_new_refused_reprotects_at_the_last_accepted_level(fake_redis, tmp_path: Path, standin) -> None:
    """PATCH refused for the order's status -> cancel, then the new stop; when the new stop is refused too
    the position is protected again at once at the old level, with a critical alert."""
    ex = held(fake_redis, tmp_path, standin)
    si = place_stop(ex)
    standin.set_status(coid(si.intent_id), "pending_new")  # Alpaca refuses PATCH in pending_new
    standin.refuse("POST", "/v2/orders", "stop_side", base="49.9")
    r1 = stop_replace(D2, "AAA", 100, 49.0, coid(si.intent_id), session(D2, "WINDOW_OPEN").ts + 1)
    ex.handle(r1, None)
    assert standin.by_client_id(coid(si.intent_id)).status == "canceled"
    live = [o for o in standin.orders.values() if o.type == "stop" and o.status == "new"]
    assert [(o.qty, o.stop_price) for o in live] == [(100, 48.0)]
    assert codes(fake_redis) == [("accepted", "NONE"), ("rejected", "STOP_SIDE"), ("replaced", "REPROTECT")]
    rp = orders(fake_redis)[-1]
    assert rp.replaces_client_order_id == coid(si.intent_id) and rp.client_order_id == live[0].client_order_id
    assert len(alerts(fake_redis, "stop_reprotected")) == 1


def test_coverage_is_checked_and_repaired_at_every_snapshot(fake_redis, tmp_path: Path, standin) -> None:
    """Each position's live sell stops cover its quantity exactly: an extra stop placed outside the system
    is cancelled; a stop that vanished is replaced at the last accepted level; each with an alert."""
    ex = held(fake_redis, tmp_path, standin)
    si = place_stop(ex)
    foreign = standin.external_order("AAA", "sell", 50, stop_price=45.0)
    ex.handle(session(D2, "CLOSE"), None)  # a snapshot
    assert standin.orders[foreign.id].status == "canceled"
    assert standin.by_client_id(coid(si.intent_id)).status == "new"
    assert len(alerts(fake_redis, "protection_mismatch")) == 1
    with standin.lock:  # the stop is cancelled behind the executor's back
        standin._finish(standin.by_client_id(coid(si.intent_id)), "canceled")
    poll(ex)  # the poll books the cancel; the periodic snapshot repairs
    ex._next_snapshot = 0.0
    poll(ex)
    live = [o for o in standin.orders.values() if o.type == "stop" and o.status == "new"]
    assert [(o.qty, o.stop_price) for o in live] == [(100, 48.0)]
    assert len(alerts(fake_redis, "protection_mismatch")) == 2
    assert orders(fake_redis)[-1].reason_code == "REPROTECT"


def test_polling_costs_one_list_however_many_stops_are_open(fake_redis, tmp_path: Path, standin) -> None:
    """With the stream down, one GET per open order every BROKER_POLL_S broke Alpaca's 200/min with ~7
    stops; the poll now reads one list of the open orders."""
    ex = held(fake_redis, tmp_path, standin, qty=1000)
    for i in range(10):
        place_stop(ex, price=40.0 + i, qty=100, tag=str(i))
    ex._next_snapshot = 1e18  # no periodic snapshot in this count
    before = len(standin.requests)
    poll(ex)
    assert standin.requests[before:] == [("GET", "/v2/orders")]


def test_every_executor_rest_call_goes_through_the_shared_limiter(fake_redis, tmp_path: Path, standin) -> None:
    from services.executor.rate_limit import key_for
    from services.executor.settings import BrokerSettings
    from services.executor.worker import make_broker
    from tests.executor_helpers import SECRET, settings_for

    bs = BrokerSettings(apca_api_key_id=KEY, apca_api_secret_key=SECRET, apca_api_base_url=standin.url,
                        apca_allow_local_url=True)
    broker = make_broker(settings_for("ALPACA_PAPER", tmp_path), bs, fake_redis)
    assert broker is not None
    broker.account()
    broker.list_open()
    broker.positions()
    assert fake_redis.zcard(key_for(KEY)) == 3


@pytest.mark.redis
def test_cli_check_shows_the_coverage_of_each_position(redis_url: str, real_redis, capsys) -> None:
    from avwap.commands.executor import protection_report
    from shared.bus import fields_of
    from shared.schemas import BrokerOrder, BrokerPosition, BrokerSnapshot
    from shared.streams import BROKER

    def snap(stops: list[int]) -> BrokerSnapshot:
        return BrokerSnapshot(
            snapshot_id="bs", mode="ALPACA_PAPER", trade_date=D2, ts=1, equity=1.0, cash=1.0, buying_power=1.0,
            positions=[BrokerPosition(symbol="AAA", qty=100, avg_entry_price=50.0),
                       BrokerPosition(symbol="BBB", qty=10, avg_entry_price=5.0)],
            open_orders=[BrokerOrder(client_order_id=f"c{i}", broker_order_id=f"b{i}", symbol="AAA", side="sell",
                                     order_type="stop", qty=q, status="new") for i, q in enumerate(stops)]
            + [BrokerOrder(client_order_id="cb", broker_order_id="bb", symbol="BBB", side="sell", order_type="stop",
                           qty=10, status="new")],
            reconciled=True, reason="periodic")

    real_redis.xadd(BROKER, fields_of(snap([100, 50])))
    assert protection_report("ALPACA_PAPER", redis_url) == 1
    out = capsys.readouterr().out
    assert "AAA: 100 shares, stops cover 150: OVER-COVERED" in out and "BBB: 10 shares, stops cover 10: ok" in out
    real_redis.xadd(BROKER, fields_of(snap([100])))
    assert protection_report("ALPACA_PAPER", redis_url) == 0


# -- a stop already through the market (Alpaca 422 42210000 "stop price must not be greater than base price /
# 1.001"): the live rehearsal left SBUX unprotected 2256 s with 92 order_rejected / 76 exit_stop_rejected alerts
def writes(s: AlpacaStandIn, since: int = 0) -> list[tuple[str, str]]:
    return [r[:2] for r in s.requests[since:] if r[0] in ("POST", "PATCH", "DELETE")]


def test_a_replace_above_the_last_price_keeps_the_old_stop_live_and_covering(fake_redis, tmp_path: Path, standin) -> None:
    """The ratchet's new stop (48.9) is above last / 1.001 (the price fell to 48.5): the PATCH is refused and
    the old stop (48) stays live for all 100 shares; nothing is cancelled, nothing re-sent."""
    ex = held(fake_redis, tmp_path, standin)
    si = place_stop(ex)
    standin.set_price("AAA", 48.5)
    before = len(standin.requests)
    r1 = stop_replace(D2, "AAA", 100, 48.9, coid(si.intent_id), session(D2, "WINDOW_OPEN").ts + 1)
    ex.handle(r1, None)
    for _ in range(2):
        ex._next_snapshot = 0.0
        poll(ex)
    old = standin.by_client_id(coid(si.intent_id))
    assert (old.status, old.qty, old.stop_price) == ("new", 100, 48.0)
    assert codes(fake_redis) == [("accepted", "NONE"), ("rejected", "STOP_SIDE")]
    assert writes(standin, before) == [("PATCH", f"/v2/orders/{old.id}")]
    assert alerts(fake_redis, "protection_mismatch") == [] and alerts(fake_redis, "stop_breached") == []


def test_a_first_stop_above_the_last_price_flattens_the_position_within_one_bar(fake_redis, tmp_path: Path,
                                                                                  standin) -> None:
    """No stop is live and the first one (48) is already through the market (47.5): the executor sells the
    100 shares at market at once (STOP_BREACHED, a critical alert); the next bar fills it. Before: the stop
    was rejected and the shares stayed naked."""
    ex = held(fake_redis, tmp_path, standin)
    standin.set_price("AAA", 47.5)
    si = place_stop(ex)
    assert standin.orders_for(coid(si.intent_id)) == []
    sells = [o for o in standin.orders.values() if o.side == "sell" and o.status not in ("canceled", "rejected")]
    assert [(o.type, o.qty) for o in sells] == [("market", 100)]  # covered by the exit from the first step
    assert codes(fake_redis) == [("rejected", "STOP_BREACHED")]
    assert len(alerts(fake_redis, "stop_breached")) == 1
    standin.on_bars([bar("10:01", 47.4, 47.6, 47.2, 47.3)])
    poll(ex)
    assert "AAA" not in standin.positions
    assert codes(fake_redis, "exit") == [("accepted", "NONE"), ("filled", "NONE")]


def test_a_reprotection_through_the_market_exits_once_without_a_retry_storm(fake_redis, tmp_path: Path,
                                                                            standin) -> None:
    """The live stop (48) vanished and the price is now 47.5: the repair at the last accepted level is refused
    once, then the executor sells at market; further snapshots send nothing. Before: each refused
    re-protection made another one at the same level (POST after POST until the action guard gave up)."""
    ex = held(fake_redis, tmp_path, standin)
    si = place_stop(ex)
    with standin.lock:  # the stop is cancelled behind the executor's back, then the market trades through 48
        standin._finish(standin.by_client_id(coid(si.intent_id)), "canceled")
    standin.set_price("AAA", 47.5)
    poll(ex)  # books the cancel
    before = len(standin.requests)
    for _ in range(3):
        ex._next_snapshot = 0.0
        poll(ex)
    assert writes(standin, before) == [("POST", "/v2/orders"), ("POST", "/v2/orders")]  # the repair, the exit
    assert [p["type"] for p in standin.posts[-2:]] == ["stop", "market"]
    assert codes(fake_redis)[-1] == ("rejected", "STOP_BREACHED")
    assert len(alerts(fake_redis, "stop_breached")) == 1
    standin.on_bars([bar("10:01", 47.4, 47.6, 47.2, 47.3)])
    poll(ex)
    assert "AAA" not in standin.positions
