"""Entry gates at the moment an entry is SENT, not only when its intent arrives.

An entry waits in ``pending`` from its intent (PRE_MARKET) until it is confirmed (D's open on daily
bars, a 10-minute bar intraday). Whatever changed meanwhile — ``avwap kill-switch on``, a failed
reconciliation, a LIVE confirmation token withdrawn — must stop it then: the pending entry leaves
as a ``Rejection`` with the gate's reason code and one alert, and no order reaches the broker.
Exits and stops are never blocked.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.executor.worker import Executor
from shared.clock import dt_to_ns, ny_datetime
from shared.controls import kill_switch_value
from shared.schemas import Alert
from shared.streams import ALERTS, KILL_SWITCH_KEY
from standins.alpaca_api import AlpacaStandIn
from tests.executor_helpers import (
    alpaca_executor,
    clean_ledger,
    coid,
    daily,
    entry,
    exit_intent,
    feed,
    minute,
    orders,
    poll,
    read,
    rejections,
    session,
    sim_executor,
    snapshots,
    standin_fixture,  # noqa: F401  (the ``standin`` fixture)
)

D1, D2 = "2018-03-01", "2018-03-02"


def sim(fake_redis, tmp_path: Path, **settings: object) -> Executor:
    return sim_executor(fake_redis, tmp_path, settings=settings, sim_slippage_bps=0.0)


def kill(r, on: bool = True) -> None:
    r.set(KILL_SWITCH_KEY, kill_switch_value(on, "test", 1.0))


def blocked_alerts(r) -> list[Alert]:
    return [a for a in read(r, ALERTS) if isinstance(a, Alert) and a.kind == "entry_blocked"]


def test_kill_switch_after_the_intent_blocks_the_daily_confirmation(fake_redis, tmp_path: Path) -> None:
    """The audit's reproduction: PRE_MARKET, intent, kill-switch on, OPEN, daily bar -> no order."""
    ex = sim(fake_redis, tmp_path)
    it = entry(D1, "AAA", 100, level=50.0, stop=48.0)
    feed(ex, session(D1, "PRE_MARKET"), it)
    assert rejections(fake_redis) == [] and it.intent_id in ex.load().pending  # accepted for confirmation
    kill(fake_redis)
    feed(ex, session(D1, "OPEN"), daily(D1, ("AAA", 50.5, 52.0, 50.0, 51.0)), session(D1, "CLOSE"))
    assert orders(fake_redis) == []
    rj = rejections(fake_redis)
    assert len(rj) == 1 and rj[0].reasons == ["KILL_SWITCH_ON"] and rj[0].intent_id == it.intent_id
    assert rj[0].candidate_id == it.candidate_id and "submit time" in rj[0].detail
    assert rj[0].ts == daily(D1, ("AAA", 50.5, 52.0, 50.0, 51.0)).bars[0].ts  # the moment it would have been sent
    assert ex.load().pending == {}  # no ENTRY_NOT_CONFIRMED at the close either
    alerts = blocked_alerts(fake_redis)
    assert len(alerts) == 1 and alerts[0].severity == "warning" and "KILL_SWITCH_ON" in alerts[0].title
    assert snapshots(fake_redis)[-1].positions == []
    recs = clean_ledger(fake_redis, tmp_path, "PAPER_SIM")
    assert [r["reasons"] for r in recs] == [["KILL_SWITCH_ON"]]


def test_kill_switch_during_intraday_confirmation_blocks_the_confirmed_entry(fake_redis, tmp_path: Path) -> None:
    ex = sim(fake_redis, tmp_path)
    it = entry(D1, "AAA", 10, level=50.0, stop=48.0)
    feed(ex, session(D1, "PRE_MARKET"), it, session(D1, "OPEN"))
    price = {"09:40": 50.2, "09:50": 50.1}
    for m in range(31, 56):
        if m == 45:
            kill(fake_redis)  # mid-way through the bar that confirms at 09:50
        c = price.get(f"09:{m:02d}", 49.9 if m < 40 else 50.05)
        feed(ex, minute(D1, f"09:{m:02d}", ("AAA", c, c + 0.1, c - 0.1, c)))
    assert orders(fake_redis) == []
    rj = rejections(fake_redis)
    assert [r.reasons for r in rj] == [["KILL_SWITCH_ON"]] and rj[0].ts == dt_to_ns(ny_datetime(D1, "09:50"))
    assert len(blocked_alerts(fake_redis)) == 1


