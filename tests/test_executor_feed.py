"""The live feed against a market-data stand-in, on real 1-minute bars: order, store-before-publish, once each."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.executor.feed import AlpacaData, Feed, due_steps
from services.executor.settings import BrokerSettings
from shared.bars import BarStore, load_bars
from shared.clock import ReplayClock, calendar, dt_to_ns, ny_datetime
from shared.schemas import Alert, BarBatch, BarRow, SessionEvent
from shared.settings import load_settings
from shared.streams import ALERTS, BARS_1D, BARS_1M, CLOCK
from standins.alpaca_data import AlpacaDataStandIn
from tests.conftest import INTRADAY_FILE
from tests.executor_helpers import read

D = "2019-02-11"
SYMS = ("AAPL", "MSFT")


@pytest.fixture(scope="module")
def bars() -> tuple[list[BarRow], list[BarRow]]:
    res = load_bars(INTRADAY_FILE)
    minute = [b for b in res.rows() if b.symbol in SYMS and calendar().session_of(b.ts) == D]
    daily = []
    _, close = calendar().open_close_ns(D)
    for s in SYMS:
        rows = [b for b in minute if b.symbol == s]
        daily.append(BarRow(symbol=s, ts=close, open=rows[0].open, high=max(b.high for b in rows),
                            low=min(b.low for b in rows), close=rows[-1].close, volume=sum(b.volume for b in rows)))
    # one defective vendor bar: close above high
    bad_ts = dt_to_ns(ny_datetime(D, "09:33"))
    minute = [BarRow(symbol=b.symbol, ts=b.ts, open=b.open, high=b.high, low=b.low, close=b.high + 5, volume=b.volume)
              if (b.symbol, b.ts) == ("MSFT", bad_ts) else b for b in minute]
    return minute, daily


def test_due_steps_follow_the_calendar() -> None:
    cal = calendar()
    at = lambda hhmm: dt_to_ns(ny_datetime(D, hhmm))  # noqa: E731
    assert due_steps(cal, at("08:00"), set(), "09:35", 300) == []
    assert [s for _, s, _ in due_steps(cal, at("09:31"), set(), "09:35", 300)] == ["PRE_MARKET", "OPEN"]
    assert [s for _, s, _ in due_steps(cal, at("16:06"), {f"{D}:PRE_MARKET"}, "09:35", 300)] == ["OPEN", "WINDOW_OPEN", "DAILY", "CLOSE"]
    assert due_steps(cal, dt_to_ns(ny_datetime("2019-02-16", "10:00")), set(), "09:35", 300) == []  # Saturday
    # the window opens once the minute ending at 09:35 is out (minute delay 5 s): that bar goes first
    assert [s for _, s, _ in due_steps(cal, at("09:35") + 4 * 10**9, {f"{D}:PRE_MARKET", f"{D}:OPEN"}, "09:35", 300, 5)] == []
    assert [(s, ts) for _, s, ts in due_steps(cal, at("09:35") + 5 * 10**9, {f"{D}:PRE_MARKET", f"{D}:OPEN"}, "09:35", 300, 5)] \
        == [("WINDOW_OPEN", at("09:35"))]


def test_feed_publishes_in_order_once_after_writing_the_store(fake_redis, tmp_path: Path, bars) -> None:
    minute, daily = bars
    clock = ReplayClock(dt_to_ns(ny_datetime(D, "08:31")))
    bs = BrokerSettings(feed_minute_delay_s=10, feed_daily_delay_s=300)
    store = BarStore(tmp_path / "bars")
    with AlpacaDataStandIn(minute, daily) as standin:
        src = AlpacaData("PKFEEDKEY123", "FEEDSECRET123", url=standin.url, feed="iex", timeout_s=2.0)
        feed = Feed(fake_redis, src, store, list(SYMS), settings=load_settings(), bs=bs, clock=clock)
        log: list[str] = []
        publish = feed._publish

        def spy(stream, msg, mark, d, extra=None):  # records the publication order
            log.append(mark)
            publish(stream, msg, mark, d, extra)

        feed._publish = spy  # type: ignore[method-assign]
        assert feed.tick() == [f"{D}:PRE_MARKET"]
        assert feed.tick() == []
        clock.set(dt_to_ns(ny_datetime(D, "09:36")) + 15 * 10**9)
        first = feed.tick()
        assert first[:1] == [f"{D}:OPEN"] and f"{D}:WINDOW_OPEN" in first
        standin.fail_next = 1
        clock.set(dt_to_ns(ny_datetime(D, "09:40")) + 15 * 10**9)
        with pytest.raises(Exception):  # noqa: B017 - a data error surfaces; run() retries with backoff
            feed.tick()
        feed.tick()
        clock.set(dt_to_ns(ny_datetime(D, "16:05")) + 1)
        feed.tick()
        assert feed.tick() == []
    clock_evs = read(fake_redis, CLOCK)
    assert [e.phase for e in clock_evs if isinstance(e, SessionEvent)] == ["PRE_MARKET", "OPEN", "WINDOW_OPEN", "CLOSE"]
    assert clock_evs[-1].ts == calendar().open_close_ns(D)[1]
    mins = [b for b in read(fake_redis, BARS_1M) if isinstance(b, BarBatch)]
    ts = [b.bars[0].ts for b in mins]
    assert ts == sorted(set(ts)) and len(mins) == 390  # every minute once, in order
    assert all(len({r.ts for r in b.bars}) == 1 for b in mins)
    n_bars = sum(len(b.bars) for b in mins)
    assert n_bars == len(minute) - 1  # the defective bar was rejected...
    alerts = [a for a in read(fake_redis, ALERTS) if isinstance(a, Alert)]
    assert len(alerts) == 1 and "MSFT:CLOSE_OUTSIDE_RANGE" in alerts[0].text  # ...and reported
    daily_b = read(fake_redis, BARS_1D)
    assert len(daily_b) == 1 and daily_b[0].final and sorted(r.symbol for r in daily_b[0].bars) == list(SYMS)
    # the store holds what was published
    assert len(store.intraday("AAPL", 0, 2**62)) == sum(1 for b in minute if b.symbol == "AAPL")
    assert sorted(store.read_day("1d", D)["symbol"]) == list(SYMS)
    # the WINDOW_OPEN event came after the minutes up to 09:35 and before later ones
    w = log.index(f"{D}:WINDOW_OPEN")
    assert log[:2] == [f"{D}:PRE_MARKET", f"{D}:OPEN"] and all(":1m:" in x for x in log[2:w]) and w - 2 == 5
    assert log[-2:] == [f"{D}:DAILY", f"{D}:CLOSE"]


def test_run_backs_off_while_the_data_api_fails_then_publishes_what_it_missed(fake_redis, tmp_path: Path, bars) -> None:
    """The real alpaca-py data client against the stand-in answering 500s: the loop never dies, waits
    1, 2, 4... (capped) between attempts, alerts once per outage, resets after a success."""
    minute, daily = bars
    clock = ReplayClock(dt_to_ns(ny_datetime(D, "09:36")) + 15 * 10**9)
    bs = BrokerSettings(feed_minute_delay_s=10, feed_backoff_max_s=3.0, feed_poll_s=5.0, feed_alert_after_failures=3)
    sleeps: list[float] = []
    with AlpacaDataStandIn(minute, daily) as standin:
        def sleep(s: float) -> None:
            sleeps.append(s)
            if len(sleeps) == 6:
                standin.fail_next = 1  # a second, short outage
        src = AlpacaData("PKFEEDKEY123", "FEEDSECRET123", url=standin.url, feed="iex", timeout_s=2.0)
        feed = Feed(fake_redis, src, BarStore(tmp_path / "bars"), list(SYMS), settings=load_settings(), bs=bs,
                    clock=clock, sleep=sleep)
        standin.fail_next = 4
        feed.run(stop_after=8)
    assert sleeps == [1.0, 2.0, 3.0, 3.0, 5.0, 5.0, 1.0, 5.0]  # backoff capped, reset after a success
    phases = [e.phase for e in read(fake_redis, CLOCK) if isinstance(e, SessionEvent)]
    assert phases == ["PRE_MARKET", "OPEN", "WINDOW_OPEN"]  # each once, although ticks failed half-way
    mins = [b.bars[0].ts for b in read(fake_redis, BARS_1M) if isinstance(b, BarBatch)]
    assert mins == [dt_to_ns(ny_datetime(D, f"09:{m}")) for m in range(31, 37)]  # every missed minute, once
    alerts = [(a.kind, a.severity, a.runbook) for a in read(fake_redis, ALERTS)
              if isinstance(a, Alert) and a.kind.startswith("feed_")]  # (bars_rejected: the defective vendor bar)
    assert alerts == [("feed_failing", "warning", "executor-live-feed"), ("feed_recovered", "info", "executor-live-feed")]
    assert "FEEDSECRET123" not in str(read(fake_redis, ALERTS))


def test_the_feed_without_keys_names_the_missing_variables_and_idles(monkeypatch, capfd, request) -> None:
    """No APCA keys: one CRITICAL line naming both variables (not alpaca-py's "You must supply a method
    of authentication"), no heartbeat, idle until stopped (no restart loop)."""
    import threading

    from services.executor import feed as feed_mod
    from shared.settings import get_settings

    get_settings.cache_clear()
    request.addfinalizer(get_settings.cache_clear)
    for k in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "REDIS_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("APCA_API_KEY_ID", "PKONLYKEY")
    stop = threading.Event()
    stop.set()  # returns at once instead of idling
    real = feed_mod.refuse_and_idle
    monkeypatch.setattr(feed_mod, "refuse_and_idle", lambda *a, **k: real(*a, **{**k, "stop": stop}))
    assert feed_mod.main([]) == 2
    text = capfd.readouterr().err
    assert "missing APCA_API_SECRET_KEY" in text and "APCA_API_KEY_ID" not in text.split("missing", 1)[1]
    assert "method of authentication" not in text
    monkeypatch.delenv("APCA_API_KEY_ID")
    assert feed_mod.main([]) == 2
    assert "missing APCA_API_KEY_ID, APCA_API_SECRET_KEY" in capfd.readouterr().err


def test_the_feed_fetches_the_market_gate_symbol_and_keeps_a_heartbeat(fake_redis, tmp_path: Path, bars) -> None:
    from services.executor.feed import universe
    from shared.bus import live_consumers

    uni = tmp_path / "u.txt"
    uni.write_text("AAPL\nMSFT,Tech\n")
    s = load_settings(scan_universe_file=str(uni), scan_market_gate="symbol", scan_market_symbol="SPY")
    store = BarStore(tmp_path / "bars")
    assert universe(s, BrokerSettings(), store) == ["AAPL", "MSFT", "SPY"]
    assert universe(load_settings(scan_universe_file=str(uni), scan_market_gate="universe_proxy"), BrokerSettings(),
                    store) == ["AAPL", "MSFT"]
    minute, daily = bars
    clock = ReplayClock(dt_to_ns(ny_datetime(D, "08:31")))
    with AlpacaDataStandIn(minute, daily) as standin:
        src = AlpacaData("PKFEEDKEY123", "FEEDSECRET123", url=standin.url, feed="iex", timeout_s=2.0)
        feed = Feed(fake_redis, src, store, list(SYMS), settings=load_settings(consumer_name="feed-1"),
                    bs=BrokerSettings(), clock=clock, sleep=lambda _s: None)
        assert live_consumers(fake_redis, "feed") == []
        feed.run(stop_after=1)
    assert live_consumers(fake_redis, "feed") == [("feed", "feed-1")]
    assert 0 < fake_redis.ttl("avwap:hb:feed:feed-1") <= 30


def test_the_feed_backfills_a_short_store_at_start_and_says_so(fake_redis, tmp_path: Path) -> None:
    from shared.bus import live_consumers
    from tests.conftest import SAMPLE_DIR

    daily = [b for b in load_bars(SAMPLE_DIR / "daily_2017_2018.csv.gz", tf="1d").rows() if b.symbol in SYMS]
    clock = ReplayClock(dt_to_ns(ny_datetime("2019-01-02", "08:00")))
    store = BarStore(tmp_path / "bars")
    s = load_settings(scan_history_bars=80, consumer_name="feed-1")
    with AlpacaDataStandIn([], daily) as standin:
        src = AlpacaData("PKFEEDKEY123", "FEEDSECRET123", url=standin.url, feed="iex", timeout_s=5.0)
        feed = Feed(fake_redis, src, store, list(SYMS), settings=s, bs=BrokerSettings(), clock=clock)
        assert feed.ensure_history() is True
        assert live_consumers(fake_redis, "feed") == [("feed", "feed-1")]  # alive while it backfilled
        assert feed.ensure_history() is False  # enough history now: nothing to do
    assert len(store.dates("1d")) == 90 and store.dates("1d")[-1] == "2018-12-31"
    kinds = [a.kind for a in read(fake_redis, ALERTS) if isinstance(a, Alert)]
    assert kinds == ["feed_backfill", "feed_backfill_done"]
