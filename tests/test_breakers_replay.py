"""A circuit breaker trips on a real-bars replay exactly as live: the real executor (PAPER_SIM), exits and
analytics replay 2019-02-11 minute by minute through the replay driver; the daily-loss, drawdown and
consecutive-stop-out breakers each trip on the marked equity and the fills, the trading state becomes
REDUCING at the bar that tripped the first, and its effect follows:
the next session's entries are refused (KILL_SWITCH_ON) while the open positions keep their stops."""

from __future__ import annotations

from pathlib import Path

import pytest

from avwap.procs import ServiceProcs
from avwap.quiesce import wait_quiescent
from avwap.replay import Driver, session_steps
from shared.bars import BarStore, load_bars
from shared.breakers import decode_book
from shared.bus import Bus
from shared.clock import ny_trade_date
from shared.controls import read_state
from shared.ids import stable_id
from shared.redis_conn import connect, start_redis_server
from shared.schemas import Alert, BarRow, EntryIntent, ExitEvent, Rejection, TradingStateChange, decode
from shared.streams import ALERTS, BREAKERS_KEY, CONTROL, EXITS, INTENTS, REJECTIONS
from tests.conftest import INTRADAY_FILE

D1, D2 = "2019-02-11", "2019-02-12"
SYMS = ("AAPL", "BAC", "MSFT", "MU", "QQQ", "TSLA")
# limits a $1M account holding 6 x 1000 shares crosses on this day's real bars: the costs of the
# entries take equity ~$300 below the open (09:52 ET), it later falls ~0.6% from its high, and two
# positions in a row are stopped out at a loss
LIMITS = {"BREAKER_DAILY_LOSS_USD": "250", "BREAKER_MAX_DRAWDOWN_PCT": "0.5", "BREAKER_MAX_CONSECUTIVE_STOPS": "2"}


@pytest.fixture(scope="module")
def minutes() -> list[BarRow]:
    res = load_bars(INTRADAY_FILE)
    f = res.frame
    res.frame = f[f["symbol"].isin(SYMS) & f["trade_date"].isin((D1,))].reset_index(drop=True)
    return res.rows()


def intents_for(d: str) -> list[EntryIntent]:
    stops = {"AAPL": 160.0, "BAC": 27.0, "MSFT": 100.0, "MU": 35.0, "QQQ": 160.0, "TSLA": 290.0}
    return [EntryIntent(intent_id=stable_id("in", s, d), candidate_id=stable_id("c", s, d), symbol=s, trade_date=d,
                        qty=1000, entry_level=round(stops[s] + 0.01, 2), stop_price=stops[s], risk_per_share=0.01,
                        notional=1000.0, ts=0)  # a long's stop below its entry (the intent invariant)
            for s in SYMS]


def decoded(r, stream: str) -> list:
    return [decode(f[b"data"]) for _, f in r.xrange(stream)]


