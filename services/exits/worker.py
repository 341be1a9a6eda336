"""Exits worker: the shell around ``core`` (clock, bars, order events, broker snapshots -> stop intents, exit events).

Each message is one optimistic transaction: WATCH the index key and the position keys the message
touches, read them, run the pure core, then MULTI: the changed position states, the index, the
outputs (StopIntents on ``avwap:intents``, ExitEvents on ``avwap:exits``, alerts), the exit-event
records of the day (``avwap:state:exits:events:<D>``), counters, and the message's XACK; EXEC. A
concurrent replica's commit aborts the EXEC and the step is recomputed on the new state; a crash
before EXEC leaves nothing (the message is redelivered), after it nothing is pending. The handler
answers ``Committed`` (``lost_race`` from its own XACK's reply) so the bus does not ack it twice.

Order across replicas: before its transaction a replica waits until no earlier entry of the
group (by publication order, on any input stream) is still pending at another consumer, and takes
over such an entry itself once it has been idle ``BUS_CLAIM_IDLE_MS``. So the group applies
messages in publication order with one replica or several, and the executor receives the stop
intents in the same order every time (its ledger is in arrival order).

The exit-event JSONL ``<ARTIFACTS_DIR>/exit_events/<D>.jsonl`` is rewritten after each commit (and
on start) from the committed records, sorted by (ts, symbol, seq), so every replica writes the same
bytes. Opening a position reads the symbol's bars from the bar store (``BARS_DIR``), which the feed
or replay driver writes before publishing them.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import msgspec
import redis

from shared.artifacts import canonical_line, provenance, to_plain, write_atomic
from shared.bars import BarStore
from shared.bus import Committed, Delivery, fields_of, publication_order
from shared.clock import NS, dt_to_ns, ny_datetime, ny_trade_date
from shared.crash import crash_point
from shared.schemas import (
    BarBatch,
    BrokerSnapshot,
    ExitEvent,
    ExitPositionState,
    Message,
    OrderEvent,
    SchemaError,
    SessionEvent,
    decode,
    encode,
    type_name_of,
)
from shared.service import ServiceContext, ServiceSpec, run_service
from shared.settings import Settings
from shared.streams import ALERTS, BARS_1D, BARS_1M, BROKER, CLOCK, EXITS, INTENTS, ORDERS, state_key

from . import core
from .core import ExitsIndex, History, Params, Result

log = logging.getLogger(__name__)

GROUP = "exits"
STREAMS = [CLOCK, BARS_1M, BARS_1D, ORDERS, BROKER]
INDEX_KEY = state_key("exits", "index")
STATS_KEY = state_key("exits", "stats")
EVENT_DATES_KEY = state_key("exits", "event_dates")
ARTIFACT_SUBDIR = "exit_events"
KEEP_EVENT_DATES = 10  # NY dates of exit-event records kept in Redis (the JSONL files are the record)
MAX_TXN_RETRIES = 200
HANDLED = (BarBatch, SessionEvent, OrderEvent, BrokerSnapshot)

_INDEX_ENC = msgspec.json.Encoder()
_INDEX_DEC = msgspec.json.Decoder(ExitsIndex)


def pos_key(symbol: str) -> str:
    return state_key("exits", "pos", symbol)


def events_key(d: str) -> str:
    return state_key("exits", "events", d)


def decode_index(raw: bytes | None) -> ExitsIndex:
    return ExitsIndex() if not raw else _INDEX_DEC.decode(raw)


def decode_position(raw: bytes) -> ExitPositionState:
    pos = decode(raw, expect=ExitPositionState)
    assert isinstance(pos, ExitPositionState)
    return pos


def artifact_path(settings: Settings, d: str) -> Path:
    return Path(settings.core.artifacts_dir) / ARTIFACT_SUBDIR / f"{d}.jsonl"


def record_field(e: ExitEvent) -> str:
    """The record's field in ``avwap:state:exits:events:<D>``; ``_field_order`` sorts by it."""
    return f"{e.ts}:{e.symbol}:{e.seq}:{e.event_id}"