def test_the_gate_is_read_when_sending_so_a_switch_turned_off_again_lets_the_entry_go(fake_redis, tmp_path: Path) -> None:
    ex = sim(fake_redis, tmp_path)
    it = entry(D1, "AAA", 100, level=50.0, stop=48.0)
    feed(ex, session(D1, "PRE_MARKET"), it)
    kill(fake_redis)
    feed(ex, session(D1, "OPEN"))
    kill(fake_redis, on=False)
    feed(ex, daily(D1, ("AAA", 50.5, 52.0, 50.0, 51.0)))
    assert [e.event for e in orders(fake_redis)] == ["accepted", "filled"] and rejections(fake_redis) == []


@pytest.mark.parametrize("how", ["unreadable", "env"])
def test_an_unreadable_switch_or_the_env_switch_blocks_at_submit_time(fake_redis, tmp_path: Path, how: str) -> None:
    it = entry(D1, "AAA", 100, level=50.0, stop=48.0)
    ex = sim(fake_redis, tmp_path)
    feed(ex, session(D1, "PRE_MARKET"), it)
    if how == "unreadable":
        fake_redis.set(KILL_SWITCH_KEY, b"{garbage")  # fail closed: unreadable blocks, named as risk names it
    else:  # the process restarted with KILL_SWITCH=1 while the entry was pending
        ex = sim(fake_redis, tmp_path, kill_switch=True)
    feed(ex, daily(D1, ("AAA", 50.5, 52.0, 50.0, 51.0)))
    want = "KILL_SWITCH_UNREADABLE" if how == "unreadable" else "KILL_SWITCH_ON"
    assert orders(fake_redis) == [] and [r.reasons for r in rejections(fake_redis)] == [[want]]


def test_exits_and_stops_still_go_through_with_the_switch_on(fake_redis, tmp_path: Path) -> None:
    from tests.executor_helpers import stop_place

    ex = sim(fake_redis, tmp_path)
    feed(ex, session(D1, "PRE_MARKET"), entry(D1, "AAA", 100, level=50.0, stop=48.0), session(D1, "OPEN"),
         daily(D1, ("AAA", 50.5, 52.0, 50.0, 51.0)), session(D1, "CLOSE"), session(D2, "PRE_MARKET"))
    kill(fake_redis)
    ts = session(D2, "WINDOW_OPEN").ts
    feed(ex, entry(D2, "BBB", 10, 20.0, 19.0), stop_place(D2, "AAA", 100, 47.0, ts), exit_intent(D2, "AAA", 100, ts + 1),
         daily(D2, ("AAA", 51.0, 52.0, 50.5, 51.5), ("BBB", 21.0, 21.5, 20.5, 21.0)))
    assert [(e.kind, e.event) for e in orders(fake_redis)][2:] == [
        ("stop", "accepted"), ("stop", "cancelled"), ("exit", "accepted"), ("exit", "filled")]
    assert [r.reasons for r in rejections(fake_redis)] == [["KILL_SWITCH_ON"]]  # BBB, on arrival


# -- Alpaca modes: reconciliation, the LIVE gate, a resend from the outbox -------------------------
def _pending(ex: Executor, it) -> None:
    feed(ex, session(D1, "PRE_MARKET"), it, session(D1, "OPEN"))
    assert it.intent_id in ex.load().pending