def replay(tmp: Path, minutes: list[BarRow], analytics_replicas: int = 1) -> dict:
    """One run: D1 minute by minute with six entries at its PRE_MARKET, then D2's PRE_MARKET (six more
    entries) and OPEN; returns what the streams and keys hold afterwards."""
    emb = start_redis_server(workdir=str(tmp / "redis"))
    out = tmp / "run"
    r = connect(emb.url)
    env = {"EXECUTION_MODE": "PAPER_SIM", "ARTIFACTS_DIR": str(out / "artifacts"), "LEDGER_DIR": str(out / "ledger"),
           "BARS_DIR": str(out / "bars"), "STARTING_CAPITAL": "1000000", "BUS_BLOCK_MS": "200",
           "BUS_CLAIM_IDLE_MS": "1000", "AVWAP_REPLAY": "1", "REPORT_ON_CLOSE": "0", "ARTIFACTS_FSYNC": "0",
           "STOP_BUFFER": "0.75", **LIMITS}
    procs = ServiceProcs(emb.url, env=env, log_dir=out / "logs")
    store = BarStore(out / "bars")
    tripped_state = ""
    try:
        procs.start("executor", 0)
        procs.start("exits", 0)
        for i in range(analytics_replicas):
            procs.start("analytics", i)
        procs.wait_ready(timeout=120)
        driver = Driver(r, procs, store.append, timeout=120)
        groups: dict[int, list[BarRow]] = {}
        for b in minutes:
            if ny_trade_date(b.ts) == D1:
                groups.setdefault(b.ts, []).append(b)
        for step in session_steps(D1, [], sorted(groups.items())):
            driver.play(step)
            if step.label == "pre_market":
                for it in intents_for(D1):
                    Bus(r).publish(INTENTS, it)
                wait_quiescent(r, timeout=60)
        tripped_state = read_state(r).state
        for step in session_steps(D2, [], [])[:2]:  # the next session's PRE_MARKET and OPEN
            driver.play(step)
            if step.label == "pre_market":
                for it in intents_for(D2):
                    Bus(r).publish(INTENTS, it)
                wait_quiescent(r, timeout=60)
    finally:
        codes = procs.stop_all()
        res = {"codes": codes, "tripped_state": tripped_state, "book": decode_book(r.get(BREAKERS_KEY)),
               "changes": [m for m in decoded(r, CONTROL) if isinstance(m, TradingStateChange)],
               "rejections": decoded(r, REJECTIONS), "exits": decoded(r, EXITS), "alerts": decoded(r, ALERTS)}
        emb.stop()
    return res


def test_breakers_trip_on_real_bars_and_block_the_next_entries(tmp_path: Path, minutes: list[BarRow]) -> None:
    run = replay(tmp_path / "one", minutes)
    codes, tripped_state, book, changes = run["codes"], run["tripped_state"], run["book"], run["changes"]
    rejections, exits, alerts = run["rejections"], run["exits"], run["alerts"]
    assert all(c in (0, -15) for c in codes.values()), codes
    # each breaker trips once, by itself, at the event time of the message whose figures crossed its limit
    assert tripped_state == "REDUCING"
    assert [c.breaker for c in changes] == ["daily_loss", "drawdown", "consecutive_stops"], changes
    assert [(c.previous, c.state) for c in changes] == [("ACTIVE", "REDUCING"), ("REDUCING", "REDUCING"),
                                                        ("REDUCING", "REDUCING")]
    daily, dd, stops = changes
    assert daily.who == "breaker:daily_loss" and daily.figures["loss"] >= 250 and daily.figures["open_equity"] == 1_000_000.0
    assert dd.figures["drawdown_pct"] >= 0.5 and dd.figures["high_water_mark"] > dd.figures["equity"]
    assert stops.figures["consecutive_stops"] == 2.0
    assert all(ny_trade_date(c.ts) == D1 for c in changes) and daily.ts in {b.ts for b in minutes}
    assert daily.ts < dd.ts < stops.ts
    assert book is not None and sorted(book.tripped) == ["consecutive_stops", "daily_loss", "drawdown"]
    assert sorted(a.fields.get("loss", "") != "" for a in alerts if isinstance(a, Alert) and a.kind == "breaker_tripped") \
        == [False, False, True]
    ch = daily
    # its effect: every entry of the next session is refused by the executor; nothing before the trip was
    d2 = [x for x in rejections if isinstance(x, Rejection) and x.trade_date == D2]
    assert sorted(x.symbol for x in d2) == sorted(SYMS) and all(x.reasons == ["KILL_SWITCH_ON"] for x in d2)
    assert not [x for x in rejections if isinstance(x, Rejection) and x.trade_date == D1 and "KILL_SWITCH_ON" in x.reasons]
    # ... while exits keep protecting: stops were still sent or ratcheted after the trip
    stops_after = [e for e in exits if isinstance(e, ExitEvent) and e.ts > ch.ts
                   and e.kind in ("STOP_SUBMITTED", "STOP_REPLACED", "STOP_TRIGGERED")]
    assert stops_after, "no stop activity after the trip"

    # the same replay with two analytics replicas racing on the book trips identically (event time, no clock)
    again = replay(tmp_path / "two", minutes, analytics_replicas=2)
    assert again["changes"] == changes and again["book"] == book
