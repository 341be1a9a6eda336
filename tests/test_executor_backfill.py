"""History backfill through the real alpaca-py client against the market-data stand-in, on real bars:
pagination, validation, idempotence, a kill mid-run, only closed sessions, and a crafted 2:1 split."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from services.executor.backfill import Backfill, Manifest, adjustment_factor, closed_sessions, plan
from services.executor.feed import AlpacaData
from shared.bars import BarStore, load_bars
from shared.clock import ReplayClock, calendar, dt_to_ns, ns_to_dt, ny_datetime
from shared.schemas import BarRow
from standins.alpaca_data import AlpacaDataStandIn
from tests.conftest import SAMPLE_DIR

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = SAMPLE_DIR / "daily_2017_2018.csv.gz"
NOW = dt_to_ns(ny_datetime("2019-01-02", "08:00"))  # every 2017-2018 session has closed


@pytest.fixture(scope="module")
def daily() -> list[BarRow]:
    return load_bars(SAMPLE, tf="1d").rows()


def _standin(rows: list[BarRow], clock: ReplayClock) -> AlpacaDataStandIn:
    return AlpacaDataStandIn([], rows, clock=lambda: ns_to_dt(clock.now_ns()))


def _source(url: str) -> AlpacaData:
    return AlpacaData("PKBACKFILL", "SECRET", url=url, feed="iex", timeout_s=10.0)


def _lines(store: BarStore) -> list[tuple[str, int]]:
    """Every (symbol, ts) line in the daily files (a duplicate line would show twice)."""
    out = []
    for d in store.dates("1d"):
        for ln in store.path("1d", d).read_text().splitlines():
            p = ln.split(",")
            if len(p) == 7 and p[1].isdigit():
                out.append((p[0], int(p[1])))
    return out


def test_plan_fetches_only_what_the_manifest_lacks() -> None:
    s = ["d1", "d2", "d3", "d4", "d5"]
    m = Manifest(covered={"1d": {"A": ["d2", "d4"], "B": ["d1", "d5"]}})
    got = plan(m, "1d", ["A", "B", "C"], s, batch=10, max_sessions=10)
    assert [(c.symbols, c.start, c.end) for c in got] == [(("A",), "d1", "d1"), (("A",), "d5", "d5"),
                                                           (("C",), "d1", "d5")]
    # intraday chunks of 2 sessions; the run before the coverage grows backwards from it
    got = plan(Manifest(covered={"1m": {"A": ["d5", "d5"]}}), "1m", ["A"], s, batch=1, max_sessions=2)
    assert [(c.start, c.end) for c in got] == [("d3", "d4"), ("d1", "d2")]
    assert plan(m, "1d", ["B"], s, batch=10, max_sessions=10) == []


def test_adjustment_factor() -> None:
    a = [BarRow(symbol="X", ts=i, open=10, high=11, low=9, close=10.0 + i, volume=1) for i in range(1, 4)]
    half = [BarRow(symbol="X", ts=b.ts, open=5, high=5.5, low=4.5, close=b.close / 2, volume=2) for b in a]
    assert adjustment_factor(a, a) is None and adjustment_factor(a, []) is None
    assert adjustment_factor(a, half) == pytest.approx(2.0)


def test_backfill_pages_validates_writes_and_is_idempotent(tmp_path: Path, daily) -> None:
    clock = ReplayClock(NOW)
    syms = sorted({b.symbol for b in daily})
    bad = next(b for b in daily if b.symbol == "AAPL" and ns_to_dt(b.ts).date().isoformat() == "2018-03-01")
    served = [BarRow(symbol=b.symbol, ts=b.ts, open=b.open, high=b.high, low=b.low, close=b.high + 5, volume=b.volume)
              if b is bad else b for b in daily]
    store = BarStore(tmp_path / "bars")
    with _standin(served, clock) as standin:
        bf = Backfill(_source(standin.url), store, clock=clock)
        rep = bf.run(syms, "2017-01-03")
        first = len(standin.requests)
        again = bf.run(syms, "2017-01-03")
    assert first >= 2 and standin.requests[1]["page_token"][0]  # > 10000 bars: alpaca-py paged
    assert {q["adjustment"][0] for q in standin.requests} == {"split"} and {q["feed"][0] for q in standin.requests} == {"iex"}
    assert rep.reasons() == {"CLOSE_OUTSIDE_RANGE": 1} and rep.rejects[0].symbol == "AAPL"
    assert rep.written == len(daily) - 1 and len(store.dates("1d")) == 502
    assert (bad.symbol, bad.ts) not in set(_lines(store))
    # a rerun fetches nothing new: only the adjustment check of the last sessions
    assert again.chunks == 0 and again.written == 0 and len(standin.requests) - first == 1
    assert len(_lines(store)) == len(set(_lines(store))) == len(daily) - 1


def test_only_closed_sessions_are_fetched(tmp_path: Path, daily) -> None:
    clock = ReplayClock(dt_to_ns(ny_datetime("2018-12-28", "12:00")))  # mid-session
    assert closed_sessions(calendar(), "2018-12-24", clock.now_ns()) == ["2018-12-24", "2018-12-26", "2018-12-27"]
    store = BarStore(tmp_path / "bars")
    with _standin(daily, clock) as standin:
        Backfill(_source(standin.url), store, clock=clock).run(["AAPL", "MSFT"], "2018-12-20")
    assert store.dates("1d")[-1] == "2018-12-27"
    assert len(store.read_day("1d", "2018-12-27")) == 2


_CHILD = """
import sys
from services.executor.backfill import Backfill
from services.executor.feed import AlpacaData
from shared.bars import BarStore
from shared.clock import ReplayClock
url, root, now = sys.argv[1], sys.argv[2], int(sys.argv[3])
def tick(c, i, n):
    print(f"chunk {i}/{n}", flush=True)
