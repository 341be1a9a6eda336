"""Builders for the exits tests (order events, snapshots, bars) and an in-process executor stand-in
built on the real PAPER_SIM simulator; no tests here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from services.executor.broker import OrderRequest
from services.executor.simulator import SimCosts, SimPosition, SimState, Simulator
from services.exits import core
from shared.clock import calendar, dt_to_ns, ny_datetime
from shared.ids import client_order_id, stable_id
from shared.schemas import (
    BarBatch,
    BarRow,
    BrokerOrder,
    BrokerPosition,
    BrokerSnapshot,
    ExitPositionState,
    OrderEvent,
    SessionEvent,
    StopIntent,
)

MIN = 60_000_000_000


def at(d: str, hhmm: str) -> int:
    return dt_to_ns(ny_datetime(d, hhmm))


def close_ns(d: str) -> int:
    return calendar().open_close_ns(d)[1]


def bar(sym: str, ts: int, low: float, *, o: float | None = None, h: float | None = None, c: float | None = None) -> BarRow:
    o = low + 0.05 if o is None else o
    c = low + 0.1 if c is None else c
    h = max(o, c, low + 0.2) if h is None else h
    return BarRow(symbol=sym, ts=ts, open=o, high=h, low=low, close=c, volume=1000.0)


def batch(bars: Sequence[BarRow], tf: str = "1m", d: str | None = None) -> BarBatch:
    from shared.clock import ny_trade_date

    return BarBatch(tf=tf, trade_date=d or ny_trade_date(bars[0].ts), bars=list(bars), source="test", final=tf == "1d")


def session(d: str, phase: str, ts: int | None = None) -> SessionEvent:
    if ts is None:
        ts = {"PRE_MARKET": at(d, "08:30"), "OPEN": at(d, "09:30"), "WINDOW_OPEN": at(d, "09:35"),
              "CLOSE": close_ns(d)}[phase]
    return SessionEvent(trade_date=d, phase=phase, ts=ts)


def entry_fill(sym: str, qty: int, price: float, ts: int, d: str, *, stop: float, intent: str | None = None,
               event: str = "filled", fill_qty: int | None = None, tid: str = "") -> OrderEvent:
    intent = intent or f"in-{sym}"
    fq = qty if fill_qty is None else fill_qty
    tid = tid or stable_id("t", sym, ts, fq)
    return OrderEvent(event_id=stable_id("ev", intent, event, tid), event=event, mode="PAPER_SIM", intent_id=intent,
                      client_order_id=client_order_id(intent), symbol=sym, side="buy", kind="entry", qty=qty,
                      stop_price=stop, filled_qty=fq, fill_qty=fq, fill_price=price, avg_fill_price=price,
                      trade_id=tid, trade_date=d, ts=ts)


def stop_event(it: StopIntent, event: str, ts: int | None = None, *, reason: str = "", fill_qty: int = 0,
               fill_price: float | None = None, coid: str | None = None, code: str = "NONE") -> OrderEvent:
    coid = coid or (it.target_client_order_id if it.action == "cancel" else client_order_id(it.intent_id))
    tid = stable_id("tr", coid, fill_qty, ts) if fill_qty else ""
    return OrderEvent(event_id=stable_id("ev", coid, event, tid), event=event, mode="PAPER_SIM", intent_id=it.intent_id,
                      client_order_id=coid, symbol=it.symbol, side="sell", kind="stop", qty=it.qty, order_type="stop",
                      stop_price=round(it.stop_price, 2) if it.action != "cancel" else None, filled_qty=fill_qty,
                      fill_qty=fill_qty, fill_price=fill_price, trade_id=tid, reason=reason, reason_code=code, trade_date=it.trade_date,
                      ts=it.ts if ts is None else ts)


def sell_fill(sym: str, qty: int, price: float, ts: int, d: str, kind: str = "exit", coid: str = "av-exit") -> OrderEvent:
    tid = stable_id("tr", coid, ts, qty)
    return OrderEvent(event_id=stable_id("ev", coid, "filled", tid), event="filled", mode="PAPER_SIM", intent_id="ex-1",
                      client_order_id=coid, symbol=sym, side="sell", kind=kind, qty=qty, filled_qty=qty, fill_qty=qty,
                      fill_price=price, trade_id=tid, trade_date=d, ts=ts)


def snapshot(d: str, ts: int, positions: dict[str, int], orders: Iterable[BrokerOrder] = (), reconciled: bool = True,
             reason: str = "periodic") -> BrokerSnapshot:
    return BrokerSnapshot(snapshot_id=stable_id("bs", d, ts, reason), mode="PAPER_SIM", trade_date=d, ts=ts,
                          equity=1e5, cash=1e5, buying_power=1e5,
                          positions=[BrokerPosition(symbol=s, qty=q, avg_entry_price=10.0) for s, q in sorted(positions.items())],
                          open_orders=list(orders), reconciled=reconciled, reason=reason)


def stop_order(sym: str, coid: str, qty: int, price: float, filled: int = 0, order_type: str = "stop") -> BrokerOrder:
    return BrokerOrder(client_order_id=coid, broker_order_id=f"b-{coid}", symbol=sym, side="sell", order_type=order_type,
                       qty=qty, status="accepted", filled_qty=filled, stop_price=price if order_type != "market" else None)


@dataclass
class Book:
    """The exits core driven by hand: index + positions, applying each Result like the worker does."""

    p: core.Params = field(default_factory=core.Params)
    index: core.ExitsIndex = field(default_factory=core.ExitsIndex)
    positions: dict[str, ExitPositionState] = field(default_factory=dict)
    intents: list[StopIntent] = field(default_factory=list)
    events: list = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def apply(self, res: core.Result) -> core.Result:
        for sym, pos in res.changed.items():
            self.positions[sym] = pos
        for sym in res.deleted:
            self.positions.pop(sym, None)
        self.intents += res.intents
        self.events += res.events
        for k, v in res.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v
        return res

    def open_positions(self) -> dict[str, ExitPositionState]:
        return {s: self.positions[s] for s in self.index.open if s in self.positions}

    def bars(self, b: BarBatch) -> core.Result:
        return self.apply(core.on_bars(self.index, self.open_positions(), b, self.p))

    def session(self, ev: SessionEvent) -> core.Result:
        return self.apply(core.on_session(self.index, self.open_positions(), ev, self.p))

    def snapshot(self, snap: BrokerSnapshot) -> core.Result:
        return self.apply(core.on_snapshot(self.index, self.open_positions(), snap, self.p))

    def order(self, ev: OrderEvent, hist: core.History | None = None) -> core.Result:
        return self.apply(core.on_order(self.index, self.positions.get(ev.symbol), ev, self.p, hist))

    def kinds(self, symbol: str | None = None) -> list[str]:
        return [e.kind for e in self.events if symbol is None or e.symbol == symbol]


class SimExecutor:
    """What the executor does with stop intents in PAPER_SIM, on the real simulator: orders become
    sim orders (eligible from the bar after the intent), bars fill them, every answer is an event."""

    def __init__(self) -> None:
        self.sim = Simulator(SimState(cash=1e9), SimCosts())
        self.intent_of: dict[str, StopIntent] = {}

    def hold(self, sym: str, qty: int, price: float) -> None:
        self.sim.state.positions[sym] = SimPosition(qty=qty, avg_price=price)

    def on_intent(self, it: StopIntent) -> list[OrderEvent]:
        self.sim.set_time(it.ts)
        coid = client_order_id(it.intent_id)
        if it.action == "place":
            self.sim.submit(OrderRequest(client_order_id=coid, symbol=it.symbol, side="sell", qty=it.qty,
                                         order_type="stop", stop_price=round(it.stop_price, 2)))
            self.intent_of[coid] = it
            return [stop_event(it, "accepted")]
        if it.action == "replace":
            old = self.sim.state.orders.get(it.target_client_order_id)
            if old is None or old.status in ("filled", "replaced", "canceled"):
                return [stop_event(it, "rejected", reason="TARGET_NOT_OPEN")]
            self.sim.replace(old.broker_order_id, qty=it.qty, stop_price=round(it.stop_price, 2), limit_price=None,
                             new_client_order_id=coid)
            self.intent_of[coid] = it
            return [stop_event(it, "replaced")]
        old = self.sim.state.orders.get(it.target_client_order_id)
        if old is not None and old.status not in ("filled", "replaced", "canceled"):
            self.sim.cancel(old.broker_order_id)
            return [stop_event(it, "cancelled")]
        return []

    def on_bars(self, bars: list[BarRow]) -> list[OrderEvent]:
        out = []
        for coid in self.sim.on_bars(bars):
            o = self.sim.state.orders[coid]
            f = o.fills[-1]
            out.append(stop_event(self.intent_of[coid], "filled", ts=f.ts, fill_qty=f.qty, fill_price=f.price))
        return out
