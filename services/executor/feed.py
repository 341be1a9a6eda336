"""Live market data and the session clock: ``python -m services.executor.feed`` (or the rq job ``feed_job``).

In the executor package because it holds the only broker credentials. Each tick (pure planning
in ``due_steps``, I/O in ``Feed.tick``) publishes, for the current NYSE session D, in order and
each exactly once (marks in Redis, published in the same MULTI as the message):

- ``SessionEvent(PRE_MARKET)`` at 08:30 ET, ``OPEN`` at the open, ``WINDOW_OPEN`` at STOP_WINDOW_START;
- 1-minute bars (``FEED_INTRADAY``): every completed minute, FEED_MINUTE_DELAY_S after it ends,
  one ``BarBatch(tf="1m")`` per minute on ``avwap:bars:1m``;
- after the close (+FEED_DAILY_DELAY_S): D's daily bars as one ``BarBatch(tf="1d", final=True)`` on
  ``avwap:bars:1d``, then ``SessionEvent(CLOSE)`` with ts = the close (early closes respected).

Bars are validated (``shared.bars.validate_rows``; rejects are logged and alerted with their
reasons) and written to the bar store BEFORE they are published. Event time: a late start
publishes missed events with their scheduled ts. Data errors never crash the loop: it
reconnects with exponential backoff (capped at FEED_BACKOFF_MAX_S) and alerts the operator when
the failures go on (FEED_ALERT_AFTER_FAILURES) and when it recovers.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

import redis
from pydantic import ValidationError

from shared import metrics
from shared.alerts import make_alert
from shared.bars import BarStore, validate_rows
from shared.bus import default_consumer_name, fields_of, write_heartbeat
from shared.clock import NS, NY, Clock, TradingCalendar, WallClock, calendar, dt_to_ns, ny_datetime
from shared.logs import redact, setup_logging
from shared.redis_conn import connect
from shared.schemas import BarBatch, BarRow, Message, SessionEvent
from shared.service import StreamIO, idle_invalid_settings, refuse_and_idle
from shared.settings import SECTIONS, Settings, get_settings
from shared.streams import ALERTS, BARS_1D, BARS_1M, CLOCK, state_key
from shared.universe import read_universe

from .rate_limit import RateLimiter, from_settings
from .settings import BrokerSettings

log = logging.getLogger(__name__)
GROUP = "feed"  # its heartbeat group: ``avwap health feed``
# What the feed consumes and produces (the compose graph test reads it): the session clock and the bars.
STREAM_IO = StreamIO(consumes=(), produces=(CLOCK, BARS_1M, BARS_1D, ALERTS))
PUBLISHED = state_key("feed", "published")  # hash: step key -> trade date
LAST_MINUTE = state_key("feed", "last_1m")  # hash: trade date -> last published minute ts


class DataSource(Protocol):
    def bars(self, symbols: Sequence[str], tf: str, start_ns: int, end_ns: int) -> list[BarRow]: ...


class AlpacaData:
    """alpaca-py ``StockHistoricalDataClient``; Alpaca stamps bars at their START, we at their END.
    ``adjustment``: FEED_ADJUSTMENT (split-adjusted by default, the same for the live bars and the backfill)."""

    def __init__(self, key: str | None, secret: str | None, *, url: str | None, feed: str, timeout_s: float,
                 cal: TradingCalendar | None = None, limiter: RateLimiter | None = None,
                 adjustment: str = "split") -> None:
        import functools

        from alpaca.data.historical import StockHistoricalDataClient

        self.client = StockHistoricalDataClient(key, secret, url_override=url.rstrip("/") if url else None)
        self.client._session.request = functools.partial(self.client._session.request, timeout=timeout_s)  # type: ignore[method-assign]  # noqa: SLF001
        self.client._retry_codes = []  # noqa: SLF001
        if limiter is not None:  # the shared broker REST limit (429s: paused and retried there)
            limiter.install(self.client)
        self.feed = feed
        self.adjustment = adjustment
        self.cal = cal or calendar()

    def bars(self, symbols: Sequence[str], tf: str, start_ns: int, end_ns: int) -> list[BarRow]:
        from alpaca.data.enums import Adjustment, DataFeed
        from alpaca.data.requests import StockBarsRequest
        from alpaca.data.timeframe import TimeFrame

        req = StockBarsRequest(symbol_or_symbols=list(symbols), timeframe=TimeFrame.Day if tf == "1d" else TimeFrame.Minute,
                               start=datetime.fromtimestamp(start_ns / NS, tz=UTC), end=datetime.fromtimestamp(end_ns / NS, tz=UTC),
                               feed=DataFeed(self.feed), adjustment=Adjustment(self.adjustment))
        out: list[BarRow] = []
        for sym, rows in self.client.get_stock_bars(req).data.items():
            for b in rows:
                start = dt_to_ns(b.timestamp)
                if tf == "1d":
                    d = b.timestamp.astimezone(NY).date().isoformat()
                    if not self.cal.is_session(d):
                        continue
                    ts = self.cal.open_close_ns(d)[1]
                else:
                    ts = start + 60 * NS
                out.append(BarRow(symbol=sym, ts=ts, open=float(b.open), high=float(b.high), low=float(b.low),
                                  close=float(b.close), volume=float(b.volume)))
        return sorted(out, key=lambda r: (r.ts, r.symbol))


# -- planning (pure) ----------------------------------------------------------------------
def schedule(cal: TradingCalendar, d: str, window_start: str, daily_delay_s: int,
             minute_delay_s: int = 0) -> list[tuple[str, int, int]]:
    """(step, due_ns, event_ts) of session ``d``: the clock events and the daily bars.

    WINDOW_OPEN is due once the minute bar ending at the window start is available (``minute_delay_s``
    after it), so that bar is published before it, as the replay driver does: a stop sent at the
    window open acts on the bars after it, never on the minute that ended as it opened.
    """
    open_ns, close_ns = cal.open_close_ns(d)
    pre = dt_to_ns(ny_datetime(d, "08:30"))
    win = dt_to_ns(ny_datetime(d, window_start))
    after = close_ns + daily_delay_s * NS
    return [("PRE_MARKET", pre, pre), ("OPEN", open_ns, open_ns), ("WINDOW_OPEN", win + minute_delay_s * NS, win),
            ("DAILY", after, close_ns), ("CLOSE", after, close_ns)]


def due_steps(cal: TradingCalendar, now_ns: int, done: set[str], window_start: str, daily_delay_s: int,
              minute_delay_s: int = 0) -> list[tuple[str, str, int]]:
    """(trade_date, step, event_ts) due at ``now_ns`` and not yet done, in order (today's session only)."""
    d = cal.session_of(now_ns)
    if d is None:
        return []
    return [(d, step, ts) for step, due, ts in schedule(cal, d, window_start, daily_delay_s, minute_delay_s)
            if due <= now_ns and f"{d}:{step}" not in done]


# -- the shell --------------------------------------------------------------------------------
class Feed:
    def __init__(self, r: redis.Redis, source: DataSource, store: BarStore, symbols: Sequence[str], *,
                 settings: Settings, bs: BrokerSettings, clock: Clock | None = None, cal: TradingCalendar | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.r = r
        self.source = source
        self.store = store
        self.symbols = sorted(set(symbols))
        self.s = settings
        self.bs = bs
        self.clock = clock or WallClock()
        self.cal = cal or calendar()
        self.window_start = settings.exits.stop_window_start
        self.maxlen = settings.core.bus_maxlen
        self.sleep = sleep
        self.consumer = settings.core.consumer_name or default_consumer_name()
        self.ticks = 0

    def _publish(self, stream: str, msg: Message, mark: str, d: str, extra: dict[str, int] | None = None) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.xadd(stream, fields_of(msg), maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        pipe.hset(PUBLISHED, mark, d)
        for k, v in (extra or {}).items():
            pipe.hset(LAST_MINUTE, k, v)
        pipe.execute()
        if isinstance(msg, BarBatch) and msg.bars:
            metrics.feed_published(msg.tf, max(b.ts for b in msg.bars) / 1e9)

    def _valid(self, rows: list[BarRow], d: str, ts: int) -> list[BarRow]:
        good, rejects = validate_rows(rows)
        if rejects:
            reasons = sorted({x.reason for x in rejects})
            log.warning("feed: %d bars rejected on %s: %s", len(rejects), d, reasons)
            a = make_alert("feed", "bars_rejected", f"{len(rejects)} bars rejected on {d}", severity="warning",
                           text=", ".join(f"{x.symbol}:{x.reason}" for x in rejects[:20]), trade_date=d, ts=ts,
                           dedup=f"rej:{d}:{ts}:{len(rejects)}")
            self.r.xadd(ALERTS, fields_of(a), maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        return sorted(good, key=lambda r: (r.ts, r.symbol))

    def tick(self) -> list[str]:
        """Publish whatever is due now, in event-time order. Returns the step keys published."""
        now = self.clock.now_ns()
        done = {k.decode() if isinstance(k, bytes) else k for k in self.r.hkeys(PUBLISHED)}
        published: list[str] = []
        upto = now - self.bs.feed_minute_delay_s * NS
        for day, step, ts in due_steps(self.cal, now, done, self.window_start, self.bs.feed_daily_delay_s,
                                       self.bs.feed_minute_delay_s):
            opened = f"{day}:OPEN" in done or f"{day}:OPEN" in published
            if self.bs.feed_intraday and opened and step in ("WINDOW_OPEN", "DAILY"):
                published += self._minutes(day, min(upto, ts))  # the minutes before this step first
            if step == "DAILY":
                open_ns, close_ns = self.cal.open_close_ns(day)
                rows = self._valid([b for b in self.source.bars(self.symbols, "1d", open_ns - 12 * 3600 * NS, close_ns)
                                    if self.cal.session_of(b.ts) == day], day, ts)
                self.store.append("1d", rows)  # the store first, then the stream
                self._publish(BARS_1D, BarBatch(tf="1d", trade_date=day, bars=rows, source="alpaca", final=True),
                              f"{day}:DAILY", day)
            else:
                self._publish(CLOCK, SessionEvent(trade_date=day, phase=step, ts=ts), f"{day}:{step}", day)
            published.append(f"{day}:{step}")
        d = self.cal.session_of(now)
        seen = done | set(published)
        if d is not None and self.bs.feed_intraday and f"{d}:OPEN" in seen and f"{d}:DAILY" not in seen:
            published += self._minutes(d, upto)
        return published

    def _minutes(self, d: str, upto: int) -> list[str]:
        """Publish every completed minute of ``d`` ending at or before ``upto`` not yet published."""
        open_ns, close_ns = self.cal.open_close_ns(d)
        last = self.r.hget(LAST_MINUTE, d)
        start = int(last) if last else open_ns
        end = min(upto, close_ns)
        if end <= start:
            return []
        rows = self._valid([b for b in self.source.bars(self.symbols, "1m", start, end) if start < b.ts <= end], d, end)
        by_ts: dict[int, list[BarRow]] = {}
        for b in rows:
            by_ts.setdefault(b.ts, []).append(b)
        out = []
        for ts in sorted(by_ts):
            self.store.append("1m", by_ts[ts])
            self._publish(BARS_1M, BarBatch(tf="1m", trade_date=d, bars=by_ts[ts], source="alpaca"), f"{d}:1m:{ts}", d, {d: ts})
            out.append(f"{d}:1m:{ts}")
        return out

    def run(self, stop_after: int | None = None) -> None:
        """Tick forever (or ``stop_after`` ticks), every FEED_POLL_S. A failing tick (data API, network,
        Redis) is retried with exponential backoff from 1 s to FEED_BACKOFF_MAX_S; after
        FEED_ALERT_AFTER_FAILURES failures in a row one ``feed_failing`` alert goes out, and one
        ``feed_recovered`` when a tick succeeds again. Missed steps are published on recovery."""
        backoff, n, failures, since = 1.0, 0, 0, 0
        while stop_after is None or n < stop_after:
            n += 1
            try:
                self.tick()
                self.heartbeat()
            except Exception as exc:  # noqa: BLE001 - the feed never dies on a data/network error
                failures += 1
                since = since or self.clock.now_ns()  # when this outage began
                log.warning("feed tick failed (%s: %s); retrying in %.1fs", type(exc).__name__, redact(str(exc))[:300], backoff)
                if failures == self.bs.feed_alert_after_failures:
                    self._alert("feed_failing", f"live feed failing: {failures} ticks in a row", "warning",
                                f"{type(exc).__name__}: {redact(str(exc))[:300]}; retrying with backoff up to "
                                f"{self.bs.feed_backoff_max_s:g}s", since)
                self.sleep(backoff)
                backoff = min(backoff * 2, self.bs.feed_backoff_max_s)
                continue
            if failures >= self.bs.feed_alert_after_failures:
                self._alert("feed_recovered", f"live feed recovered after {failures} failed ticks", "info", "", since)
            backoff, failures, since = 1.0, 0, 0
            self.sleep(self.bs.feed_poll_s)

    def ensure_history(self) -> bool:
        """At start: when the store holds fewer than SCAN_HISTORY_BARS closed sessions, backfill the daily
        history (SCAN_HISTORY_BARS + 10 sessions, ``services.executor.backfill``), saying so in the log and
        with alerts (start, done, failed). The heartbeat is kept during the backfill. True if it ran."""
        from .backfill import backfill, history_short, history_start, report_alerts

        need, now = self.s.scanner.scan_history_bars, self.clock.now_ns()
        if not self.symbols or not history_short(self.store, self.cal, now, need):
            return False
        start = history_start(self.cal, now, need + 10)
        msg = (f"bar store holds fewer than {need} daily sessions (SCAN_HISTORY_BARS): backfilling "
               f"{len(self.symbols)} symbols from {start}")
        log.warning("feed: %s", msg)
        self._alert("feed_backfill", f"feed: {msg}", "info", "", now)
        self.heartbeat()
        try:
            rep = backfill(self.source, self.store, self.symbols, start, bs=self.bs, clock=self.clock,
                           on_chunk=lambda *_: self.heartbeat())["1d"]
        except Exception as exc:  # noqa: BLE001 - the feed goes on; the scan fails closed on short history
            log.error("feed: backfill failed: %s: %s", type(exc).__name__, redact(str(exc))[:300])
            self._alert("feed_backfill_failed", "feed: start-up backfill failed", "warning",
                        f"{type(exc).__name__}: {redact(str(exc))[:300]}; run `bin/avwap data backfill`", now)
            return True
        done = self.clock.now_ns()
        log.info("feed: backfill done: %d chunks, %d new bars, %d rejected", rep.chunks, rep.written, len(rep.rejects))
        self._alert("feed_backfill_done", f"feed: backfill done, {rep.written} bars written", "info",
                    f"{rep.chunks} chunks; rejected {len(rep.rejects)} {rep.reasons() or ''}".strip(), now)
        for a in report_alerts(rep, GROUP, done):
            self.r.xadd(ALERTS, fields_of(a), maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        return True

    def heartbeat(self) -> None:
        """``avwap:hb:feed:<consumer>`` (TTL HEARTBEAT_TTL_S), refreshed after each good tick (and during a
        start-up backfill): ``avwap health feed``, compose's healthcheck, fails while the feed delivers nothing."""
        write_heartbeat(self.r, GROUP, self.consumer, self.s.core.heartbeat_ttl_s, self.ticks)
        self.ticks += 1

    def _alert(self, kind: str, title: str, severity: str, text: str, since: int) -> None:
        """Publish an operator alert (dedup: the outage it is about); never raises."""
        now = self.clock.now_ns()
        a = make_alert("feed", kind, title, severity=severity, text=text, ts=now, dedup=f"{kind}:{since}",
                       runbook="executor-live-feed")
        try:
            self.r.xadd(ALERTS, fields_of(a), maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        except redis.RedisError as exc:
            log.error("feed: could not publish the %s alert: %s", kind, exc)


def universe(settings: Settings, bs: BrokerSettings, store: BarStore) -> list[str]:
    """FEED_SYMBOLS, else SCAN_UNIVERSE_FILE, else the store's last session; plus the market-gate symbol
    (SCAN_MARKET_SYMBOL when SCAN_MARKET_GATE=symbol), which the scan needs bars of."""
    if bs.feed_symbols:
        syms = {s.upper() for s in bs.feed_symbols}
    elif settings.scanner.scan_universe_file:  # the scanner's universe, parsed by the same rules (UniverseError if bad)
        syms = set(read_universe(settings.scanner.scan_universe_file))
    else:
        dates = store.dates("1d")
        syms = set(store.read_day("1d", dates[-1])["symbol"]) if dates else set()
    if settings.scanner.scan_market_gate == "symbol" and settings.scanner.scan_market_symbol.strip():
        syms.add(settings.scanner.scan_market_symbol.strip().upper())
    return sorted(syms)


def missing_keys(bs: BrokerSettings) -> list[str]:
    """The broker key variables that are unset (the feed cannot fetch bars without both)."""
    return [name for name, v in (("APCA_API_KEY_ID", bs.apca_api_key_id), ("APCA_API_SECRET_KEY", bs.apca_api_secret_key))
            if v is None or not v.get_secret_value().strip()]


def data_source(bs: BrokerSettings, r: redis.Redis | None) -> AlpacaData:
    """The market-data client of the settings (keys, URL, feed, adjustment), under the shared rate limit."""
    key = bs.apca_api_key_id.get_secret_value() if bs.apca_api_key_id else None
    secret = bs.apca_api_secret_key.get_secret_value() if bs.apca_api_secret_key else None
    return AlpacaData(key, secret, url=bs.apca_data_url, feed=bs.feed_data_feed, timeout_s=bs.broker_timeout_s,
                      limiter=from_settings(r, bs), adjustment=bs.feed_adjustment)


def build_feed(settings: Settings | None = None, bs: BrokerSettings | None = None, r: redis.Redis | None = None) -> Feed:
    settings = settings or get_settings()
    bs = bs or BrokerSettings()
    if r is None:
        if not settings.core.redis_url:
            raise SystemExit("feed: REDIS_URL is required")
        r = connect(settings.core.redis_url)
    source = data_source(bs, r)
    store = BarStore(settings.core.bars_dir)
    return Feed(r, source, store, universe(settings, bs, store), settings=settings, bs=bs)


def feed_job() -> list[str]:
    """rq job: one scheduler tick (enqueue it every minute with rq's scheduler/cron)."""
    return build_feed().tick()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m services.executor.feed", description=__doc__.splitlines()[0])
    ap.add_argument("--once", action="store_true", help="one tick, then exit")
    args = ap.parse_args(argv)
    try:
        settings = get_settings()
        bs = BrokerSettings()
    except ValidationError:  # one line naming every bad variable, an alert, idle (no restart loop)
        return idle_invalid_settings(GROUP, sections=(*SECTIONS, BrokerSettings))
    setup_logging(settings.core.log_level, settings.core.log_format, service=GROUP)
    missing = missing_keys(bs)
    if missing:  # alpaca-py would only say "You must supply a method of authentication"
        return refuse_and_idle(GROUP, "settings_invalid", "feed: broker keys missing, not started",
                               f"missing {', '.join(missing)} (the feed's market-data keys: put them in .env.broker)",
                               redis_url=settings.core.redis_url, runbook="invalid-settings")
    feed = build_feed(settings, bs)
    metrics.serve(settings.core.metrics_port, settings.core.metrics_addr)
    if bs.feed_backfill_on_start:
        feed.ensure_history()
    if args.once:
        print("\n".join(feed.tick()))
        return 0
    feed.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
