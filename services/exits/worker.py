"""Exits worker: the shell around ``core`` (clock, bars, order events, broker snapshots -> stop intents, exit events).

Each message is one unit of work (``Bus.unit_of_work``): WATCH the index key and the position
keys the message touches, read them, run the pure core, then one commit: the message's XACK and,
only if it won, the changed position states, the index, the outputs (StopIntents on
``avwap:intents``, ExitEvents on ``avwap:exits``, alerts), the exit-event records of the day
(``avwap:state:exits:events:<D>``) and counters. A concurrent commit aborts it and the step is
recomputed on the new state; a crash before the commit leaves nothing (the message is
redelivered), after it nothing is pending. The handler answers the unit's ``Committed``.

Order across replicas: the group is exclusive (``ServiceSpec.exclusive``): one replica at a time
holds the group's lease and reads; the others stand by and one of them takes over, with every
entry still pending, once the holder stopped (at once) or died (after ``BUS_CLAIM_IDLE_MS``). So
the group applies messages in publication order with one replica or several, and the executor
receives the stop intents in the same order every time (its ledger is in arrival order).

The exit-event JSONL ``<ARTIFACTS_DIR>/exit_events/<D>.jsonl`` is rewritten after each commit (and
on start) from the committed records, sorted by (ts, symbol, seq), so every replica writes the same
bytes. Opening a position reads the symbol's bars from the bar store (``BARS_DIR``), which the feed
or replay driver writes before publishing them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec
import redis

from shared import metrics
from shared.artifacts import canonical_line, provenance, to_plain, under, write_atomic
from shared.bars import BarStore
from shared.bus import Committed, Delivery, UnitOfWork
from shared.clock import NS, dt_to_ns, ny_datetime, ny_trade_date
from shared.controls import orders_allowed, view_of
from shared.reads import typed_get
from shared.schemas import (
    BarBatch,
    BrokerSnapshot,
    ExitEvent,
    ExitPositionState,
    Message,
    OrderEvent,
    SessionEvent,
    decode,
    encode,
    type_name_of,
)
from shared.service import ServiceContext, ServiceSpec, Worker, run_service
from shared.settings import Settings
from shared.streams import (
    ALERTS,
    BARS_1D,
    BARS_1M,
    BROKER,
    CLOCK,
    EXITS,
    INTENTS,
    LEGACY_KILL_SWITCH_KEY,
    ORDERS,
    TRADING_STATE_KEY,
    state_key,
)

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
    return under(settings.core.artifacts_dir, ARTIFACT_SUBDIR, f"{d}.jsonl")


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


class Exits(Worker):
    """The exits shell over one Redis (and the bar store)."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.r: redis.Redis = ctx.r
        self.settings = ctx.settings
        self.params = Params.from_settings(ctx.settings.exits)
        self.store = BarStore(ctx.settings.core.bars_dir)
        self.maxlen = ctx.settings.core.bus_maxlen
        self.settings_hash = ctx.settings.hash()
        self.run_id = ctx.settings.resolved_run_id()

    def record_line(self, e: ExitEvent) -> bytes:
        """The event's line in the day's JSONL: the event plus its provenance (code, settings, inputs)."""
        prov = provenance(self.settings_hash, {"position": e.position_id, "event": e.event_id},
                          run_id=self.run_id)
        return canonical_line({**to_plain(e), "provenance": prov})

    # -- the message --------------------------------------------------------------------
    def handle(self, msg: Message, d: Delivery) -> Committed | list:
        if not isinstance(msg, HANDLED):
            return []  # nothing of ours (the bus acks it)
        dates, answer = self.transact(msg, d)
        if dates:
            write_artifacts(self.r, self.settings, dates)
        return answer

    def transact(self, msg: Message, d: Delivery | None) -> tuple[list[str], Committed]:
        """Run one step in a unit of work (states + outputs + records + ack in one commit).

        Returns the dates with new events and the bus answer (``lost_race``: another consumer had
        acked the entry first, so nothing was written).
        """
        hist_cache: dict[tuple[str, int], History] = {}
        for uow in self.ctx.bus.unit_of_work(GROUP, d, watch=[INDEX_KEY, TRADING_STATE_KEY],
                                             crash_points=("exits_before_exec", "exits_after_exec")):
            with uow:
                # the index and the trading state, read for this message (HALTED: no stop replace; shared.controls)
                raw_index, ts_raw, legacy_raw = typed_get(uow.r, [INDEX_KEY, TRADING_STATE_KEY, LEGACY_KILL_SWITCH_KEY])
                if isinstance(raw_index, Exception):
                    raise raw_index  # exits' own key is broken: nothing is decided (the entry stays pending)
                index = decode_index(raw_index)
                halted = not orders_allowed(view_of(ts_raw, legacy_raw))
                if isinstance(msg, OrderEvent):
                    symbols = [msg.symbol]
                elif isinstance(msg, SessionEvent) and msg.phase == "CLOSE":  # forgets closed positions too
                    symbols = sorted({*index.open, *index.closed})
                else:
                    symbols = list(index.open)
                keys = [pos_key(s) for s in symbols]
                positions: dict[str, ExitPositionState] = {}
                if keys:
                    uow.watch(*keys)
                    for s, raw in zip(symbols, uow.r.mget(keys), strict=True):
                        if raw:
                            positions[s] = decode_position(raw)
                old_dates: list[str] = []
                if isinstance(msg, SessionEvent) and msg.phase == "CLOSE":
                    old_dates = sorted(x.decode() for x in uow.r.smembers(EVENT_DATES_KEY))
                res = self.step(index, positions, msg, hist_cache, halted=halted)
                dates = self.queue(uow, index, res, msg, old_dates)
        assert uow.result is not None
        return ([] if uow.result.lost_race else dates), uow.result

    def step(self, index: ExitsIndex, positions: dict[str, ExitPositionState], msg: Message,
             hist_cache: dict[tuple[str, int], History], *, halted: bool = False) -> Result:
        p = msgspec.structs.replace(self.params, halted=True) if halted else self.params
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

    def queue(self, uow: UnitOfWork, index: ExitsIndex, res: Result, msg: Message, old_dates: list[str]) -> list[str]:
        """Queue the writes and outputs of one step in the unit of work. Returns the dates whose records changed."""
        for sym, pos in res.changed.items():
            if sym not in res.deleted:
                uow.set(pos_key(sym), encode(pos))
        for sym in res.deleted:
            uow.delete(pos_key(sym))
        if res.index_changed:
            uow.set(INDEX_KEY, _INDEX_ENC.encode(index))
        for it in res.intents:
            uow.emit(INTENTS, it)
        dates: set[str] = set()
        for e in core.sorted_events(res.events):
            uow.emit(EXITS, e)
            uow.hset(events_key(e.trade_date), record_field(e), self.record_line(e))
            dates.add(e.trade_date)
        for a in res.alerts:
            uow.emit(ALERTS, a)
        if dates:
            uow.sadd(EVENT_DATES_KEY, *sorted(dates))
        if old_dates:
            drop = old_dates[:-KEEP_EVENT_DATES] if len(old_dates) > KEEP_EVENT_DATES else []
            for od in drop:
                uow.delete(events_key(od))
            if drop:
                uow.srem(EVENT_DATES_KEY, *drop)
        counts = dict(res.counts)
        counts[f"handled:{type_name_of(msg)}"] = counts.get(f"handled:{type_name_of(msg)}", 0) + 1
        for k in sorted(counts):
            uow.hincrby(STATS_KEY, k, counts[k])
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


def unprotected_positions(r: redis.Redis) -> int:
    """Open positions whose shares are not all covered by a live stop at the broker (should be 0
    inside the stop window; with daily bars only, an entry filled today waits for the next window)."""
    return sum(1 for p in load_positions(r, include_closed=False).values()
               if p.qty > 0 and (p.live_stop_price <= 0 or p.live_stop_qty < p.qty))


def build(ctx: ServiceContext) -> Exits:
    metrics.scrape_gauge("avwap_exits_positions_without_live_stop",
                         "Open positions not fully covered by a live stop at the broker.", unprotected_positions)
    return Exits(ctx)


SPEC = ServiceSpec(name=GROUP, streams=STREAMS, build=build, produces=[INTENTS, EXITS, ALERTS], exclusive=True)


def main() -> int:
    return run_service(SPEC)


__all__ = ["ARTIFACT_SUBDIR", "EVENT_DATES_KEY", "Exits", "GROUP", "INDEX_KEY", "NS", "SPEC", "STATS_KEY", "STREAMS",
           "artifact_bytes", "artifact_path", "decode_index", "events_key", "load_positions", "pos_key", "write_artifacts"]
