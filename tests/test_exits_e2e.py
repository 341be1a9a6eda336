"""Exits with the real executor (PAPER_SIM) through the replay driver on real 1-minute bars: one replica,
two replicas with SIGKILLs, and a Redis (AOF) restart mid-run give byte-identical exit events and
executor ledgers, and every stop-out matches the exit simulator."""

from __future__ import annotations

import random
import signal
from pathlib import Path

import pytest

from avwap.procs import ServiceProcs
from avwap.quiesce import wait_quiescent
from avwap.replay import Driver, session_steps
from avwap.replay_run import artifact_files
from services.analytics.exit_sim import Entry, simulate_exit
from shared.bars import BarStore, load_bars
from shared.bus import Bus
from shared.clock import ny_trade_date
from shared.ids import stable_id
from shared.redis_conn import connect, start_redis_server
from shared.schemas import BarRow, EntryIntent, ExitEvent, OrderEvent, decode
from shared.stops import StopRules
from shared.streams import EXITS, INTENTS, ORDERS
from tests.conftest import INTRADAY_FILE

DAYS = ("2019-02-11", "2019-02-12")
SYMS = ("AAPL", "BAC", "MSFT", "MU", "QQQ", "TSLA")
BUFFER = 0.75  # wide enough that some positions live into the second session


@pytest.fixture(scope="module")
def minutes() -> list[BarRow]:
    res = load_bars(INTRADAY_FILE)
    f = res.frame
    res.frame = f[f["symbol"].isin(SYMS) & f["trade_date"].isin(DAYS)].reset_index(drop=True)
    return res.rows()


def intents_for(d: str) -> list[EntryIntent]:
    """Entries the executor confirms at the first 10-minute check (entry level a cent above the stop, below
    the price; a long's stop must be below its entry)."""
    stops = {"AAPL": 165.0, "BAC": 28.0, "MSFT": 103.0, "MU": 37.0, "QQQ": 165.0, "TSLA": 300.0}
    return [EntryIntent(intent_id=stable_id("in", s, d), candidate_id=stable_id("c", s, d), symbol=s, trade_date=d,
                        qty=10, entry_level=round(stops[s] + 0.01, 2), stop_price=stops[s], risk_per_share=0.01,
                        notional=1000.0, ts=0)
            for s in SYMS]


def scenario(aof: dict, out: Path, minutes: list[BarRow], replicas: int, chaos: str = "") -> dict[str, bytes]:
    """One run; ``chaos``: "kill" SIGKILLs a random exits replica at 6 random steps (restarting it at
    once), "redis" stops and restarts the AOF Redis at one step."""
    url = aof["emb"].url
    r = connect(url)
    r.flushdb()
    env = {"EXECUTION_MODE": "PAPER_SIM", "ARTIFACTS_DIR": str(out / "artifacts"), "LEDGER_DIR": str(out / "ledger"),
           "BARS_DIR": str(out / "bars"), "STARTING_CAPITAL": "1000000", "BUS_BLOCK_MS": "200",
           "BUS_CLAIM_IDLE_MS": "1000", "AVWAP_REPLAY": "1",
           "STOP_BUFFER": str(BUFFER), "SIM_SLIPPAGE_BPS": "0"}
    procs = ServiceProcs(url, env=env, log_dir=out / "logs")
    store = BarStore(out / "bars")
    rnd = random.Random(11)
    kill_at = set(rnd.sample(range(20, 700), 6)) if chaos == "kill" else set()
    restart_at = {350} if chaos == "redis" else set()

    def hook(i: int, label: str, p: ServiceProcs) -> None:
        if i in kill_at:
            victim = f"exits-{rnd.randrange(replicas)}"
            p.kill(victim, signal.SIGKILL)
            p.start("exits", int(victim.rsplit("-", 1)[1]))
        if i in restart_at:  # the services ride out the outage; AOF keeps streams, groups and state
            aof["emb"].stop()
            aof["emb"] = start_redis_server(appendonly=True, port=int(url.rsplit(":", 1)[1].split("/")[0]),
                                            workdir=str(aof["dir"]))

    try:
        procs.start("executor", 0)
        for i in range(replicas):
            procs.start("exits", i)
        procs.wait_ready()
        driver = Driver(r, procs, store.append, after_publish=hook, timeout=120)
        for d in DAYS:
            groups: dict[int, list[BarRow]] = {}
            for b in minutes:
                if ny_trade_date(b.ts) == d:
                    groups.setdefault(b.ts, []).append(b)
            steps = session_steps(d, [], sorted(groups.items()))
            for step in steps:
                driver.play(step)
                if d == DAYS[0] and step.label == "pre_market":
                    for it in intents_for(d):
                        Bus(r).publish(INTENTS, it)
                    wait_quiescent(r, timeout=60)
    finally:
        codes = procs.stop_all()
    assert all(c in (0, -9, -15) for c in codes.values()), codes
    files = artifact_files(out, ("artifacts", "ledger"))
    files["intents"] = b"\n".join(f[b"data"] for _, f in r.xrange(INTENTS))
    files["exits_stream"] = b"\n".join(sorted(f[b"data"] for _, f in r.xrange(EXITS)))
    files["orders"] = b"\n".join(f[b"data"] for _, f in r.xrange(ORDERS))
    return files


