"""PAPER_SIM: a deterministic in-process broker that fills orders from bars.

Pure: the whole account (cash, positions, orders, marks) is one msgspec struct (``SimState``)
that the worker stores in Redis in the same MULTI/EXEC as the events it caused, so a crash
and restart at any point replays to the same fills. No clock, no randomness.

Fill rules (per bar of the order's symbol, for orders eligible at the bar's ts, in submit order):
- market: the bar's open, plus ``slippage_bps`` against the order;
- sell stop: when low <= stop; at the stop, or at the open when the bar gaps below it; plus slippage;
- buy stop: when high >= stop (mirror image);
- limit: when the bar trades THROUGH the limit (a buy: low < limit; a sell: high > limit; a bar
  that only touches it does not fill, the queue ahead would take it); at the limit, never better;
  at the open when the bar opens at or through it (a favourable gap); no slippage;
- partial fills: with ``max_volume_pct`` > 0 at most that share of the bar's volume fills per bar;
  the rest stays open for later bars.
Costs: ``commission_per_share`` x shares, ``commission_per_order`` on an order's first fill,
``sell_fee_bps`` of a sell's notional; rounded to cents.
"""

from __future__ import annotations

import math

import msgspec

from shared.ids import stable_id
from shared.schemas import BarRow

from .broker import (
    TERMINAL,
    AccountView,
    BrokerRejected,
    DuplicateClientOrderId,
    Fill,
    InsufficientQty,
    NotCancelable,
    NotFound,
    OrderRequest,
    OrderView,
    PositionView,
)


class SimCosts(msgspec.Struct, frozen=True, kw_only=True):
    slippage_bps: float = 0.0
    commission_per_share: float = 0.0
    commission_per_order: float = 0.0
    sell_fee_bps: float = 0.0
    max_volume_pct: float = 0.0


class SimOrder(msgspec.Struct, kw_only=True):
    seq: int
    broker_order_id: str
    client_order_id: str
    symbol: str
    side: str
    qty: int
    order_type: str
    stop_price: float | None = None
    limit_price: float | None = None
    status: str = "new"
    filled_qty: int = 0
    filled_avg_price: float | None = None
    eligible_ts: int = 0
    replaced_by: str = ""
    fills: list[Fill] = []


class SimPosition(msgspec.Struct, kw_only=True):
    qty: int = 0
    avg_price: float = 0.0


class SimState(msgspec.Struct, kw_only=True):
    cash: float
    positions: dict[str, SimPosition] = {}
    orders: dict[str, SimOrder] = {}  # client_order_id -> order
    ids: dict[str, str] = {}  # broker_order_id -> client_order_id
    marks: dict[str, float] = {}
    seq: int = 0


def _view(o: SimOrder) -> OrderView:
    return OrderView(broker_order_id=o.broker_order_id, client_order_id=o.client_order_id, symbol=o.symbol,
                     side=o.side, qty=o.qty, order_type=o.order_type, status=o.status, filled_qty=o.filled_qty,
                     filled_avg_price=o.filled_avg_price, stop_price=o.stop_price, limit_price=o.limit_price,
                     replaced_by=o.replaced_by, fills=list(o.fills))


