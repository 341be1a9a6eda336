"""The real alpaca-py TradingClient against the local stand-in: idempotency, 422, 403, replace, reconciliation."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.executor.worker import Executor
from shared.schemas import Alert, OrderEvent
from shared.streams import ALERTS
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
    read,
    session,
    standin_fixture,  # noqa: F401  (the ``standin`` fixture)
    stop_place,
    stop_replace,
)

D1, D2 = "2018-03-01", "2018-03-02"


def make(fake_redis, tmp_path: Path, standin: AlpacaStandIn, *, reconcile: bool = True) -> Executor:
    return alpaca_executor(fake_redis, tmp_path, standin, reconcile=reconcile)


def events(r, kind: str | None = None) -> list[tuple[str, str]]:
    return [(e.kind, e.event) for e in orders(r) if kind is None or e.kind == kind]


def confirm_entry(ex: Executor, qty: int = 100) -> str:
    it = entry(D1, "AAA", qty, level=50.0, stop=48.0)
    for m in (session(D1, "PRE_MARKET"), it, session(D1, "OPEN"), daily(D1, ("AAA", 50.5, 52.0, 50.0, 51.0))):
        ex.handle(m, None)
    return coid(it.intent_id)


def test_entry_then_partial_and_full_fill_each_once(fake_redis, tmp_path: Path, standin: AlpacaStandIn) -> None:
    ex = make(fake_redis, tmp_path, standin)
    c = confirm_entry(ex)
    assert events(fake_redis) == [("entry", "accepted")]
    standin.fill(c, 40, 50.4)
    poll(ex)
    poll(ex)
    standin.fill(c, 60, 50.6)
    poll(ex)
    poll(ex)
    evs = orders(fake_redis)
    assert [(e.event, e.fill_qty, e.filled_qty) for e in evs] == [("accepted", 0, 0), ("partially_filled", 40, 40), ("filled", 60, 100)]
    assert evs[2].fill_price == pytest.approx(50.6) and evs[2].avg_fill_price == pytest.approx(50.52)
    assert evs[2].stop_price == 48.0 and evs[2].broker_order_id == standin.by_client_id(c).id
    assert len(standin.posts) == 1
    periodic = [x for x in read(fake_redis, "avwap:broker") if x.reason == "periodic"]
    assert len(periodic) == 1 and periodic[0].positions[0].qty == 40  # the first poll; then every BROKER_SNAPSHOT_INTERVAL_S
    assert periodic[0].open_orders[0].status == "partially_filled"
    clean_ledger(fake_redis, tmp_path)


@pytest.mark.parametrize("fault", ["timeout", "drop"])
def test_unknown_outcome_is_looked_up_never_sent_twice(fake_redis, tmp_path: Path, standin: AlpacaStandIn, fault: str) -> None:
    ex = make(fake_redis, tmp_path, standin)
    standin.fault("POST", "/v2/orders", fault)  # the broker takes the order, the answer never arrives
    c = confirm_entry(ex)
    assert len(standin.orders_for(c)) == 1 and len(standin.posts) == 1
    assert events(fake_redis) == [("entry", "accepted")]
    assert orders(fake_redis)[0].broker_order_id == standin.by_client_id(c).id
    clean_ledger(fake_redis, tmp_path)


def test_rate_limited_submit_is_resent_once_with_the_same_client_id(fake_redis, tmp_path: Path, standin: AlpacaStandIn) -> None:
    ex = make(fake_redis, tmp_path, standin)
    standin.fault("POST", "/v2/orders", "429")
    c = confirm_entry(ex)
    assert len(standin.orders_for(c)) == 1 and events(fake_redis) == [("entry", "accepted")]
    clean_ledger(fake_redis, tmp_path)


@pytest.mark.parametrize("fault,created", [("500", False), ("503", False), ("502-after", True), ("504-after", True)])
def test_server_error_on_submit_gives_one_broker_order(fake_redis, tmp_path: Path, standin: AlpacaStandIn,
                                                       fault: str, created: bool) -> None:
    """A 5xx on POST /v2/orders is an unknown outcome: looked up by client id, then (only if the
    broker does not have it) resent with the same client id."""
    ex = make(fake_redis, tmp_path, standin)
    standin.fault("POST", "/v2/orders", fault)
    c = confirm_entry(ex)
    posts = [r for r in standin.requests if r == ("POST", "/v2/orders")]
    assert len(posts) == (1 if created else 2)  # resent only when the first never landed
    assert len(standin.orders_for(c)) == 1 and events(fake_redis) == [("entry", "accepted")]
    assert orders(fake_redis)[0].broker_order_id == standin.by_client_id(c).id
    assert read(fake_redis, "avwap:rejections") == []
    clean_ledger(fake_redis, tmp_path)


def test_duplicate_client_id_422_resolves_to_the_existing_order(fake_redis, tmp_path: Path, standin: AlpacaStandIn) -> None:
    ex = make(fake_redis, tmp_path, standin)
    it = entry(D1, "AAA", 100, level=50.0, stop=48.0)
    existing = standin._new_order({"symbol": "AAA", "qty": "100", "side": "buy", "type": "market",
                                   "client_order_id": coid(it.intent_id)})
    for m in (session(D1, "PRE_MARKET"), it, daily(D1, ("AAA", 50.5, 52.0, 50.0, 51.0))):
        ex.handle(m, None)
    assert len(standin.orders_for(coid(it.intent_id))) == 1
    evs = orders(fake_redis)
    assert [e.event for e in evs] == ["accepted"] and evs[0].broker_order_id == existing.id
    clean_ledger(fake_redis, tmp_path)


def test_unknown_outcome_and_lookup_failing_resolves_on_the_next_poll(fake_redis, tmp_path: Path, standin: AlpacaStandIn) -> None:
    ex = make(fake_redis, tmp_path, standin)
    standin.fault("POST", "/v2/orders", "drop")
    standin.fault("GET", "/v2/orders:by_client_order_id", "503")
    c = confirm_entry(ex)
    assert orders(fake_redis) == []
    poll(ex)
    assert len(standin.orders_for(c)) == 1 and events(fake_redis) == [("entry", "accepted")]
    clean_ledger(fake_redis, tmp_path)


def _held(ex: Executor, standin: AlpacaStandIn, fake_redis) -> str:
    c = confirm_entry(ex)
    standin.fill(c, 100, 50.5)
    poll(ex)
    return c


def test_exit_cancels_the_stop_holding_the_shares_then_sells(fake_redis, tmp_path: Path, standin: AlpacaStandIn) -> None:
    ex = make(fake_redis, tmp_path, standin)
    _held(ex, standin, fake_redis)
    si = stop_place(D2, "AAA", 100, 48.0, session(D2, "WINDOW_OPEN").ts)
    ex.handle(si, None)
    xi = exit_intent(D2, "AAA", 100, session(D2, "WINDOW_OPEN").ts + 1)
    ex.handle(xi, None)
    assert events(fake_redis)[-3:] == [("stop", "accepted"), ("stop", "cancelled"), ("exit", "accepted")]
    assert standin.by_client_id(coid(si.intent_id)).status == "canceled"
    assert standin.by_client_id(coid(xi.intent_id)).side == "sell"
    assert len(standin.orders_for(coid(xi.intent_id))) == 1
    clean_ledger(fake_redis, tmp_path)


def test_exit_blocked_by_an_order_placed_outside_the_system_cancels_it_and_retries(fake_redis, tmp_path: Path, standin: AlpacaStandIn) -> None:
    ex = make(fake_redis, tmp_path, standin)
    _held(ex, standin, fake_redis)
    outside = standin.external_order("AAA", "sell", 100, stop_price=47.0)
    xi = exit_intent(D2, "AAA", 100, session(D2, "OPEN").ts)
    ex.handle(xi, None)
    assert standin.orders[outside.id].status == "canceled"
    assert len(standin.orders_for(coid(xi.intent_id))) == 1 and events(fake_redis, "exit") == [("exit", "accepted")]
    clean_ledger(fake_redis, tmp_path)


def test_exit_waits_for_a_stop_stuck_in_pending_cancel(fake_redis, tmp_path: Path, standin: AlpacaStandIn) -> None:
    ex = make(fake_redis, tmp_path, standin)
    _held(ex, standin, fake_redis)
    si = stop_place(D2, "AAA", 100, 48.0, session(D2, "WINDOW_OPEN").ts)
    ex.handle(si, None)
    standin.stick_pending_cancel(coid(si.intent_id))
    xi = exit_intent(D2, "AAA", 100, session(D2, "WINDOW_OPEN").ts + 1)
    ex.handle(xi, None)
    poll(ex)
    assert standin.orders_for(coid(xi.intent_id)) == [] and events(fake_redis, "exit") == []
    standin.finish_cancel(coid(si.intent_id))
    poll(ex)
    assert len(standin.orders_for(coid(xi.intent_id))) == 1
    assert events(fake_redis)[-2:] == [("stop", "cancelled"), ("exit", "accepted")]
    clean_ledger(fake_redis, tmp_path)


def test_replace_native_and_cancel_and_new_in_pending_state(fake_redis, tmp_path: Path, standin: AlpacaStandIn) -> None:
    ex = make(fake_redis, tmp_path, standin)
    _held(ex, standin, fake_redis)
    ts = session(D2, "WINDOW_OPEN").ts
    si = stop_place(D2, "AAA", 100, 48.0, ts)
    ex.handle(si, None)
    r1 = stop_replace(D2, "AAA", 100, 49.0, coid(si.intent_id), ts + 1)
    ex.handle(r1, None)  # accepted at the exchange: native PATCH
    old = standin.by_client_id(coid(si.intent_id))
    assert old.status == "replaced" and standin.by_client_id(coid(r1.intent_id)).replaces == old.id
    standin.set_status(coid(r1.intent_id), "pending_new")  # Alpaca refuses PATCH now
    r2 = stop_replace(D2, "AAA", 100, 49.5, coid(r1.intent_id), ts + 2)
    ex.handle(r2, None)
    assert standin.by_client_id(coid(r1.intent_id)).status == "canceled"
    new = standin.by_client_id(coid(r2.intent_id))
    assert new.status == "new" and new.stop_price == 49.5 and new.replaces is None  # routed: the market is open
    stop_evs = [e for e in orders(fake_redis) if e.kind == "stop"]
    assert [(e.event, e.client_order_id) for e in stop_evs] == [
        ("accepted", coid(si.intent_id)), ("replaced", coid(r1.intent_id)), ("replaced", coid(r2.intent_id))]
    assert coid(si.intent_id) in stop_evs[1].reason and coid(r1.intent_id) in stop_evs[2].reason
    assert all(e.intent_id == i.intent_id for e, i in zip(stop_evs, (si, r1, r2), strict=True))
    clean_ledger(fake_redis, tmp_path)


def test_restart_reconciliation_resolves_the_outbox_and_flags_foreign_orders(fake_redis, tmp_path: Path, standin: AlpacaStandIn) -> None:
    ex = make(fake_redis, tmp_path, standin)
    standin.fault("POST", "/v2/orders", "drop")
    standin.fault("GET", "/v2/orders:by_client_order_id", "500")
    c = confirm_entry(ex)  # outcome unknown; the process "dies" here
    assert orders(fake_redis) == []
    standin.external_order("ZZZ", "sell", 5, stop_price=10.0)
    standin.set_position("ZZZ", 5, 11.0)  # bought outside the system: not in the ledger
    ex2 = make(fake_redis, tmp_path, standin, reconcile=False)
    ex2.handle(entry(D1, "BBB", 10, 20.0, 19.0), None)  # before reconciliation: refused
    assert read(fake_redis, "avwap:rejections")[-1].reasons == ["EXECUTOR_UNRECONCILED"]
    assert ex2.reconcile()
    assert len(standin.orders_for(c)) == 1 and events(fake_redis) == [("entry", "accepted")]
    alerts = [a for a in read(fake_redis, ALERTS) if isinstance(a, Alert) and a.kind == "recon_mismatch"]
    assert len(alerts) == 2 and all("ZZZ" in a.title for a in alerts)
    assert any("broker holds 5, the ledger says 0" in a.title for a in alerts)
    snap = read(fake_redis, "avwap:broker")[-1]
    assert snap.reason == "reconcile" and snap.reconciled and {o.symbol for o in snap.open_orders} == {"AAA", "ZZZ"}
    clean_ledger(fake_redis, tmp_path)


def test_keys_go_only_in_headers(fake_redis, tmp_path: Path, standin: AlpacaStandIn) -> None:
    ex = make(fake_redis, tmp_path, standin)
    confirm_entry(ex)
    assert standin.headers_seen[-1]["APCA-API-KEY-ID"] == KEY
    for e in orders(fake_redis):
        assert isinstance(e, OrderEvent) and KEY not in str(e) and SECRET not in str(e)


def test_while_unreconciled_entries_are_refused_but_exits_work(fake_redis, tmp_path: Path, standin: AlpacaStandIn) -> None:
    ex = make(fake_redis, tmp_path, standin)
    _held(ex, standin, fake_redis)
    ex2 = make(fake_redis, tmp_path, standin, reconcile=False)
    standin.fault("GET", "/v2/orders", "500")
    assert not ex2.reconcile()  # the broker failed mid-reconciliation: still unreconciled
    ex2.handle(entry(D2, "BBB", 10, 20.0, 19.0), None)
    assert read(fake_redis, "avwap:rejections")[-1].reasons == ["EXECUTOR_UNRECONCILED"]
    xi = exit_intent(D2, "AAA", 100, session(D2, "OPEN").ts)
    ex2.handle(xi, None)
    assert events(fake_redis, "exit") == [("exit", "accepted")] and len(standin.orders_for(coid(xi.intent_id))) == 1
    clean_ledger(fake_redis, tmp_path)



def test_standin_speaks_alpacas_shapes_for_the_other_endpoints(standin: AlpacaStandIn) -> None:
    from alpaca.trading.client import TradingClient

    client = TradingClient(KEY, SECRET, paper=True, url_override=standin.url)
    assert client.get_clock().is_open is True
    assert str(client.get_calendar()[0].date) == "2018-03-02"  # the NYSE calendar from the stand-in clock
    standin.set_position("AAA", 10, 50.0)
    assert client.get_open_position("AAA").qty == "10"
    order = client.close_position("AAA")
    assert order.side.value == "sell" and order.qty == "10"
    assert client.get_account().status.value == "ACTIVE"


def test_a_crash_right_after_an_outbox_write_loses_no_event(fake_redis, tmp_path: Path, standin: AlpacaStandIn,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """An exit cancels the stop (its ``cancelled`` event is in hand), writes the exit's outbox record,
    and the process dies before the submit. The outbox write must not persist the stop's new state
    without its event: after the restart the stop's cancel and the exit are each reported once."""
    from services.executor import worker

    class Killed(BaseException):
        pass

    ex = make(fake_redis, tmp_path, standin)
    _held(ex, standin, fake_redis)
    si = stop_place(D2, "AAA", 100, 48.0, session(D2, "WINDOW_OPEN").ts)
    ex.handle(si, None)
    xi = exit_intent(D2, "AAA", 100, session(D2, "WINDOW_OPEN").ts + 1)

    def crash(name: str) -> None:
        if name == "after_outbox":
            raise Killed

    monkeypatch.setattr(worker, "crash_point", crash)
    with pytest.raises(Killed):
        ex.handle(xi, None)
    monkeypatch.undo()
    assert standin.by_client_id(coid(si.intent_id)).status == "canceled" and standin.orders_for(coid(xi.intent_id)) == []
    ex2 = make(fake_redis, tmp_path, standin)  # restart: reconciliation resolves the outbox
    ex2.handle(xi, None)  # the exit intent is redelivered
    assert events(fake_redis)[-3:] == [("stop", "accepted"), ("stop", "cancelled"), ("exit", "accepted")]
    assert len(standin.orders_for(coid(xi.intent_id))) == 1
    cancelled = [e for e in orders(fake_redis) if e.event == "cancelled"]
    assert len(cancelled) == 1 and f"exit_intent={xi.intent_id}" in cancelled[0].reason
    clean_ledger(fake_redis, tmp_path)
