"""Helpers shared by the executor tests: a session's events, bars, intents, and reading the streams."""

from __future__ import annotations

from pathlib import Path

import redis

from shared.clock import calendar, dt_to_ns, ny_datetime
from shared.ids import client_order_id, stable_id
from shared.schemas import (
    BarBatch,
    BarRow,
    EntryIntent,
    ExitIntent,
    Message,
    SessionEvent,
    StopIntent,
    decode,
)
from shared.settings import load_settings
from shared.streams import BROKER, ORDERS, REJECTIONS


def session(d: str, phase: str) -> SessionEvent:
    op, cl = calendar().open_close_ns(d)
    ts = {"PRE_MARKET": dt_to_ns(ny_datetime(d, "08:30")), "OPEN": op,
          "WINDOW_OPEN": dt_to_ns(ny_datetime(d, "09:35")), "CLOSE": cl}[phase]
    return SessionEvent(trade_date=d, phase=phase, ts=ts)


def daily(d: str, *rows: tuple[str, float, float, float, float], volume: float = 1_000_000) -> BarBatch:
    _, cl = calendar().open_close_ns(d)
    bars = [BarRow(symbol=s, ts=cl, open=o, high=h, low=lo, close=c, volume=volume) for s, o, h, lo, c in sorted(rows)]
    return BarBatch(tf="1d", trade_date=d, bars=bars, final=True, source="test")


def minute(d: str, hhmm: str, *rows: tuple[str, float, float, float, float], volume: float = 10_000) -> BarBatch:
    ts = dt_to_ns(ny_datetime(d, hhmm))
    bars = [BarRow(symbol=s, ts=ts, open=o, high=h, low=lo, close=c, volume=volume) for s, o, h, lo, c in sorted(rows)]
    return BarBatch(tf="1m", trade_date=d, bars=bars, source="test")


def entry(d: str, symbol: str, qty: int, level: float, stop: float, ts: int | None = None) -> EntryIntent:
    ts = ts if ts is not None else dt_to_ns(ny_datetime(d, "08:31"))
    return EntryIntent(intent_id=stable_id("in", symbol, d), candidate_id=stable_id("ca", symbol, d), symbol=symbol,
                       trade_date=d, qty=qty, entry_level=level, stop_price=stop, risk_per_share=round(level - stop, 4),
                       notional=round(qty * level, 2), ts=ts)


def stop_place(d: str, symbol: str, qty: int, price: float, ts: int, tag: str = "") -> StopIntent:
    return StopIntent(intent_id=stable_id("si", symbol, d, price, tag), symbol=symbol, trade_date=d, action="place",
                      qty=qty, stop_price=price, ts=ts)


def stop_replace(d: str, symbol: str, qty: int, price: float, target: str, ts: int) -> StopIntent:
    return StopIntent(intent_id=stable_id("si", symbol, d, price, target), symbol=symbol, trade_date=d, action="replace",
                      qty=qty, stop_price=price, target_client_order_id=target, ts=ts)


def exit_intent(d: str, symbol: str, qty: int, ts: int) -> ExitIntent:
    return ExitIntent(intent_id=stable_id("ex", symbol, d), symbol=symbol, trade_date=d, qty=qty, reason="test", ts=ts)


def coid(intent_id: str) -> str:
    return client_order_id(intent_id)


def read(r: redis.Redis, stream: str) -> list[Message]:
    return [decode(f[b"data"]) for _, f in r.xrange(stream)]


def orders(r: redis.Redis) -> list:
    return read(r, ORDERS)


def rejections(r: redis.Redis) -> list:
    return read(r, REJECTIONS)


def snapshots(r: redis.Redis) -> list:
    return read(r, BROKER)


def settings_for(mode: str, tmp: Path, **kw: object):
    return load_settings(execution_mode=mode, ledger_dir=str(tmp / "ledger"), artifacts_dir=str(tmp / "art"), **kw)