class Simulator:
    """The simulated broker over a ``SimState`` (mutated in place). Implements ``broker.Broker``."""

    name = "simulator"
    external = False

    def __init__(self, state: SimState, costs: SimCosts) -> None:
        self.state = state
        self.costs = costs
        self._eligible_ts = 0

    # -- time ----------------------------------------------------------------
    def set_time(self, ts: int, *, same_bar: bool = False) -> None:
        """Orders submitted next fill from the bar ending at ``ts`` (same_bar) or from later bars."""
        self._eligible_ts = ts if same_bar else ts + 1

    # -- Broker protocol -----------------------------------------------------
    def _open_sells(self, symbol: str, exclude: str = "") -> list[SimOrder]:
        return [o for o in self.state.orders.values()
                if o.symbol == symbol and o.side == "sell" and o.status not in TERMINAL and o.client_order_id != exclude]

    def _available(self, symbol: str, exclude: str = "") -> int:
        pos = self.state.positions.get(symbol)
        held = sum(o.qty - o.filled_qty for o in self._open_sells(symbol, exclude))
        return (pos.qty if pos else 0) - held

    def submit(self, req: OrderRequest) -> OrderView:
        st = self.state
        if req.client_order_id in st.orders:
            raise DuplicateClientOrderId("client_order_id must be unique")
        if req.qty <= 0:
            raise BrokerRejected("qty must be > 0")
        if req.side == "sell":
            avail = self._available(req.symbol)
            if req.qty > avail:
                raise InsufficientQty(f"insufficient qty available for order (requested: {req.qty}, available: {max(avail, 0)})",
                                      related=[o.broker_order_id for o in self._open_sells(req.symbol)])
        st.seq += 1
        oid = stable_id("sim", req.client_order_id)
        order = SimOrder(seq=st.seq, broker_order_id=oid, client_order_id=req.client_order_id, symbol=req.symbol,
                         side=req.side, qty=req.qty, order_type=req.order_type, stop_price=req.stop_price,
                         limit_price=req.limit_price, status="new", eligible_ts=self._eligible_ts)
        st.orders[req.client_order_id] = order
        st.ids[oid] = req.client_order_id
        return _view(order)

    def get_by_client_id(self, client_order_id: str) -> OrderView:
        o = self.state.orders.get(client_order_id)
        if o is None:
            raise NotFound("order not found")
        return _view(o)

    def get(self, broker_order_id: str) -> OrderView:
        coid = self.state.ids.get(broker_order_id)
        if coid is None:
            raise NotFound("order not found")
        return self.get_by_client_id(coid)

    def list_open(self, symbol: str | None = None) -> list[OrderView]:
        return [_view(o) for o in sorted(self.state.orders.values(), key=lambda o: o.seq)
                if o.status not in TERMINAL and (symbol is None or o.symbol == symbol)]

    def replace(self, broker_order_id: str, *, qty: int, stop_price: float | None, limit_price: float | None,
                new_client_order_id: str) -> OrderView:
        old = self.state.orders.get(self.state.ids.get(broker_order_id, ""))
        if old is None:
            raise NotFound("order not found")
        if old.status in TERMINAL:
            raise NotCancelable(f"order is already in \"{old.status}\" state")
        if new_client_order_id in self.state.orders:
            raise DuplicateClientOrderId("client_order_id must be unique")
        if old.side == "sell" and qty > self._available(old.symbol, exclude=old.client_order_id):
            raise InsufficientQty("insufficient qty available for order")
        old.status = "replaced"
        req = OrderRequest(client_order_id=new_client_order_id, symbol=old.symbol, side=old.side, qty=qty,
                           order_type=old.order_type, stop_price=stop_price, limit_price=limit_price)
        new = self.submit(req)
        old.replaced_by = new.broker_order_id
        return new

    def cancel(self, broker_order_id: str) -> None:
        o = self.state.orders.get(self.state.ids.get(broker_order_id, ""))
        if o is None:
            raise NotFound("order not found")
        if o.status in TERMINAL:
            raise NotCancelable(f"order is already in \"{o.status}\" state")
        o.status = "canceled"

    def positions(self) -> list[PositionView]:
        out = []
        for sym in sorted(self.state.positions):
            p = self.state.positions[sym]
            if p.qty:
                out.append(PositionView(symbol=sym, qty=p.qty, avg_entry_price=round(p.avg_price, 4),
                                        current_price=self.state.marks.get(sym, p.avg_price)))
        return out

    def account(self) -> AccountView:
        equity = self.state.cash + sum(p.qty * p.current_price for p in self.positions())
        return AccountView(equity=round(equity, 2), cash=round(self.state.cash, 2), buying_power=round(max(self.state.cash, 0.0), 2))

    # -- bars ----------------------------------------------------------------
    def accept_new(self) -> list[str]:
        """Orders still 'new' become 'accepted' (the simulated exchange took them). Returns their ids."""
        out = []
        for o in sorted(self.state.orders.values(), key=lambda o: o.seq):
            if o.status == "new":
                o.status = "accepted"
                out.append(o.client_order_id)
        return out

    def on_bars(self, bars: list[BarRow], *, fill: bool = True) -> list[str]:
        """Mark to the bars and fill eligible orders. Returns the client ids of orders that filled."""
        touched: list[str] = []
        by_symbol: dict[str, list[SimOrder]] = {}
        for o in sorted(self.state.orders.values(), key=lambda o: o.seq):
            if o.status not in TERMINAL:
                by_symbol.setdefault(o.symbol, []).append(o)
        for bar in bars:
            if fill:
                for o in by_symbol.get(bar.symbol, []):
                    if o.status in TERMINAL or o.eligible_ts > bar.ts:
                        continue
                    if self._fill_on_bar(o, bar):
                        touched.append(o.client_order_id)
            self.state.marks[bar.symbol] = bar.close
        return touched

    def _trigger_price(self, o: SimOrder, bar: BarRow) -> float | None:
        slip = self.costs.slippage_bps / 10_000
        sign = 1 if o.side == "buy" else -1
        if o.order_type == "market":
            return bar.open * (1 + sign * slip)
        if o.order_type == "stop" and o.stop_price is not None:
            if o.side == "sell" and bar.low <= o.stop_price:
                return min(bar.open, o.stop_price) * (1 - slip)
            if o.side == "buy" and bar.high >= o.stop_price:
                return max(bar.open, o.stop_price) * (1 + slip)
            return None
        if o.order_type == "limit" and o.limit_price is not None:
            lim = o.limit_price
            if o.side == "buy":
                return bar.open if bar.open <= lim else lim if bar.low < lim else None
            return bar.open if bar.open >= lim else lim if bar.high > lim else None
        return None

    def _fill_on_bar(self, o: SimOrder, bar: BarRow) -> bool:
        price = self._trigger_price(o, bar)
        if price is None:
            return False
        price = round(price, 4)
        remaining = o.qty - o.filled_qty
        qty = remaining
        if self.costs.max_volume_pct > 0:
            qty = min(remaining, math.floor(bar.volume * self.costs.max_volume_pct / 100))
        pos = self.state.positions.setdefault(o.symbol, SimPosition())
        if o.side == "sell":
            qty = min(qty, pos.qty)
        if qty <= 0:
            return False
        c = self.costs
        fees = c.commission_per_share * qty + (c.commission_per_order if o.filled_qty == 0 else 0.0)
        if o.side == "sell":
            fees += c.sell_fee_bps / 10_000 * qty * price
        fees = round(fees, 2)
        notional = qty * price
        if o.side == "buy":
            new_qty = pos.qty + qty
            pos.avg_price = (pos.avg_price * pos.qty + notional) / new_qty
            pos.qty = new_qty
            self.state.cash = round(self.state.cash - notional - fees, 6)
        else:
            pos.qty -= qty
            if pos.qty == 0:
                pos.avg_price = 0.0
            self.state.cash = round(self.state.cash + notional - fees, 6)
        if pos.qty == 0:
            self.state.positions.pop(o.symbol, None)
        prev = (o.filled_avg_price or 0.0) * o.filled_qty
        o.filled_qty += qty
        o.filled_avg_price = round((prev + notional) / o.filled_qty, 4)
        o.fills.append(Fill(trade_id=stable_id("tr", o.client_order_id, len(o.fills)), qty=qty, price=price,
                            fees=fees, ts=bar.ts))
        o.status = "filled" if o.filled_qty >= o.qty else "partially_filled"
        return True

    def prune(self) -> None:
        """Forget terminal orders (their events are published; the executor keeps its own record)."""
        st = self.state
        for coid in [k for k, o in st.orders.items() if o.status in TERMINAL]:
            st.ids.pop(st.orders.pop(coid).broker_order_id, None)