def _field_order(f: bytes) -> tuple[int, str, int, str]:
    ts, sym, seq, eid = f.decode().split(":")
    return int(ts), sym, int(seq), eid


def artifact_bytes(records: dict[bytes, bytes]) -> bytes:
    """The day's JSONL from its committed records: canonical lines in (ts, symbol, seq, id) order."""
    return b"".join(records[f] for f in sorted(records, key=_field_order))


def write_artifacts(r: redis.Redis, settings: Settings, dates: list[str]) -> None:
    """Rewrite the days' JSONL from the committed records until they did not grow meanwhile."""
    for d in sorted(set(dates)):
        for _ in range(20):
            records = r.hgetall(events_key(d))
            if not records:
                break
            write_atomic(artifact_path(settings, d), artifact_bytes(records))
            if r.hlen(events_key(d)) == len(records):
                break


class Exits:
    """The exits shell over one Redis (and the bar store)."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.r: redis.Redis = ctx.r
        self.settings = ctx.settings
        self.params = Params.from_settings(ctx.settings.exits)
        self.store = BarStore(ctx.settings.core.bars_dir)
        self.maxlen = ctx.settings.core.bus_maxlen
        self.claim_idle_ms = ctx.settings.core.bus_claim_idle_ms
        self.wait_max_s = ctx.settings.exits.order_wait_max_s
        self.settings_hash = ctx.settings.hash()
        self.run_id = ctx.settings.resolved_run_id()

    def record_line(self, e: ExitEvent) -> bytes:
        """The event's line in the day's JSONL: the event plus its provenance (code, settings, inputs)."""
        prov = provenance(self.settings_hash, {"position": e.position_id, "event": e.event_id},
                          run_id=self.run_id)
        return canonical_line({**to_plain(e), "provenance": prov})

    # -- the message --------------------------------------------------------------------
    def handle(self, msg: Message, d: Delivery):
        if not isinstance(msg, HANDLED):
            return []  # nothing of ours (the bus acks it)
        self.wait_turn(d)
        dates, lost = self.transact(msg, d)
        if dates:
            write_artifacts(self.r, self.settings, dates)
        return Committed(lost_race=lost)

    def transact(self, msg: Message, d: Delivery | None) -> tuple[list[str], bool]:
        """Run one step atomically (states + outputs + records + ack).

        Returns the dates with new events, and whether the entry had already been acked by another
        consumer (a lost race: the WATCHed state was unchanged, so what it wrote repeats that commit).
        """
        hist_cache: dict[tuple[str, int], History] = {}
        for _ in range(MAX_TXN_RETRIES):
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(INDEX_KEY)
                    index = decode_index(pipe.get(INDEX_KEY))
                    if isinstance(msg, OrderEvent):
                        symbols = [msg.symbol]
                    elif isinstance(msg, SessionEvent) and msg.phase == "CLOSE":  # forgets closed positions too
                        symbols = sorted({*index.open, *index.closed})
                    else:
                        symbols = list(index.open)
                    keys = [pos_key(s) for s in symbols]
                    positions: dict[str, ExitPositionState] = {}
                    if keys:
                        pipe.watch(*keys)
                        for s, raw in zip(symbols, pipe.mget(keys), strict=True):
                            if raw:
                                positions[s] = decode_position(raw)
                    old_dates: list[str] = []
                    if isinstance(msg, SessionEvent) and msg.phase == "CLOSE":
                        old_dates = sorted(x.decode() for x in pipe.smembers(EVENT_DATES_KEY))
                    res = self.step(index, positions, msg, hist_cache)
                    pipe.multi()
                    dates = self.queue(pipe, index, res, msg, old_dates)
                    if d is not None:
                        pipe.xack(d.stream, GROUP, d.entry_id)
                    crash_point("exits_before_exec")
                    replies = pipe.execute()
                    crash_point("exits_after_exec")
                    return dates, d is not None and replies[-1] == 0
                except redis.WatchError:
                    continue
        raise RuntimeError("exits: state transaction kept conflicting")

    def step(self, index: ExitsIndex, positions: dict[str, ExitPositionState], msg: Message,
             hist_cache: dict[tuple[str, int], History]) -> Result:
        p = self.params
        if isinstance(msg, BarBatch):
            return core.on_bars(index, positions, msg, p)
        if isinstance(msg, SessionEvent):
            return core.on_session(index, positions, msg, p)
        if isinstance(msg, BrokerSnapshot):
            return core.on_snapshot(index, positions, msg, p)
        assert isinstance(msg, OrderEvent)
        pos = positions.get(msg.symbol)
        hist = None
        if core.needs_history(pos, msg):
            through = core.history_through(index, msg)
            key = (msg.symbol, through)
            if key not in hist_cache:
                hist_cache[key] = self.history(msg.symbol, through)
            hist = hist_cache[key]
        return core.on_order(index, pos, msg, p, hist)

    def queue(self, pipe: redis.client.Pipeline, index: ExitsIndex, res: Result, msg: Message,
              old_dates: list[str]) -> list[str]:
        """Queue the writes of one step in the open MULTI. Returns the dates whose records changed."""
        for sym, pos in res.changed.items():
            if sym not in res.deleted:
                pipe.set(pos_key(sym), encode(pos))
        for sym in res.deleted:
            pipe.delete(pos_key(sym))
        if res.index_changed:
            pipe.set(INDEX_KEY, _INDEX_ENC.encode(index))
        for it in res.intents:
            pipe.xadd(INTENTS, fields_of(it), maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        dates: set[str] = set()
        for e in core.sorted_events(res.events):
            pipe.xadd(EXITS, fields_of(e), maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
            pipe.hset(events_key(e.trade_date), record_field(e), self.record_line(e))
            dates.add(e.trade_date)
        for a in res.alerts:
            pipe.xadd(ALERTS, fields_of(a), maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        if dates:
            pipe.sadd(EVENT_DATES_KEY, *sorted(dates))
        if old_dates:
            drop = old_dates[:-KEEP_EVENT_DATES] if len(old_dates) > KEEP_EVENT_DATES else []
            for od in drop:
                pipe.delete(events_key(od))
            if drop:
                pipe.srem(EVENT_DATES_KEY, *drop)
        counts = dict(res.counts)
        counts[f"handled:{type_name_of(msg)}"] = counts.get(f"handled:{type_name_of(msg)}", 0) + 1
        for k in sorted(counts):
            pipe.hincrby(STATS_KEY, k, counts[k])
        return sorted(dates)

    # -- the bar store --------------------------------------------------------------------
    def history(self, symbol: str, through_ts: int) -> History:
        """The symbol's daily bars (enough for the swing low) and the 1-minute bars of its last
        ``hl_lookback_days`` sessions, up to ``through_ts``, from the bar store."""
        rules = self.params.rules
        d = ny_trade_date(through_ts)
        daily = [b for b in self.store.daily(symbol, through=d, lookback=2 * rules.swing_lookback + 10) if b.ts <= through_ts]
        n = max(rules.hl_lookback_days, 0)
        if n == 0:
            return History(daily=daily)
        days = sorted({ny_trade_date(b.ts) for b in daily})
        if len(days) >= n:
            first = days[-n]
        else:  # too little daily history: the last few 1-minute sessions of the store
            m = [x for x in self.store.dates("1m") if x <= d]
            first = m[-(3 * n):][0] if m else d
        minutes = self.store.intraday(symbol, dt_to_ns(ny_datetime(first, "00:00")), through_ts)
        return History(daily=daily, minutes=minutes)

    # -- order across replicas --------------------------------------------------------------
    def _earlier_pending(self, d: Delivery) -> tuple[str, str, str, int] | None:
        """The earliest entry of the group published before ``d`` and pending at another consumer."""
        pipe = self.r.pipeline(transaction=False)
        for s in STREAMS:
            pipe.xpending_range(s, GROUP, min="-", max=d.entry_id, count=10)
        mine = publication_order((d.stream, d.entry_id))
        best: tuple[tuple[int, int, int], tuple[str, str, str, int]] | None = None
        for s, rows in zip(STREAMS, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(rows, Exception):
                continue
            for row in rows:
                eid = row["message_id"].decode() if isinstance(row["message_id"], bytes) else row["message_id"]
                who = row["consumer"].decode() if isinstance(row["consumer"], bytes) else row["consumer"]
                if who == d.consumer:
                    continue
                order = publication_order((s, eid))
                if order < mine and (best is None or order < best[0]):
                    best = (order, (s, eid, who, int(row["time_since_delivered"])))
        return best[1] if best else None

    def wait_turn(self, d: Delivery, depth: int = 0) -> None:
        """Wait until every earlier entry of the group is committed (taking over a stuck one)."""
        if self.wait_max_s <= 0:
            return
        deadline = time.monotonic() + self.wait_max_s
        sleep = 0.001
        while True:
            blocker = self._earlier_pending(d)
            if blocker is None:
                return
            stream, eid, who, idle_ms = blocker
            if idle_ms >= self.claim_idle_ms and depth < 20 and self.take_over(stream, eid, d.consumer, depth):
                continue
            if time.monotonic() > deadline:
                log.warning("exits: %s %s handled before %s %s (still pending at %s after %.1fs)", d.stream,
                            d.entry_id, stream, eid, who, self.wait_max_s)
                with contextlib.suppress(redis.RedisError):
                    self.r.hincrby(STATS_KEY, "order_wait_timeout", 1)
                return
            time.sleep(sleep)
            sleep = min(sleep * 2, 0.02)

    def take_over(self, stream: str, entry_id: str, consumer: str, depth: int) -> bool:
        """Claim a stuck earlier entry and handle it now (in order). False when it cannot be."""
        got = self.r.xclaim(stream, GROUP, consumer, self.claim_idle_ms, [entry_id])
        if not got or got[0] is None or got[0][1] is None:
            return bool(got)  # someone else took it (or it is gone): look again
        _, fields = got[0]
        try:
            msg = decode(fields[b"data"])
        except (SchemaError, KeyError):
            return False  # the bus dead-letters it when it next claims it
        log.warning("exits: took over %s %s (idle at another consumer) to keep the order", stream, entry_id)
        dd = Delivery(stream, entry_id, 0, consumer)
        if isinstance(msg, HANDLED):
            self.wait_turn(dd, depth + 1)
            dates, _ = self.transact(msg, dd)
            write_artifacts(self.r, self.settings, dates)
        else:
            self.r.xack(stream, GROUP, entry_id)
        return True

    def start(self) -> None:
        """Rewrite every day's exit-event JSONL still held in Redis (after a crash between commit and write)."""
        dates = sorted(x.decode() for x in self.r.smembers(EVENT_DATES_KEY))
        write_artifacts(self.r, self.settings, dates)