def test_unreconciled_at_submit_time_blocks_the_pending_entry(fake_redis, tmp_path: Path, standin: AlpacaStandIn) -> None:
    ex = alpaca_executor(fake_redis, tmp_path, standin)
    it = entry(D1, "AAA", 100, level=50.0, stop=48.0)
    _pending(ex, it)
    # the executor restarts and its start-up reconciliation fails (the broker is down)
    ex2 = alpaca_executor(fake_redis, tmp_path, standin, reconcile=False)
    standin.fault("GET", "/v2/orders", "500")
    assert not ex2.reconcile()
    feed(ex2, daily(D1, ("AAA", 50.5, 52.0, 50.0, 51.0)))
    assert standin.posts == [] and orders(fake_redis) == []
    assert [r.reasons for r in rejections(fake_redis)] == [["EXECUTOR_UNRECONCILED"]]
    assert len(blocked_alerts(fake_redis)) == 1
    clean_ledger(fake_redis, tmp_path)


def test_live_gate_closed_at_submit_time_blocks_the_pending_entry(fake_redis, tmp_path: Path, standin: AlpacaStandIn) -> None:
    token = tmp_path / "live_token"
    token.write_text("tok-123\n")
    live = {"live_trading": True, "live_confirm_token": "tok-123", "live_confirm_token_file": str(token)}
    ex = alpaca_executor(fake_redis, tmp_path, standin, mode="LIVE", settings=live)
    it = entry(D1, "AAA", 100, level=50.0, stop=48.0)
    _pending(ex, it)  # the gate was open when the intent arrived
    token.unlink()  # the operator withdraws the confirmation token
    feed(ex, daily(D1, ("AAA", 50.5, 52.0, 50.0, 51.0)))
    assert standin.posts == []
    rj = rejections(fake_redis)
    assert [r.reasons for r in rj] == [["LIVE_GATE_CLOSED"]] and "no confirmation token on file" in rj[0].detail
    # with the token back, the next entry goes out: the gate is re-read, never latched
    token.write_text("tok-123\n")
    it2 = entry(D2, "BBB", 10, level=20.0, stop=19.0)
    feed(ex, session(D1, "CLOSE"), session(D2, "PRE_MARKET"), it2, session(D2, "OPEN"), daily(D2, ("BBB", 20.5, 21.0, 20.0, 20.8)))
    assert [e.event for e in orders(fake_redis)] == ["accepted"] and len(standin.orders_for(coid(it2.intent_id))) == 1
    clean_ledger(fake_redis, tmp_path, "LIVE")


def test_a_resend_from_the_outbox_is_re_gated(fake_redis, tmp_path: Path, standin: AlpacaStandIn) -> None:
    """The first submit got a 503 and the lookup failed (outcome unknown). By the next poll the kill
    switch is on: the lookup finds nothing, and the entry is NOT sent again; it is blocked once. If the
    first request lands after all, the poll still finds it and reports it."""
    ex = alpaca_executor(fake_redis, tmp_path, standin)
    it = entry(D1, "AAA", 100, level=50.0, stop=48.0)
    standin.fault("POST", "/v2/orders", "503")
    standin.fault("GET", "/v2/orders:by_client_order_id", "503")
    feed(ex, session(D1, "PRE_MARKET"), it, session(D1, "OPEN"), daily(D1, ("AAA", 50.5, 52.0, 50.0, 51.0)))
    assert ex.load().orders[coid(it.intent_id)].status == "unknown" and standin.orders_for(coid(it.intent_id)) == []
    assert [r for r in standin.requests if r == ("POST", "/v2/orders")] == [("POST", "/v2/orders")]
    kill(fake_redis)
    posts = standin.requests.count(("POST", "/v2/orders"))
    poll(ex)
    poll(ex)
    assert standin.requests.count(("POST", "/v2/orders")) == posts and standin.orders_for(coid(it.intent_id)) == []
    assert [r.reasons for r in rejections(fake_redis)] == [["KILL_SWITCH_ON"]] and orders(fake_redis) == []
    assert ex.load().orders[coid(it.intent_id)].status == "blocked"
    kill(fake_redis, on=False)
    poll(ex)
    assert standin.requests.count(("POST", "/v2/orders")) == posts  # blocked is final: never sent later
    standin._new_order({"symbol": "AAA", "qty": "100", "side": "buy", "type": "market",
                        "client_order_id": coid(it.intent_id)})  # the first request landed late
    poll(ex)
    assert [e.event for e in orders(fake_redis)] == ["accepted"]
    clean_ledger(fake_redis, tmp_path)
