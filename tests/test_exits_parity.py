"""Parity: the exits core, with the real PAPER_SIM simulator as its broker, exits every position exactly
where the broker-independent exit simulator (analytics/exit_sim.py) predicts, on the real intraday file."""

from __future__ import annotations

import pytest

from services.analytics.exit_sim import Entry, simulate_exit
from services.exits import core
from shared.bars import load_bars
from shared.clock import ny_trade_date
from shared.schemas import BarBatch, BarRow
from shared.stops import StopRules
from tests.conftest import INTRADAY_FILE
from tests.exits_helpers import Book, SimExecutor, at, entry_fill, session


@pytest.fixture(scope="module")
def minutes() -> list[BarRow]:
    return load_bars(INTRADAY_FILE).rows()


def run(rows: list[BarRow], entry_hhmm: str, stop_pct: float, rules: StopRules):
    """Replay-driver order per session: WINDOW_OPEN, then one batch per minute; entries fill at the
    entry minute's close; every intent goes to the simulator at once and its answer comes back."""
    by_ts: dict[int, list[BarRow]] = {}
    by_sym: dict[str, list[BarRow]] = {}
    for b in rows:
        by_ts.setdefault(b.ts, []).append(b)
        by_sym.setdefault(b.symbol, []).append(b)
    days = sorted({ny_trade_date(t) for t in by_ts})
    book, ex = Book(p=core.Params(rules=rules)), SimExecutor()
    entries: dict[str, Entry] = {}

    def feed(intents) -> None:
        for it in intents:
            for ev in ex.on_intent(it):
                feed(book.order(ev).intents)

    t_entry = at(days[0], entry_hhmm)
    for d in days:
        feed(book.session(session(d, "WINDOW_OPEN")).intents)
        for ts in sorted(t for t in by_ts if ny_trade_date(t) == d):
            bars = by_ts[ts]
            fills = ex.on_bars(bars)  # the executor handles the bar first (it was published first)
            feed(book.bars(BarBatch(tf="1m", trade_date=d, bars=bars)).intents)
            for ev in fills:
                feed(book.order(ev).intents)
            if ts == t_entry:
                for b in bars:
                    stop = round(b.close * (1 - stop_pct), 2)
                    ex.hold(b.symbol, 100, b.close)
                    hist = core.History(minutes=[m for m in by_sym[b.symbol] if m.ts <= b.ts])
                    feed(book.order(entry_fill(b.symbol, 100, b.close, b.ts, d, stop=stop), hist).intents)
                    entries[b.symbol] = Entry(symbol=b.symbol, ts=b.ts, price=b.close, qty=100, initial_stop=stop)
    return book, entries, by_sym


@pytest.mark.slow  # the exit simulator recomputes the structure from scratch at every bar (~15 s a scenario)
@pytest.mark.parametrize("entry_hhmm,stop_pct,buffer", [("10:00", 0.015, 0.10), ("15:30", 0.08, 0.60)])
def test_every_exit_matches_the_exit_simulator(minutes, entry_hhmm: str, stop_pct: float, buffer: float) -> None:
    rules = StopRules(buffer=buffer)
    book, entries, by_sym = run(minutes, entry_hhmm, stop_pct, rules)
    assert len(entries) >= 20
    exited = 0
    for sym, e in sorted(entries.items()):
        sim = simulate_exit(e, [], by_sym[sym], rules)
        trig = [x for x in book.events if x.symbol == sym and x.kind == "STOP_TRIGGERED"]
        got = (trig[0].ts, trig[0].exit_price) if trig else None
        want = (sim.exit_ts, round(sim.exit_price, 4)) if sim.exited else None
        assert got == want, sym
        live = [(c.ts, c.stop) for c in sim.changes if c.live]
        sent = [(i.ts, i.stop_price) for i in book.intents if i.symbol == sym and i.action in ("place", "replace")]
        assert sent == live, sym  # the same live-stop timeline, change for change
        exited += sim.exited
    assert exited >= len(entries) // 2  # the scenario exercises real stop-outs (and some holds)
    assert not any(i.action == "cancel" for i in book.intents)
