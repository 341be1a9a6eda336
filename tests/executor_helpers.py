"""Helpers shared by the executor tests: a session's events, bars, intents, and reading the streams."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
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
from standins.alpaca_api import AlpacaStandIn


def session(d: str, phase: str) -> SessionEvent:
    op, cl = calendar().open_close_ns(d)
    ts = {"PRE_MARKET": dt_to_ns(ny_datetime(d, "08:30")), "OPEN": op,
          "WINDOW_OPEN": dt_to_ns(ny_datetime(d, "09:35")), "CLOSE": cl}[phase]
    return SessionEvent(trade_date=d, phase=phase, ts=ts)


def at(d: str, hhmm: str):
    """A stand-in clock fixed at NY ``hhmm`` on ``d`` (``AlpacaStandIn(clock=...)``)."""
    moment = ny_datetime(d, hhmm)
    return lambda: moment


def standin_at_open(**kw: object) -> AlpacaStandIn:
    """The stand-in the Alpaca-mode executor tests run against: its clock fixed at 10:00 NY on
    2018-03-02 (a session, inside the stop window), answering after 0.6 s; ``kw`` overrides."""
    return AlpacaStandIn(**{"response_delay_s": 0.6, "clock": at("2018-03-02", "10:00"), **kw})  # type: ignore[arg-type]


@pytest.fixture(name="standin")
def standin_fixture() -> Iterator[AlpacaStandIn]:
    """``standin``: a running ``standin_at_open()`` (a test module imports ``standin_fixture`` to use it)."""
    with standin_at_open() as s:
        yield s


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


KEY, SECRET = "PKTESTKEY0123456789", "TESTSECRET0123456789abcdef"


def alpaca_executor(r: redis.Redis, tmp: Path, standin, *, reconcile: bool = True, mode: str = "ALPACA_PAPER",
                    settings: dict[str, object] | None = None, updates=None, **bs: object):
    """An Executor over the real alpaca-py client pointed at ``standin`` (fast polls; 0.3 s timeouts)."""
    from services.executor.alpaca import AlpacaBroker
    from services.executor.settings import BrokerSettings
    from services.executor.worker import Executor
    from shared.service import make_context

    ctx = make_context("executor", settings_for(mode, tmp, **(settings or {})), r)
    broker = AlpacaBroker.connect(KEY, SECRET, base_url=standin.url, paper=mode != "LIVE", timeout_s=0.3)
    ex = Executor(ctx, BrokerSettings(**{"broker_poll_s": 0.001, "apca_api_base_url": standin.url,
                                         "apca_allow_local_url": True, **bs}), broker, updates)
    ex.start(reconcile=False)
    if reconcile:
        assert ex.reconcile()
    return ex


def sim_executor(r: redis.Redis, tmp: Path, mode: str = "PAPER_SIM", *, settings: dict[str, object] | None = None,
                 **bs: object):
    """An Executor with no broker adapter (PAPER_SIM's simulator, or DRY_RUN) over ``r``."""
    from services.executor.settings import BrokerSettings
    from services.executor.worker import Executor
    from shared.service import make_context

    return Executor(make_context("executor", settings_for(mode, tmp, **(settings or {})), r), BrokerSettings(**bs))


def feed(ex, *msgs: Message) -> None:
    """Hand each message to the executor as the consumer would (no stream entry)."""
    for m in msgs:
        ex.handle(m, None)


def poll(ex) -> None:
    """One idle round with the poll due now."""
    ex._next_poll = 0.0
    ex.idle()


def clean_ledger(r: redis.Redis, tmp: Path, mode: str = "ALPACA_PAPER") -> list[dict]:
    """Every order event and executor rejection is in the mode's ledger exactly once, nothing else is,
    and every line carries its provenance. Returns the ledger records."""
    from shared.artifacts import read_jsonl

    recs = [x for p in sorted((tmp / "ledger" / mode).glob("*.jsonl")) for x in read_jsonl(p)]
    want = sorted([e.event_id for e in orders(r)] + [x.rejection_id for x in rejections(r) if x.source == "executor"])
    assert sorted(x["record_id"] for x in recs) == want
    for x in recs:
        prov = x["provenance"]
        assert prov["code_version"] and prov["settings_hash"] and prov["input:intent"] == x["intent_id"], x
    return recs