@pytest.fixture
def aof(tmp_path: Path):
    """A private redis-server with AOF on, restartable on its port (the holder keeps the live one)."""
    work = tmp_path / "redis"
    work.mkdir()
    holder = {"emb": start_redis_server(appendonly=True, workdir=str(work)), "dir": work}
    yield holder
    holder["emb"].stop()


@pytest.mark.slow
def test_one_replica_two_replicas_kills_and_a_redis_restart_give_identical_bytes(aof: dict, tmp_path: Path,
                                                                                 minutes) -> None:
    one = scenario(aof, tmp_path / "one", minutes, 1)
    exits_files = [k for k in one if k.startswith("artifacts/exit_events/")]
    assert exits_files == [f"artifacts/exit_events/{d}.jsonl" for d in DAYS]
    assert any(k.startswith("ledger/PAPER_SIM/") for k in one)
    events = [decode(x) for k in exits_files for x in one[k].splitlines()]
    kinds = {e.kind for e in events if isinstance(e, ExitEvent)}
    assert {"STOP_RESOLVED", "STOP_SUBMITTED", "STOP_RATCHET", "STOP_REPLACED", "STOP_TRIGGERED", "POSITION_CLOSED"} <= kinds
    for name, other in (("two+kills", scenario(aof, tmp_path / "two", minutes, 2, chaos="kill")),
                        ("redis restart", scenario(aof, tmp_path / "aof", minutes, 1, chaos="redis"))):
        assert sorted(other) == sorted(one), name
        for k in one:
            assert other[k] == one[k], (name, k)
    # and the stop-outs are those the exit simulator predicts from the same bars
    orders = [decode(x) for x in one["orders"].splitlines()]
    fills = {o.symbol: o for o in orders if isinstance(o, OrderEvent) and o.kind == "entry" and o.event == "filled"}
    assert sorted(fills) == sorted(SYMS)
    rules = StopRules(buffer=BUFFER)
    for sym, f in fills.items():
        sim = simulate_exit(Entry(symbol=sym, ts=f.ts, price=f.fill_price, qty=10, initial_stop=f.stop_price), [],
                            [b for b in minutes if b.symbol == sym], rules)
        stop_fills = [o for o in orders if isinstance(o, OrderEvent) and o.symbol == sym and o.kind == "stop"
                      and o.event == "filled"]
        got = (stop_fills[0].ts, stop_fills[0].fill_price) if stop_fills else None
        assert got == ((sim.exit_ts, round(sim.exit_price, 4)) if sim.exited else None), sym


DAILY_SYMS = ("AAPL", "BAC", "CAT", "JPM", "MSFT", "MU", "NVDA", "XOM")