def load_positions(r: redis.Redis, include_closed: bool = True) -> dict[str, ExitPositionState]:
    """Every position state in Redis (for ``avwap exits status``)."""
    out: dict[str, ExitPositionState] = {}
    for key in sorted(r.scan_iter(pos_key("*"))):
        raw = r.get(key)
        if raw:
            pos = decode_position(raw)
            if include_closed or not pos.closed:
                out[pos.symbol] = pos
    return out


def build_spec() -> ServiceSpec:
    holder: dict[str, Exits] = {}

    def build(ctx: ServiceContext):
        ex = holder["ex"] = Exits(ctx)
        return ex.handle

    def on_start(ctx: ServiceContext):
        holder["ex"].start()
        return []

    return ServiceSpec(name=GROUP, streams=STREAMS, build=build, on_start=on_start, produces=[INTENTS, EXITS, ALERTS])


SPEC = build_spec()


def main() -> int:
    return run_service(SPEC)


__all__ = ["ARTIFACT_SUBDIR", "EVENT_DATES_KEY", "Exits", "GROUP", "INDEX_KEY", "NS", "SPEC", "STATS_KEY", "STREAMS",
           "artifact_bytes", "artifact_path", "decode_index", "events_key", "load_positions", "pos_key", "write_artifacts"]