bf = Backfill(AlpacaData("PKBACKFILL", "SECRET", url=url, feed="iex", timeout_s=10.0), BarStore(root),
              clock=ReplayClock(now), batch=6, on_chunk=tick)
bf.run(sys.argv[4].split(","), "2018-07-02")
print("done", flush=True)
"""


def test_a_kill_mid_run_loses_and_duplicates_nothing(tmp_path: Path, daily) -> None:
    """SIGKILL a backfill process (2018 H2, 36 symbols, chunks of 6) as it starts its third chunk of six;
    the rerun completes the store, with every bar exactly once and the same content as an undisturbed run."""
    clock = ReplayClock(NOW)
    syms = sorted({b.symbol for b in daily})
    killed = BarStore(tmp_path / "killed")
    with _standin(daily, clock) as standin:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        p = subprocess.Popen([sys.executable, "-c", _CHILD, standin.url, str(killed.root), str(NOW), ",".join(syms)],
                             stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        assert p.stdout is not None
        for line in p.stdout:
            if line.startswith("chunk 2/"):
                p.send_signal(signal.SIGKILL)
                break
        p.wait(30)
        assert p.returncode == -signal.SIGKILL
        want = [b for b in daily if ns_to_dt(b.ts).date().isoformat() >= "2018-07-02"]
        partial = len(set(_lines(killed)))
        assert 0 < partial < len(want)
        before = len(standin.requests)
        rep = Backfill(_source(standin.url), killed, clock=clock, batch=6).run(syms, "2018-07-02")
        # the rest (at most 4 chunks), plus the adjustment check of what was covered: not everything again
        assert rep.chunks <= 4 and len(standin.requests) - before <= 4 + 3
        clean = BarStore(tmp_path / "clean")
        Backfill(_source(standin.url), clean, clock=clock).run(syms, "2018-07-02")
    lines = _lines(killed)
    assert len(lines) == len(set(lines)) == len(want)  # nothing lost, nothing twice
    assert killed.dates("1d") == clean.dates("1d")
    for d in clean.dates("1d")[::50]:
        a = killed.read_day("1d", d).sort_values("symbol").reset_index(drop=True)
        b = clean.read_day("1d", d).sort_values("symbol").reset_index(drop=True)
        assert a.equals(b), d


def test_a_2_for_1_split_while_a_position_is_open(tmp_path: Path, daily, real_redis, redis_url) -> None:
    """AAPL splits 2:1 on 2018-12-03 while a position is open. The next backfill sees the stored closes at
    twice the served ones, purges AAPL (only) and re-fetches its whole history (never mixed), alerts with
    the factor; ``avwap exits rebase`` re-bases the position's stop and state by it."""
    from typer.testing import CliRunner

    from avwap.cli import app
    from services.executor.backfill import report_alerts
    from services.exits.rebase import rebase_position
    from services.exits.worker import decode_position, pos_key
    from shared.schemas import ExitPositionState, Low, StopTracker, encode

    eff = "2018-12-03"
    rows = [b for b in daily if b.symbol in ("AAPL", "MSFT") and ns_to_dt(b.ts).date().isoformat() >= "2018-07-02"]
    # the crafted world: after the split AAPL trades at half the price, twice the shares (raw bars)
    raw = [BarRow(symbol=b.symbol, ts=b.ts, open=b.open / 2, high=b.high / 2, low=b.low / 2, close=b.close / 2,
                  volume=b.volume * 2) if b.symbol == "AAPL" and ns_to_dt(b.ts).date().isoformat() >= eff else b
           for b in rows]
    clock = ReplayClock(dt_to_ns(ny_datetime("2018-11-30", "20:00")))
    store = BarStore(tmp_path / "bars")
    with _standin(raw, clock) as standin:
        standin.splits = {"AAPL": [(eff, 2.0)]}
        bf = Backfill(_source(standin.url), store, clock=clock)
        assert bf.run(["AAPL", "MSFT"], "2018-07-02").adjusted == {}
        before = {d: store.read_day("1d", d) for d in store.dates("1d")}
        msft_before = store.daily("MSFT")
        clock.set(dt_to_ns(ny_datetime("2018-12-05", "08:00")))
        rep = bf.run(["AAPL", "MSFT"], "2018-07-02")
    assert rep.adjusted == {"AAPL": pytest.approx(2.0)}
    aapl = store.daily("AAPL")
    by_ts = {b.ts: b for b in rows if b.symbol == "AAPL"}
    assert len(aapl) == sum(1 for b in by_ts.values() if ns_to_dt(b.ts).date().isoformat() <= "2018-12-04")
    assert all(b.close == pytest.approx(by_ts[b.ts].close / 2) for b in aapl)  # one adjusted series, not mixed
    assert store.daily("MSFT")[:len(msft_before)] == msft_before  # the other symbol untouched
    assert len(store.read_day("1d", "2018-08-01")) == len(before["2018-08-01"]) == 2
    lines = _lines(store)
    assert len(lines) == len(set(lines))
    alerts = report_alerts(rep, "backfill", clock.now_ns())
    assert [(a.kind, a.severity) for a in alerts] == [("history_adjusted", "critical")]
    assert "exits rebase AAPL --factor 2" in alerts[0].text

    # the open position: entry 180, stop 170 (desired 172), 10 shares, a live stop at the broker
    pos = ExitPositionState(position_id="p1", symbol="AAPL", qty=10, avg_entry_price=180.0, opened_ts=1,
                            opened_date="2018-11-20", initial_stop=168.0, current_stop=170.0, desired_stop=172.0,
                            live_stop_client_order_id="s1", live_stop_price=170.0, live_stop_qty=10,
                            stop_ref_low=172.0, entry_qty=10,
                            tracker=StopTracker(daily=[Low(1, 172.0), Low(2, 175.0)], hl=Low(2, 175.0)))
    new = rebase_position(pos, rep.adjusted["AAPL"])
    assert (new.qty, new.avg_entry_price, new.current_stop, new.desired_stop, new.initial_stop) == (20, 90.0, 85.0, 86.0, 84.0)
    assert (new.live_stop_price, new.live_stop_qty, new.stop_ref_low) == (85.0, 20, 86.0)
    assert [x.low for x in new.tracker.daily] == [86.0, 87.5] and new.tracker.hl == Low(2, 87.5)
    assert pos.qty == 10 and pos.current_stop == 170.0  # pure: the input is unchanged
    # the operator step, on real Redis, with the exits service stopped: a database of its own, so that no
    # heartbeat of another test's service (the suite shares one test database) stands for "exits running"
    op_url = redis_url.rsplit("/", 1)[0] + "/14"
    op = redis.Redis.from_url(op_url)
    op.flushdb()
    op.set(pos_key("AAPL"), encode(pos))
    runner = CliRunner()
    env = {"REDIS_URL": op_url}
    res = runner.invoke(app, ["exits", "rebase", "AAPL", "--factor", "2"], env=env)
    assert res.exit_code == 0 and "dry run" in res.output and decode_position(op.get(pos_key("AAPL"))) == pos
    op.set("avwap:hb:exits:x1", "{}", ex=30)  # exits running: refused
    res = runner.invoke(app, ["exits", "rebase", "AAPL", "--factor", "2", "--yes"], env=env)
    assert res.exit_code != 0 and decode_position(op.get(pos_key("AAPL"))) == pos
    op.delete("avwap:hb:exits:x1")
    res = runner.invoke(app, ["exits", "rebase", "AAPL", "--factor", "2", "--yes"], env=env)
    assert res.exit_code == 0, res.output
    assert decode_position(op.get(pos_key("AAPL"))) == new
    op.flushdb()