@pytest.mark.slow
def test_daily_replay_every_trade_agrees_with_the_exit_simulator(aof: dict, tmp_path: Path) -> None:
    """Daily bars only (the demo's kind of replay): entries at D's open, stops resolved from the daily
    swing lows at the close, placed at D+1's window open, filled by the simulator on daily bars;
    analytics' ``parity`` over the reconstructed trades agrees on every one."""
    from services.analytics.exit_sim import parity, rules_from
    from services.analytics.trades import build_trades, fills_from_orders
    from shared.bars import LoadResult
    from shared.settings import load_settings
    from tests.conftest import SAMPLE_DIR

    res = load_bars(SAMPLE_DIR / "daily_2017_2018.csv.gz")
    f = res.frame
    res.frame = f[f["symbol"].isin(DAILY_SYMS) & (f["trade_date"] >= "2017-10-01") & (f["trade_date"] <= "2018-06-29")]
    days = sorted(d for d in res.frame["trade_date"].unique() if d >= "2018-02-01")
    url = aof["emb"].url
    r = connect(url)
    out = tmp_path / "daily"
    store = BarStore(out / "bars")
    store.import_result(LoadResult(tf="1d", frame=res.frame[res.frame["trade_date"] < days[0]]))
    env = {"EXECUTION_MODE": "PAPER_SIM", "ARTIFACTS_DIR": str(out / "artifacts"), "LEDGER_DIR": str(out / "ledger"),
           "BARS_DIR": str(out / "bars"), "STARTING_CAPITAL": "1000000", "BUS_BLOCK_MS": "200", "SIM_SLIPPAGE_BPS": "0",
           "BUS_KEEP_SESSIONS": "0"}  # the test rebuilds every trade of the 100 sessions from the orders stream
    procs = ServiceProcs(url, env=env, log_dir=out / "logs")
    prev_close = {s: float(res.frame[(res.frame["symbol"] == s) & (res.frame["trade_date"] < days[0])]["close"].iloc[-1])
                  for s in DAILY_SYMS}
    try:
        procs.start("executor", 0)
        procs.start("exits", 0)
        procs.wait_ready()
        driver = Driver(r, procs, store.append, timeout=120)
        for d in days:
            rows = [b for b in res.rows() if ny_trade_date(b.ts) == d]
            for step in session_steps(d, rows, []):
                driver.play(step)
                if d == days[0] and step.label == "pre_market":
                    for s in DAILY_SYMS:
                        Bus(r).publish(INTENTS, EntryIntent(
                            intent_id=stable_id("in", s, d), candidate_id=stable_id("c", s, d), symbol=s, trade_date=d,
                            qty=10, entry_level=round(prev_close[s] * 0.93 + 0.01, 2),
                            stop_price=round(prev_close[s] * 0.93, 2), risk_per_share=0.01, notional=1000.0))
                    wait_quiescent(r, timeout=60)
    finally:
        codes = procs.stop_all()
    assert all(c in (0, -15) for c in codes.values()), codes
    orders = [decode(x[b"data"]) for _, x in r.xrange(ORDERS)]
    trades = build_trades(fills_from_orders([o for o in orders if isinstance(o, OrderEvent)]))
    assert sorted(t.symbol for t in trades) == sorted(DAILY_SYMS)
    closed = [t for t in trades if t.status == "closed"]
    assert len(closed) >= len(DAILY_SYMS) // 2 and all(t.exit_kinds == ["stop"] for t in closed)
    daily = [b for b in res.rows()]
    rows = parity(trades, daily, [], rules_from(load_settings().exits))
    assert [x.symbol for x in rows if not x.agree] == [] and len(rows) == len(DAILY_SYMS)
    events = [decode(x) for p in sorted((out / "artifacts" / "exit_events").glob("*.jsonl"))
              for x in p.read_bytes().splitlines()]
    placed = [e for e in events if e.kind == "STOP_SUBMITTED"]
    from shared.clock import ny_time

    assert placed and all(ny_time(e.ts) == "09:35" for e in placed)  # a stop from D's bar goes live at D+1's window
