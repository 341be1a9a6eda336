"""Builders shared by the analytics tests (fills, bars, a real-data bar store); no tests here."""

from __future__ import annotations

from pathlib import Path

from shared.bars import BarStore, load_bars
from shared.clock import calendar, dt_to_ns, ny_datetime
from shared.ids import client_order_id, stable_id
from shared.schemas import BarRow, OrderEvent
from tests.conftest import DAILY_FILE, INTRADAY_FILE

REAL_SYMBOLS = ("AAPL", "JPM", "MSFT")


def close_ns(d: str) -> int:
    return calendar().open_close_ns(d)[1]


def at(d: str, hhmm: str) -> int:
    return dt_to_ns(ny_datetime(d, hhmm))


def fill(symbol: str, side: str, qty: int, price: float, ts: int, date: str, *, kind: str = "entry", intent: str = "i1",
         fees: float = 0.0, stop: float | None = None, tid: str = "", cum: int = 0, event: str = "filled") -> OrderEvent:
    tid = tid or stable_id("t", symbol, side, qty, price, ts)
    return OrderEvent(event_id=stable_id("oe", tid), event=event, mode="PAPER_SIM", intent_id=intent,
                      client_order_id=client_order_id(intent), symbol=symbol, side=side, kind=kind, qty=qty,
                      stop_price=stop, filled_qty=cum or qty, fill_qty=qty, fill_price=price, avg_fill_price=price,
                      trade_id=tid, fees=fees, trade_date=date, ts=ts)


def daily_bar(symbol: str, d: str, o: float, h: float, lo: float, c: float) -> BarRow:
    return BarRow(symbol=symbol, ts=close_ns(d), open=o, high=h, low=lo, close=c, volume=1e6)


def real_store(root: Path, start: str = "2018-06-01", end: str = "2018-12-31", intraday: bool = True) -> BarStore:
    """A bar store with real daily bars of REAL_SYMBOLS in [start, end] (+ the 1-minute file's)."""
    res = load_bars(DAILY_FILE)
    f = res.frame
    res.frame = f[f["symbol"].isin(REAL_SYMBOLS) & (f["trade_date"] >= start) & (f["trade_date"] <= end)].reset_index(drop=True)
    store = BarStore(root)
    store.import_result(res)
    if intraday:
        mres = load_bars(INTRADAY_FILE)
        mf = mres.frame
        mres.frame = mf[mf["symbol"].isin(REAL_SYMBOLS)].reset_index(drop=True)
        store.import_result(mres)
    return store