def test_avwap_data_backfill_command(tmp_path: Path, daily, redis_url, real_redis) -> None:
    """The operator command: keys from the environment, --symbols, --from; a second run fetches nothing;
    without keys it names the missing variables."""
    from typer.testing import CliRunner

    from avwap.cli import app
    from shared.settings import get_settings

    uni = tmp_path / "universe.txt"
    uni.write_text("# two names\nAAPL,Tech\nMSFT\n")
    rows = [b for b in daily if b.symbol in ("AAPL", "MSFT", "SPY")]
    env = {"APCA_API_KEY_ID": "PKCLI", "APCA_API_SECRET_KEY": "SECRETCLI", "REDIS_URL": redis_url,
           "BARS_DIR": str(tmp_path / "bars"), "SCAN_MARKET_GATE": "universe_proxy"}
    runner = CliRunner()
    get_settings.cache_clear()
    try:
        with AlpacaDataStandIn([], rows) as standin:
            env["APCA_DATA_URL"] = standin.url
            res = runner.invoke(app, ["data", "backfill", "--from", "2018-12-03", "--symbols", str(uni)], env=env)
            assert res.exit_code == 0, res.output
            assert "backfill 2 symbols from 2018-12-03" in res.output and "1d: 1 chunks" in res.output
            n = len(standin.requests)
            res = runner.invoke(app, ["data", "backfill", "--from", "2018-12-03", "--symbols", str(uni)], env=env)
            assert res.exit_code == 0 and "1d: 0 chunks" in res.output and len(standin.requests) == n + 1
        assert BarStore(tmp_path / "bars").dates("1d")[0] == "2018-12-03"
        assert "SECRETCLI" not in res.output
        res = runner.invoke(app, ["data", "backfill", "--symbols", str(uni)],
                            env={**env, "APCA_API_KEY_ID": "", "APCA_API_SECRET_KEY": ""})
        assert res.exit_code == 1 and "missing APCA_API_KEY_ID, APCA_API_SECRET_KEY" in res.output
    finally:
        get_settings.cache_clear()


