"""Every trading state x every service: an entry, an exit, a stop replace and a cancel in ACTIVE, REDUCING,
HALTED and an unreadable key, through risk's core, the executor (PAPER_SIM simulator, state read from
Redis) and the exits core/worker gate."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from services.exits import core as exits_core
from services.risk.core import Controls, Limits, RiskState, global_codes
from shared.controls import transition
from shared.ids import stable_id
from shared.schemas import Rejection, StopIntent, decode
from shared.streams import INTENTS, TRADING_STATE_KEY
from tests.executor_helpers import (
    coid,
    daily,
    entry,
    exit_intent,
    feed,
    orders,
    rejections,
    session,
    sim_executor,
    stop_place,
    stop_replace,
)
from tests.exits_helpers import Book, at, batch, entry_fill, sell_fill
from tests.test_exits_core import D0, LOWS, confirm_all, minutes_from_lows

STATES = ("ACTIVE", "REDUCING", "HALTED", "UNREADABLE")
D1, D2 = "2018-03-01", "2018-03-02"


def set_state(r: redis.Redis, state: str) -> None:
    if state == "UNREADABLE":
        r.set(TRADING_STATE_KEY, b"{not json")
    else:
        transition(r, state, who="test", source="cli", reason="matrix", ts=1)  # type: ignore[arg-type]


# -- risk: entries only (risk never sees exits, stops or cancels) ---------------------------------------
@pytest.mark.parametrize(("state", "codes"), [("ACTIVE", set()), ("REDUCING", {"KILL_SWITCH_ON"}),
                                              ("HALTED", {"TRADING_HALTED"}), ("UNREADABLE", {"KILL_SWITCH_UNREADABLE"})])
def test_risk_entry_gate_in_each_state(fake_redis: redis.Redis, state: str, codes: set[str]) -> None:
    from services.risk.worker import controls_for
    from shared.settings import load_settings

    set_state(fake_redis, state)
    c = controls_for(fake_redis, load_settings(), None)
    assert isinstance(c, Controls) and c.trading_state == state
    assert global_codes(c, Limits.from_settings(load_settings().risk), RiskState().session) == codes


# -- executor ---------------------------------------------------------------------------------------
EXPECT = {  # state -> (entry, exit, stop replace, cancel)
    "ACTIVE": ("accepted", "accepted", "replaced", "cancelled"),
    "REDUCING": ("KILL_SWITCH_ON", "accepted", "replaced", "cancelled"),
    "HALTED": ("TRADING_HALTED", "TRADING_HALTED", "TRADING_HALTED", "cancelled"),
    "UNREADABLE": ("KILL_SWITCH_UNREADABLE",  # one answer for garbage, as risk gives (issue 20)
                    "accepted", "replaced", "cancelled"),
}


def _held_with_stop(ex, r: redis.Redis) -> str:
    """AAA 100 held (entry filled on D1), a live stop at 47 on D2; returns the stop's client id."""
    feed(ex, session(D1, "PRE_MARKET"), entry(D1, "AAA", 100, 50.0, 48.0), session(D1, "OPEN"),
         daily(D1, ("AAA", 50.5, 52.0, 50.0, 51.0)), session(D1, "CLOSE"), session(D2, "PRE_MARKET"),
         session(D2, "OPEN"))
    si = stop_place(D2, "AAA", 100, 47.0, session(D2, "WINDOW_OPEN").ts)
    feed(ex, si)
    assert [(e.kind, e.event) for e in orders(r) if e.kind == "stop"] == [("stop", "accepted")]
    return coid(si.intent_id)


