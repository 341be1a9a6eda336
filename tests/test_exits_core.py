"""The exits core on crafted series: resolution on entry, higher lows, daily fallback, ratchet, window,
order events, every reconciliation case, bad and out-of-order bars."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.exits import core
from shared.clock import calendar
from shared.ids import client_order_id
from shared.stops import SOURCE_DAILY, SOURCE_INTRADAY, StopRules
from tests.exits_helpers import (
    MIN,
    Book,
    at,
    bar,
    batch,
    close_ns,
    entry_fill,
    sell_fill,
    session,
    snapshot,
    stop_event,
    stop_order,
)

D0, D1, D2 = "2019-02-11", "2019-02-12", "2019-02-13"
EARLY = "2018-11-23"  # the day after Thanksgiving: 13:00 close
LOWS = [10.0, 9.8, 9.9, 9.7, 9.9, 10.1, 9.95, 10.2, 10.3]  # 5-minute lows: pivots 9.8, 9.7, 9.95 -> HL 9.95


def minutes_from_lows(sym: str, d: str, lows5: list[float], start: str = "09:30") -> list:
    out = []
    t0 = at(d, start)
    for j, lo in enumerate(lows5):
        for k in range(5):
            out.append(bar(sym, t0 + (5 * j + k + 1) * MIN, lo + (0.02 if k else 0.0), c=lo + 0.15))
    return out


def opened(book: Book, sym: str = "T", *, ts: int | None = None, price: float = 10.5, stop: float = 9.0,
           qty: int = 100, hist=None, d: str = D0):
    ts = at(d, "10:00") if ts is None else ts
    res = book.order(entry_fill(sym, qty, price, ts, d, stop=stop), hist or core.History())
    return res


def confirm_all(book: Book, res: core.Result) -> None:
    """The executor accepts every intent of ``res``."""
    for it in res.intents:
        ev = "accepted" if it.action == "place" else ("replaced" if it.action == "replace" else "cancelled")
        book.order(stop_event(it, ev))


# -- opening -----------------------------------------------------------------------------------
def test_entry_fill_resolves_the_stop_from_the_bars_and_places_it_in_the_window() -> None:
    book = Book()
    hist = core.History(minutes=minutes_from_lows("T", D0, LOWS))  # 09:31..10:15
    res = opened(book, ts=at(D0, "10:15"), price=10.6, stop=9.0, hist=hist)
    pos = book.positions["T"]
    assert (pos.qty, pos.initial_stop, pos.desired_stop, pos.stop_source) == (100, 9.0, 9.85, SOURCE_INTRADAY)
    assert (pos.stop_ref_ts, pos.stop_ref_low) == (at(D0, "10:05"), 9.95)
    assert [e.kind for e in res.events] == ["STOP_RESOLVED", "STOP_SUBMITTED"]
    resolved = res.events[0]
    assert (resolved.stop_price, resolved.previous_stop, resolved.ref_low, resolved.buffer) == (9.85, 9.0, 9.95, 0.10)
    (it,) = res.intents
    assert (it.action, it.qty, it.stop_price, it.ts, it.trade_date) == ("place", 100, 9.85, at(D0, "10:15"), D0)
    assert book.index.open == ["T"] and pos.pending is not None and pos.current_stop == 9.85
    confirm_all(book, res)
    assert (pos.live_stop_client_order_id, pos.live_stop_price, pos.pending) == (client_order_id(it.intent_id), 9.85, None)


def test_candidate_at_or_above_the_fill_keeps_the_initial_stop() -> None:
    book = Book()
    hist = core.History(minutes=minutes_from_lows("T", D0, LOWS))
    res = opened(book, ts=at(D0, "10:15"), price=9.80, stop=9.0, hist=hist)  # HL stop 9.85 >= fill 9.80
    assert book.positions["T"].desired_stop == 9.0 and "not below the fill price" in res.events[0].reason
    assert res.intents[0].stop_price == 9.0


def test_initial_stop_is_floored_to_the_cent() -> None:
    book = Book()
    opened(book, stop=9.4567)
    assert book.positions["T"].initial_stop == 9.45 and book.intents[0].stop_price == 9.45


def test_outside_the_window_the_stop_is_recorded_and_sent_at_window_open() -> None:
    book = Book()
    res = opened(book, ts=close_ns(D0), price=10.5, stop=9.0)  # a daily-mode fill at the close
    assert res.intents == [] and book.positions["T"].current_stop == 0.0
    book.session(session(D1, "PRE_MARKET"))
    book.session(session(D1, "OPEN"))
    assert book.intents == []
    res = book.session(session(D1, "WINDOW_OPEN"))
    (it,) = res.intents
    assert (it.action, it.stop_price, it.ts, it.reason) == ("place", 9.0, at(D1, "09:35"), "window_open")


def test_early_close_moves_the_window_end() -> None:
    rules = StopRules()
    assert core.in_window(at(EARLY, "12:55"), rules) and not core.in_window(at(EARLY, "12:56"), rules)
    assert core.in_window(at(D0, "15:55"), rules) and not core.in_window(at(D0, "15:56"), rules)
    assert not core.in_window(at(D0, "09:34"), rules) and not core.in_window(at("2019-02-16", "10:00"), rules)
    for d, sent in ((EARLY, False), (D0, True)):  # the higher low completes at 13:00
        book = Book()
        confirm_all(book, opened(book, ts=at(d, "10:00"), d=d))
        for b in minutes_from_lows("T", d, LOWS[:8], start="12:20"):
            confirm_all(book, book.bars(batch([b])))
        pos = book.positions["T"]
        assert pos.desired_stop == 9.85 and pos.stop_ts == at(d, "13:00")
        assert (pos.current_stop == 9.85) is sent, d


# -- ratchet -----------------------------------------------------------------------------------
def _after_lows(touch: bool) -> Book:
    book = Book()
    confirm_all(book, opened(book, ts=at(D0, "09:55"), price=10.5, stop=9.0))
    for b in minutes_from_lows("T", D0, LOWS, start="09:55"):  # 09:56 .. 10:40; HL 9.95 complete at 10:35
        confirm_all(book, book.bars(batch([b])))
    for k in range(1, 6):  # 10:41..10:45 low 10.25, then 10:46..10:49 low 10.35 (the 10:50 minute is missing)
        book.bars(batch([bar("T", at(D0, "10:40") + k * MIN, 10.25, c=10.4)]))
    for k in range(6, 10):
        book.bars(batch([bar("T", at(D0, "10:40") + k * MIN, 10.35, c=10.45)]))
    # 10:51 completes the 10:50 bucket: 10.25 becomes a higher low (stop 10.15) on a bar that may touch the stop
    low = 9.80 if touch else 10.30
    confirm_all(book, book.bars(batch([bar("T", at(D0, "10:51"), low, o=10.35, h=10.5, c=10.4)])))
    return book


def test_higher_low_ratchet_sends_a_replace_and_a_bar_touching_the_stop_does_not_ratchet() -> None:
    book = _after_lows(touch=False)
    pos = book.positions["T"]
    rep = [i for i in book.intents if i.action == "replace"]
    assert [i.stop_price for i in rep] == [9.85, 10.15] and all(i.target_client_order_id for i in rep)
    assert book.kinds() == ["STOP_RESOLVED", "STOP_SUBMITTED", "STOP_RATCHET", "STOP_REPLACED", "STOP_RATCHET",
                            "STOP_REPLACED"]
    r1 = book.events[2]
    assert (r1.stop_price, r1.previous_stop, r1.ref_low, r1.ref_bar_ts, r1.ts) == (9.85, 9.0, 9.95, at(D0, "10:30"), at(D0, "10:35"))
    assert (pos.desired_stop, pos.live_stop_price, pos.stop_ref_low) == (10.15, 10.15, 10.25)
    touched = _after_lows(touch=True)
    pos = touched.positions["T"]
    assert (pos.desired_stop, pos.current_stop) == (9.85, 9.85) and touched.counts[core.C_TRIGGER] == 1


def test_daily_fallback_ratchets_on_daily_bars_only_when_the_session_had_no_minutes() -> None:
    book = Book()
    days = calendar().sessions_in_range("2019-01-02", "2019-01-31")
    mk = bar
    hist = [mk("T", close_ns(d), lo, o=lo + 0.5, h=lo + 1, c=lo + 0.7) for d, lo in zip(days[:5], [10, 9.5, 10.2, 10.6, 10.4], strict=True)]
    opened(book, ts=close_ns(days[4]), price=11.0, stop=9.0, hist=core.History(daily=hist), d=days[4])
    pos = book.positions["T"]
    assert (pos.desired_stop, pos.stop_source) == (9.4, SOURCE_DAILY)
    book.bars(batch([mk("T", close_ns(days[5]), 10.9, o=11, h=11.5, c=11.3)], tf="1d", d=days[5]))
    assert (pos.desired_stop, pos.stop_source, pos.stop_ref_low) == (10.3, SOURCE_DAILY, 10.4)
    # a session with minutes: its daily bar does not ratchet (the minutes drove it)
    book.bars(batch([mk("T", at(days[6], "10:00"), 11.0, c=11.2)], d=days[6]))
    book.bars(batch([mk("T", close_ns(days[6]), 10.8, o=11, h=11.6, c=11.5)], tf="1d", d=days[6]))
    assert pos.desired_stop == 10.3 and pos.tracker.daily[-1].low == 10.8
    book.bars(batch([mk("T", close_ns(days[7]), 11.2, o=11.5, h=12, c=11.8)], tf="1d", d=days[7]))
    assert (pos.desired_stop, pos.stop_ref_low) == (10.7, 10.8)  # day 6's low became a swing low


@st.composite
def price_paths(draw):
    days = calendar().sessions_in_range("2019-02-04", "2019-02-15")[: draw(st.integers(1, 4))]
    steps = []
    price = 50.0
    for d in days:
        for k in sorted(draw(st.sets(st.integers(1, 390), max_size=80))):
            price = max(5.0, price + draw(st.sampled_from([-1.5, -0.4, -0.1, 0.0, 0.1, 0.25, 0.6, 3.0])))
            lo = round(price - draw(st.floats(0, 0.5)), 2)
            steps.append(("1m", bar("T", at(d, "09:30") + k * MIN, lo, o=round(price, 2), h=round(price + 0.3, 2),
                                   c=round(max(lo, price - 0.1), 2))))
        if draw(st.booleans()):
            steps.append(("1d", bar("T", close_ns(d), round(price - 2, 2), o=round(price, 2), h=round(price + 1, 2),
                                   c=round(price, 2))))
        if draw(st.booleans()):
            steps.append(("window", d))
    for _ in range(draw(st.integers(0, 6))):  # late and repeated bars
        if steps:
            steps.insert(draw(st.integers(0, len(steps))), steps[draw(st.integers(0, len(steps) - 1))])
    return days[0], steps


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(path=price_paths(), confirm=st.booleans())
def test_the_stop_series_is_non_decreasing_for_any_bar_sequence(path, confirm: bool) -> None:
    d0, steps = path
    book = Book()
    opened(book, ts=at(d0, "09:30"), price=50.0, stop=45.0, d=d0)
    desired, current, sent = [45.0], [0.0], []
    for kind, x in steps:
        if kind == "window":
            res = book.session(session(x, "WINDOW_OPEN"))
        else:
            res = book.bars(batch([x], tf=kind))
        if confirm:
            confirm_all(book, res)
        pos = book.positions["T"]
        desired.append(pos.desired_stop)
        current.append(pos.current_stop)
        sent += [i.stop_price for i in res.intents]
    assert desired == sorted(desired) and sent == sorted(sent)
    if confirm:
        assert current[1:] == sorted(current[1:])  # once sent, the stop at the broker only rises
    ratchets = [e for e in book.events if e.kind == "STOP_RATCHET"]
    assert all(e.stop_price > e.previous_stop for e in ratchets)


# -- bad input ---------------------------------------------------------------------------------
def test_stale_duplicate_bad_and_unheld_bars_are_counted_and_never_loosen() -> None:
    book = Book()
    confirm_all(book, opened(book, ts=at(D0, "09:55"), price=10.5, stop=9.0))
    bars = minutes_from_lows("T", D0, LOWS, start="09:55")
    for b in bars:
        book.bars(batch([b]))
    pos = book.positions["T"]
    before = (pos.desired_stop, pos.current_stop)
    book.bars(batch([bars[-1]]))  # redelivered
    book.bars(batch([bars[3]]))  # late
    book.bars(batch([bar("T", bars[-1].ts + MIN, 9.0, o=9.2, h=9.1, c=9.05)]))  # high below the open: rejected
    book.bars(batch([bar("ZZZ", bars[-1].ts + MIN, 1.0)]))
    assert (pos.desired_stop, pos.current_stop) == before
    assert pos.ignored == {core.C_BAR_DUP: 1, core.C_BAR_STALE: 1, core.C_BAR_BAD + "OPEN_OUTSIDE_RANGE": 1}
    assert book.counts[core.C_BAR_UNHELD] == 1


def test_a_gap_down_and_a_halt_never_loosen_the_stop() -> None:
    book = Book()
    confirm_all(book, opened(book, ts=at(D0, "09:55"), price=10.5, stop=9.0))
    for b in minutes_from_lows("T", D0, LOWS, start="09:55"):
        confirm_all(book, book.bars(batch([b])))
    pos = book.positions["T"]
    assert pos.current_stop == 9.85
    # halted for an hour, then reopens far lower: the stop stays where it was
    book.bars(batch([bar("T", at(D0, "12:00"), 7.0, o=7.5, h=7.6, c=7.2)]))
    book.bars(batch([bar("T", at(D0, "12:01"), 7.1, o=7.2, h=7.4, c=7.3)]))
    assert (pos.desired_stop, pos.current_stop) == (9.85, 9.85)


# -- order events ------------------------------------------------------------------------------
def test_rejected_stop_is_recorded_alerted_and_not_resent_unchanged_before_the_timeout() -> None:
    book = Book()
    res = opened(book)
    (it,) = res.intents
    r = book.order(stop_event(it, "rejected", reason="BROKER_REJECTED: stop price must be less than the market",
                                code="STOP_SIDE"))
    assert [(a.kind, a.severity) for a in r.alerts] == [("exit_stop_rejected", "critical")]  # nothing protects it
    pos = book.positions["T"]
    assert book.kinds()[-1] == "STOP_REJECTED" and pos.pending is None and pos.current_stop == 0.0
    n = len(book.intents)
    book.bars(batch([bar("T", at(D0, "10:01"), 10.3, c=10.4)]))
    assert len(book.intents) == n and book.counts[core.C_REJECT_WAIT] == 2  # the rejection's own cycle, the bar
    book.bars(batch([bar("T", at(D0, "10:06"), 10.3, c=10.4)]))  # after INTENT_TIMEOUT_S it is tried again
    assert len(book.intents) == n + 1 and book.intents[-1].action == "place"


def test_insufficient_qty_rejection_blocks_until_the_other_sell_is_done() -> None:
    book = Book()
    (it,) = opened(book).intents
    book.order(stop_event(it, "rejected", reason="INSUFFICIENT_QTY: insufficient qty available",
                           code="INSUFFICIENT_QTY"))
    pos = book.positions["T"]
    assert pos.blocked.startswith("SHARES_HELD_BY_OTHER_SELL") and book.kinds()[-2:] == ["STOP_REJECTED", "STOP_BLOCKED"]
    n = len(book.intents)
    book.bars(batch([bar("T", at(D0, "10:30"), 10.3, c=10.4)]))
    assert len(book.intents) == n
    ev = sell_fill("T", 40, 10.4, at(D0, "10:31"), D0)
    book.order(ev)
    assert pos.qty == 60 and pos.blocked == "" and book.intents[-1].qty == 60  # re-placed for what is held


def test_stop_fill_triggers_and_closes_and_a_partial_fill_keeps_the_rest_covered() -> None:
    book = Book()
    res = opened(book)
    confirm_all(book, res)
    it = res.intents[0]
    book.order(stop_event(it, "partially_filled", at(D0, "10:40"), fill_qty=30, fill_price=8.99))
    pos = book.positions["T"]
    assert (pos.qty, pos.live_stop_qty, pos.closed) == (70, 70, False)
    n = len(book.intents)
    book.bars(batch([bar("T", at(D0, "10:41"), 10.0, c=10.1)]))
    assert len(book.intents) == n  # the live stop already covers the 70 held
    book.order(stop_event(it, "filled", at(D0, "10:42"), fill_qty=70, fill_price=8.98))
    assert pos.closed and pos.qty == 0 and book.index.open == []
    assert book.kinds()[-3:] == ["STOP_TRIGGERED", "STOP_TRIGGERED", "POSITION_CLOSED"]
    closed = book.events[-1]
    assert closed.qty == 100 and abs(closed.exit_price - (30 * 8.99 + 70 * 8.98) / 100) < 1e-9
    assert book.index.orphans == {}  # a filled stop is not an orphan
    book.order(stop_event(it, "filled", at(D0, "10:42"), fill_qty=70, fill_price=8.98))  # redelivered: nothing
    assert book.kinds()[-1] == "POSITION_CLOSED" and len([k for k in book.kinds() if k == "POSITION_CLOSED"]) == 1


def test_duplicate_entry_fill_changes_nothing_and_a_second_fill_resizes_the_stop() -> None:
    book = Book()
    ev = entry_fill("T", 100, 10.5, at(D0, "10:00"), D0, stop=9.0, fill_qty=60, event="partially_filled")
    confirm_all(book, book.order(ev))
    n_events = len(book.events)
    book.order(ev)
    assert len(book.events) == n_events and book.positions["T"].qty == 60
    res = book.order(entry_fill("T", 100, 10.6, at(D0, "10:01"), D0, stop=9.0, fill_qty=40, tid="t2"))
    (it,) = res.intents
    assert (it.action, it.qty, it.stop_price) == ("replace", 100, 9.0) and "qty 60->100" in it.reason
    assert abs(book.positions["T"].avg_entry_price - 10.54) < 1e-9


def test_unanswered_intent_is_given_up_after_the_timeout_and_resent() -> None:
    book = Book(p=core.Params(intent_timeout_s=120))
    (first,) = opened(book).intents
    book.bars(batch([bar("T", at(D0, "10:01"), 10.3, c=10.4)]))
    assert len(book.intents) == 1
    book.bars(batch([bar("T", at(D0, "10:03"), 10.3, c=10.4)]))
    assert len(book.intents) == 2 and book.intents[1].intent_id != first.intent_id
    assert book.counts[core.C_TIMEOUT] == 1


# -- reconciliation ----------------------------------------------------------------------------
def _live(book: Book):
    res = opened(book)
    confirm_all(book, res)
    return book.positions["T"], res.intents[0]


def test_recon_missing_stop_is_placed_inside_the_window_only() -> None:
    book = Book()
    pos, _ = _live(book)
    book.snapshot(snapshot(D0, close_ns(D0), {"T": 100}, [], reason="close"))  # the stop vanished, outside the window
    assert pos.live_stop_client_order_id == "" and book.intents[-1].action == "place" and len(book.intents) == 1
    assert book.counts[core.C_RECON_OUTSIDE] == 1 and book.counts[core.C_RECON_LOST] == 1
    res = book.snapshot(snapshot(D1, at(D1, "10:00"), {"T": 100}, []))
    (it,) = res.intents
    assert (it.action, it.qty, it.stop_price, it.reason) == ("place", 100, 9.0, "reconcile")


def test_recon_wrong_price_or_qty_is_replaced_and_a_higher_broker_stop_is_adopted() -> None:
    book = Book()
    pos, it = _live(book)
    coid = client_order_id(it.intent_id)
    res = book.snapshot(snapshot(D0, at(D0, "10:30"), {"T": 100}, [stop_order("T", coid, 100, 8.5)]))
    (rep,) = res.intents
    assert (rep.action, rep.stop_price, rep.qty, rep.target_client_order_id) == ("replace", 9.0, 100, coid)
    confirm_all(book, res)
    coid2 = pos.live_stop_client_order_id
    res = book.snapshot(snapshot(D0, at(D0, "10:40"), {"T": 100}, [stop_order("T", coid2, 80, 9.0)]))
    (rep,) = res.intents
    assert (rep.action, rep.qty) == ("replace", 100)
    confirm_all(book, res)
    coid3 = pos.live_stop_client_order_id
    res = book.snapshot(snapshot(D0, at(D0, "10:50"), {"T": 100}, [stop_order("T", coid3, 100, 9.5)]))
    assert res.intents == [] and (pos.desired_stop, pos.stop_source) == (9.5, "broker")  # never lowered


def test_recon_stops_of_closed_positions_and_extra_stops_are_cancelled() -> None:
    book = Book()
    pos, it = _live(book)
    coid = client_order_id(it.intent_id)
    res = book.snapshot(snapshot(D0, at(D0, "11:00"), {"T": 100},
                                 [stop_order("T", coid, 100, 9.0), stop_order("T", "stray-1", 100, 8.0),
                                  stop_order("Q", "orphan-q", 50, 20.0)]))
    cancels = sorted((i.symbol, i.target_client_order_id) for i in res.intents if i.action == "cancel")
    assert cancels == [("Q", "orphan-q"), ("T", "stray-1")]
    assert [e.kind for e in res.events] == ["STOP_CANCELLED", "STOP_CANCELLED"]
    res = book.snapshot(snapshot(D0, at(D0, "11:01"), {"T": 100},
                                 [stop_order("T", coid, 100, 9.0), stop_order("T", "stray-1", 100, 8.0)]))
    assert res.intents == [] and set(book.index.orphans) == {"stray-1"}  # sent once; Q's is gone
    res = book.order(sell_fill("T", 100, 10.0, at(D0, "11:05"), D0))  # sold outside the service; its stop lives
    assert pos.closed and [(i.action, i.target_client_order_id) for i in res.intents] == [("cancel", coid)]
    assert book.kinds()[-2:] == ["POSITION_CLOSED", "STOP_CANCELLED"]


def test_recon_shares_held_by_another_sell_takes_no_action_with_a_reason() -> None:
    book = Book()
    pos, it = _live(book)
    coid = client_order_id(it.intent_id)
    held = stop_order("T", "mkt-sell", 100, 0.0, order_type="market")
    res = book.snapshot(snapshot(D0, at(D0, "11:00"), {"T": 100}, [held]))
    assert res.intents == [] and pos.blocked.startswith("SHARES_HELD_BY_OTHER_SELL: mkt-sell")
    assert [e.kind for e in res.events] == ["STOP_BLOCKED"] and book.counts[core.C_RECON_BLOCKED] == 1
    res = book.snapshot(snapshot(D0, at(D0, "11:01"), {"T": 100}, [held]))
    assert res.events == []  # the reason is reported once
    res = book.snapshot(snapshot(D0, at(D0, "11:02"), {"T": 100}, [stop_order("T", coid, 100, 9.0)]))
    assert pos.blocked == "" and res.intents == []


def test_recon_unreconciled_stale_and_pending_snapshots_wait() -> None:
    book = Book()
    res = opened(book)  # a place is pending
    snap = snapshot(D0, at(D0, "10:02"), {"T": 100}, [])
    assert book.snapshot(snap).intents == [] and book.counts[core.C_RECON_PENDING] == 1
    confirm_all(book, res)
    assert book.snapshot(snapshot(D0, at(D0, "10:20"), {"T": 100}, [], reconciled=False)).intents == []
    assert book.counts[core.C_SNAPSHOT_UNREC] == 1
    assert book.snapshot(snapshot(D0, at(D0, "10:05"), {"T": 100}, [])).intents == []
    assert book.counts[core.C_SNAPSHOT_STALE] == 1


def test_recon_broker_flat_closes_the_position_and_its_stop_is_cancelled() -> None:
    book = Book()
    pos, it = _live(book)
    coid = client_order_id(it.intent_id)
    res = book.snapshot(snapshot(D0, at(D0, "11:00"), {}, [stop_order("T", coid, 100, 9.0)]))
    assert pos.closed and pos.closed_reason == "BROKER_FLAT" and book.index.open == []
    assert [i.action for i in res.intents] == ["cancel"] and res.intents[0].target_client_order_id == coid
    assert [e.kind for e in res.events] == ["POSITION_CLOSED", "STOP_CANCELLED"]


def test_recon_untracked_broker_position_is_left_alone() -> None:
    book = Book()
    res = book.snapshot(snapshot(D0, at(D0, "11:00"), {"U": 10}, [stop_order("U", "theirs", 10, 5.0)]))
    assert res.intents == [] and book.counts[core.C_RECON_UNTRACKED] == 1
    assert any(a.kind == "exit_untracked_position" for a in res.alerts)


def test_recon_snapshot_newer_than_the_fills_is_the_truth_for_the_held_quantity() -> None:
    book = Book()
    pos, it = _live(book)
    coid = client_order_id(it.intent_id)
    res = book.snapshot(snapshot(D0, at(D0, "11:00"), {"T": 80}, [stop_order("T", coid, 100, 9.0)]))
    assert pos.qty == 80 and [(i.action, i.qty) for i in res.intents] == [("replace", 80)]
    assert book.counts[core.C_RECON_QTY] == 1


def test_close_forgets_positions_closed_on_earlier_sessions() -> None:
    book = Book()
    pos, it = _live(book)
    book.order(stop_event(it, "filled", at(D0, "11:00"), fill_qty=100, fill_price=9.0))
    assert pos.closed
    res = book.apply(core.on_session(book.index, {"T": pos}, session(D0, "CLOSE"), book.p))
    assert res.deleted == []
    res = book.apply(core.on_session(book.index, {"T": pos}, session(D1, "CLOSE"), book.p))
    assert res.deleted == ["T"]


def test_position_state_is_versioned_old_drafts_decode_and_unknown_versions_are_refused() -> None:
    import json

    import pytest

    from shared.schemas import ExitPositionState, SchemaError, decode, encode

    draft = {"type": "exit_position_state", "v": 1, "position_id": "p", "symbol": "T", "qty": 10,
             "avg_entry_price": 10.0, "opened_ts": 1, "opened_date": D0, "initial_stop": 9.0, "current_stop": 9.0,
             "desired_stop": 9.5, "live_stop_client_order_id": "av-1", "live_stop_price": 9.0, "live_stop_qty": 10}
    pos = decode(json.dumps(draft))  # the schema as first drafted (before the tracker and pending fields)
    assert isinstance(pos, ExitPositionState) and pos.tracker.sessions == [] and pos.pending is None and pos.seq == 0
    book = Book()
    book.index.open = ["T"]
    book.positions["T"] = pos
    res = book.bars(batch([bar("T", at(D0, "10:00"), 10.0, c=10.2)]))
    assert res.intents[0].action == "replace" and res.intents[0].stop_price == 9.5  # it carries on where it was
    assert decode(encode(pos)) == pos
    with pytest.raises(SchemaError, match="UNKNOWN_VERSION"):
        decode(json.dumps({**draft, "v": 99}))


def test_recon_adopts_a_broker_stop_and_stops_retrying_when_the_executor_cannot_change_it() -> None:
    book = Book()
    res = opened(book, ts=close_ns(D0))  # bought at the close: the stop waits for the window
    assert res.intents == []
    pos = book.positions["T"]
    res = book.snapshot(snapshot(D1, at(D1, "10:00"), {"T": 100}, [stop_order("T", "manual-1", 100, 8.5)]))
    (rep,) = res.intents  # adopted (not a second stop stacked), then raised to the desired 9.00
    assert (rep.action, rep.target_client_order_id, rep.stop_price) == ("replace", "manual-1", 9.0)
    r = book.order(stop_event(rep, "rejected", reason="TARGET_NOT_OPEN: manual-1 is unknown",
                                 code="TARGET_UNKNOWN"))
    assert pos.blocked.startswith("STOP_NOT_MANAGEABLE") and [e.kind for e in r.events] == ["STOP_REJECTED", "STOP_BLOCKED"]
    n = len(book.intents)
    for k in range(3):  # every later snapshot: no action, no new event
        r = book.snapshot(snapshot(D1, at(D1, "10:10") + k * MIN, {"T": 100}, [stop_order("T", "manual-1", 100, 8.5)]))
        assert r.intents == [] and r.events == []
    assert len(book.intents) == n and book.counts[core.C_RECON_FOREIGN] == 3
    r = book.snapshot(snapshot(D1, at(D1, "11:00"), {"T": 100}, []))  # someone cancelled it at the broker
    assert pos.blocked == "" and [(i.action, i.stop_price) for i in r.intents] == [("place", 9.0)]


def test_replace_of_a_stop_that_filled_or_was_cancelled_meanwhile_places_a_new_one() -> None:
    book = Book()
    pos, it = _live(book)
    pos.desired_stop = 9.2
    (rep,) = book.snapshot(snapshot(D0, at(D0, "10:30"), {"T": 100},
                                    [stop_order("T", client_order_id(it.intent_id), 100, 9.0)])).intents
    r = book.order(stop_event(rep, "rejected", reason=f"TARGET_NOT_OPEN: {rep.target_client_order_id} is cancelled",
                                 code="TARGET_NOT_OPEN"))
    assert pos.blocked == "" and pos.live_stop_client_order_id == ""
    assert [(i.action, i.stop_price, i.qty) for i in r.intents] == [("place", 9.2, 100)]  # at once, in the window


def test_exits_branch_on_the_reason_code_never_on_the_text() -> None:
    """The executor's free text is not a contract: a rejection whose text says INSUFFICIENT_QTY but whose
    code does not is not a held-shares block, and the code alone is enough."""
    book = Book()
    (it,) = opened(book).intents
    book.order(stop_event(it, "rejected", reason="INSUFFICIENT_QTY (as text only)", code="BROKER_REJECTED"))
    assert book.positions["T"].blocked == ""
    book2 = Book()
    (it2,) = opened(book2).intents
    book2.order(stop_event(it2, "rejected", reason="", code="INSUFFICIENT_QTY"))
    assert book2.positions["T"].blocked.startswith("SHARES_HELD_BY_OTHER_SELL")


def test_a_reprotect_stop_becomes_the_live_stop() -> None:
    """The executor re-protected at the last accepted level (``replaced``, REPROTECT, naming the order it
    replaces): exits track that order as the live stop."""
    from shared.ids import stable_id
    from shared.schemas import OrderEvent

    book = Book()
    res = opened(book)
    confirm_all(book, res)
    (it,) = res.intents
    pos = book.positions["T"]
    live = pos.live_stop_client_order_id
    ev = OrderEvent(event_id=stable_id("ev", "rp"), event="replaced", mode="PAPER_SIM", intent_id=it.intent_id,
                    client_order_id="av-rp", symbol="T", side="sell", kind="stop", qty=100, order_type="stop",
                    stop_price=pos.live_stop_price, reason_code="REPROTECT", replaces_client_order_id=live,
                    trade_date=D0, ts=at(D0, "10:01"))
    book.order(ev)
    assert pos.live_stop_client_order_id == "av-rp" and pos.live_stop_qty == 100


def test_a_replace_refused_as_through_the_market_keeps_the_old_stop_and_waits_for_a_bar_above_it() -> None:
    """STOP_SIDE on a replace: the old stop stays the live one; the same replace is not re-sent by snapshots or
    order events (even after the intent timeout), nor on a bar closing below price * 1.001, only on a later
    bar that closes above it. Before: re-sent at every sync after the timeout (the rehearsal's retry storm)."""
    book = Book()
    pos, first = _live(book)
    pos.desired_stop = 9.5  # the ratchet moved up; the market then fell below it
    (rep,) = book.bars(batch([bar("T", at(D0, "10:01"), 9.6, c=9.7)])).intents
    r = book.order(stop_event(rep, "rejected", at(D0, "10:01"), code="STOP_SIDE",
                              reason="STOP_SIDE: stop price must not be greater than base price / 1.001"))
    pos = book.positions["T"]
    assert (pos.live_stop_client_order_id, pos.live_stop_price) == (client_order_id(first.intent_id), 9.0)
    assert [(a.kind, a.severity) for a in r.alerts] == [("exit_stop_rejected", "warning")]
    n = len(book.intents)
    live = [stop_order("T", client_order_id(first.intent_id), 100, 9.0)]
    book.snapshot(snapshot(D0, at(D0, "10:10"), {"T": 100}, live))  # after INTENT_TIMEOUT_S
    book.bars(batch([bar("T", at(D0, "10:11"), 9.4, c=9.49)]))  # closes below 9.5 * 1.001
    assert len(book.intents) == n and book.counts[core.C_STOP_SIDE_WAIT] == 2
    book.bars(batch([bar("T", at(D0, "10:12"), 9.5, c=9.6)]))
    assert len(book.intents) == n + 1 and (book.intents[-1].action, book.intents[-1].stop_price) == ("replace", 9.5)


def test_a_breached_first_stop_blocks_the_position_while_the_executor_sells() -> None:
    """STOP_BREACHED: the executor is selling at market; no stop is re-sent meanwhile, no 'no live stop' page;
    the exit's fill closes the position."""
    book = Book()
    (it,) = opened(book).intents
    r = book.order(stop_event(it, "rejected", code="STOP_BREACHED", reason="STOP_SIDE: through the market"))
    pos = book.positions["T"]
    assert pos.blocked.startswith("SHARES_HELD_BY_OTHER_SELL") and [a.severity for a in r.alerts] == ["warning"]
    n = len(book.intents)
    book.bars(batch([bar("T", at(D0, "10:30"), 8.5, c=8.6)]))
    assert len(book.intents) == n
    book.order(sell_fill("T", 100, 8.6, at(D0, "10:31"), D0))
    assert book.positions["T"].closed