def test_intraday_backfill_in_chunks_of_sessions(tmp_path: Path) -> None:
    """--intraday: the real 1-minute week in chunks of 2 sessions (latest first when growing backwards),
    every minute once; a rerun fetches none; a mid-session stand-in clock serves only ended minutes."""
    from tests.conftest import INTRADAY_FILE

    minute = [b for b in load_bars(INTRADAY_FILE, tf="1m").rows() if b.symbol in ("AAPL", "MSFT")]
    clock = ReplayClock(dt_to_ns(ny_datetime("2019-02-16", "08:00")))
    store = BarStore(tmp_path / "bars")
    with AlpacaDataStandIn(minute, [], clock=lambda: ns_to_dt(clock.now_ns())) as standin:
        bf = Backfill(_source(standin.url), store, clock=clock, intraday_sessions=2)
        rep = bf.run(["AAPL", "MSFT"], "2019-02-11", tf="1m")
        assert rep.chunks == 3 and rep.written == len(minute)
        assert bf.run(["AAPL", "MSFT"], "2019-02-11", tf="1m").chunks == 0
        # the stand-in at 10:00:30 on the 13th serves the minutes that ended by then, not the rest of the day
        clock = ReplayClock(dt_to_ns(ny_datetime("2019-02-13", "10:00")) + 30 * 10**9)  # the stand-in's lambda reads it
        got = _source(standin.url).bars(["AAPL"], "1m", dt_to_ns(ny_datetime("2019-02-13", "09:30")),
                                        dt_to_ns(ny_datetime("2019-02-13", "16:00")))
    assert got and max(b.ts for b in got) == dt_to_ns(ny_datetime("2019-02-13", "10:00"))
    assert sorted(store.dates("1m")) == ["2019-02-11", "2019-02-12", "2019-02-13", "2019-02-14", "2019-02-15"]
    assert len(store.intraday("AAPL", 0, 2**62)) == sum(1 for b in minute if b.symbol == "AAPL")