@pytest.mark.parametrize("state", STATES)
def test_executor_in_each_state(fake_redis: redis.Redis, tmp_path: Path, state: str) -> None:
    r = fake_redis
    ex = sim_executor(r, tmp_path, sim_slippage_bps=0.0)
    stop = _held_with_stop(ex, r)
    set_state(r, state)
    want_entry, want_exit, want_replace, want_cancel = EXPECT[state]
    ts = session(D2, "WINDOW_OPEN").ts

    # an entry
    feed(ex, entry(D2, "BBB", 10, 20.0, 19.0, ts=ts))
    rj = [x for x in rejections(r) if isinstance(x, Rejection) and x.symbol == "BBB"]
    if want_entry == "accepted":
        assert rj == [] and any(p.intent.symbol == "BBB" for p in ex.load().pending.values())
    else:
        assert [x.reasons for x in rj] == [[want_entry]]

    # a stop replace
    rep = stop_replace(D2, "AAA", 100, 48.5, stop, ts + 1)
    feed(ex, rep)
    ev = [e for e in orders(r) if e.client_order_id == coid(rep.intent_id)]
    if want_replace == "replaced":
        assert [e.event for e in ev] == ["replaced"]
        live = coid(rep.intent_id)
    else:
        assert [e.event for e in ev] == ["rejected"] and ev[0].reason.startswith(want_replace)
        live = stop
        assert ex.load().orders[stop].status == "accepted"  # the protective stop stays at the broker

    # a cancel goes through in every state
    cancel = StopIntent(intent_id=stable_id("si", "cancel", live), symbol="AAA", trade_date=D2, action="cancel",
                        target_client_order_id=live, ts=ts + 2)
    feed(ex, cancel)
    assert [e.event for e in orders(r) if e.client_order_id == live][-1] == want_cancel
    # a first stop for an unprotected position is placed in every state (HALTED's one exception)
    again = stop_place(D2, "AAA", 100, 47.5, ts + 3, tag="again")
    feed(ex, again)
    live = coid(again.intent_id)
    assert [e.event for e in orders(r) if e.client_order_id == live] == ["accepted"]

    # an exit (HALTED: refused, the stop untouched)
    xi = exit_intent(D2, "AAA", 100, ts + 4)
    feed(ex, xi)
    ev = [e for e in orders(r) if e.client_order_id == coid(xi.intent_id)]
    if want_exit == "accepted":
        assert [e.event for e in ev] == ["accepted"]
        assert ex.load().orders[live].status == "cancelled"  # its stop was cancelled first
    else:
        assert [e.event for e in ev] == ["rejected"] and ev[0].reason.startswith(want_exit)
        assert ex.load().orders[live].status == "accepted"


# -- exits --------------------------------------------------------------------------------------------
def _ratchet(book: Book) -> None:
    """A position opened at 09:55 with its first stop accepted, then the minutes of a higher low at 10:35
    (the ratchet of tests/test_exits_core.py): inside the window that is a stop replace."""
    confirm_all(book, book.order(entry_fill("T", 100, 10.5, at(D0, "09:55"), D0, stop=9.0), exits_core.History()))
    for b in minutes_from_lows("T", D0, LOWS, start="09:55"):
        confirm_all(book, book.bars(batch([b])))


@pytest.mark.parametrize("state", STATES)
def test_exits_in_each_state(state: str) -> None:
    halted = state == "HALTED"
    book = Book(p=exits_core.Params(halted=halted))
    _ratchet(book)
    pos = book.positions["T"]
    # the first stop is placed in every state (a position is never left without one)
    assert [i.action for i in book.intents][:1] == ["place"] and pos.live_stop_client_order_id
    # a stop replace: sent unless HALTED (then the live stop stays and the desired one waits)
    replaces = [i for i in book.intents if i.action == "replace"]
    if halted:
        assert replaces == [] and book.counts.get(exits_core.C_HALTED, 0) >= 1
        assert pos.desired_stop > pos.live_stop_price == 9.0
    else:
        assert [i.stop_price for i in replaces] == [9.85]
    # a cancel (of an orphan stop) is sent in every state
    book.index.orphans["av-orphan"] = exits_core.Orphan(symbol="ZZZ", client_order_id="av-orphan", reason="orphan")
    out = exits_core.Result()
    exits_core._cancel_orphans(book.index, at(D0, "11:00"), D0, book.p, out)
    assert [(i.action, i.target_client_order_id) for i in out.intents] == [("cancel", "av-orphan")]
    # an exit's fill closes the position in every state (exits records exits, the executor sends them)
    res = book.order(sell_fill("T", 100, 10.6, at(D0, "11:01"), D0))
    assert res.changed["T"].closed


def test_exits_worker_applies_the_state_from_redis_per_message(fake_redis: redis.Redis, tmp_path: Path) -> None:
    """The worker reads the key for each message: the same ratchet is held back while HALTED and sent
    on the next bar once the state is REDUCING again."""
    from services.exits.worker import Exits
    from shared.service import make_context
    from shared.settings import load_settings
    from tests.exits_helpers import stop_event

    settings = load_settings(bars_dir=str(tmp_path / "bars"), artifacts_dir=str(tmp_path / "art"))
    ex = Exits(make_context("exits", settings, fake_redis))
    intents = []

    def run(msg) -> None:
        ex.transact(msg, None)
        got = [decode(f[b"data"]) for _, f in fake_redis.xrange(INTENTS)]
        for it in got[len(intents):]:
            intents.append(it)
            ev = "accepted" if it.action == "place" else "replaced"
            ex.transact(stop_event(it, ev), None)

    run(entry_fill("T", 100, 10.5, at(D0, "09:55"), D0, stop=9.0))
    set_state(fake_redis, "HALTED")
    for b in minutes_from_lows("T", D0, LOWS, start="09:55"):
        run(batch([b]))
    assert [i.action for i in intents] == ["place"]
    set_state(fake_redis, "REDUCING")
    run(batch([bar_after()]))
    assert [i.action for i in intents] == ["place", "replace"] and intents[1].stop_price == 9.85


def bar_after():
    from tests.exits_helpers import bar

    return bar("T", at(D0, "10:41"), 10.3, c=10.4)
