"""The Alpaca stand-in's market and time (a part of ``alpaca_api.AlpacaStandIn``): NYSE hours and sessions,
routing at the open, day expiry and GTC ageing, the asynchronous transitions (pending new, cancel, replace)
that each step ends, and the bar-driven market that fills the working orders. Sources as in
``alpaca_api.py``: [orders] docs "Orders at Alpaca"; [api] the trading API reference; [py] alpaca-py.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from shared.clock import calendar, dt_to_ns, ny_trade_date
from standins.alpaca_model import OPEN_STATES, WORKING, Behaviours, Order, Position, num


class Market:
    """Time and the market over the stand-in's orders and positions; the stand-in provides its state,
    its clock (``_now``) and its trade updates (``_update``)."""

    behaviours: Behaviours
    orders: dict[str, Order]
    positions: dict[str, Position]
    prices: dict[str, float]
    cash: float
    short_sells: int
    initial_status: str | None
    lock: threading.RLock

    # -- market hours [orders] -----------------------------------------------------
    def market_open(self, now: datetime | None = None) -> bool:
        """Regular hours of an NYSE session (early closes included)."""
        ts = dt_to_ns(now or self._now())
        d = ny_trade_date(ts)
        cal = calendar()
        if not cal.is_session(d):
            return False
        op, cl = cal.open_close_ns(d)
        return op <= ts < cl

    def _session_for(self, now: datetime) -> str:
        """The session an order placed at ``now`` trades in: today's until its close, else the next one."""
        ts = dt_to_ns(now)
        d = ny_trade_date(ts)
        cal = calendar()
        if cal.is_session(d) and ts < cal.open_close_ns(d)[1]:
            return d
        return cal.next_session(d)

    def _tick(self) -> None:
        """Apply what time did since the last request: routing at the open, day expiry, GTC ageing, done_for_day."""
        now = self._now()
        b = self.behaviours
        cal = calendar()
        for o in list(self.orders.values()):
            if o.status not in OPEN_STATES:
                continue
            if o.session:
                op, cl = cal.open_close_ns(o.session)
                ts = dt_to_ns(now)
                if o.time_in_force == "day" and b.day_expiry and ts >= cl:
                    self._finish(o, "expired")
                    continue
                if o.time_in_force == "gtc" and ts >= cl:
                    o.session = self._session_for(now)
                    if b.done_for_day and o.status in WORKING:
                        o.resume, o.status = o.status, "done_for_day"
                        self._update("done_for_day", o)
                    op, cl = cal.open_close_ns(o.session)
                if ts >= op and o.status == "accepted" and o.pending is None and self.initial_status is None:
                    self._route(o)
                if ts >= op and o.status == "done_for_day":
                    o.status, o.resume = o.resume or "new", ""
            if o.expires_at is not None and now >= o.expires_at:
                self._finish(o, "canceled")  # [py] expires_at: "an auto cancel request will be triggered"

    def _route(self, o: Order) -> None:
        """``accepted`` -> ``pending_new`` (when switched on) -> ``new``: the order reaches the exchange."""
        if self.behaviours.pending_new_steps > 0:
            o.status, o.pending = "pending_new", ("route", self.behaviours.pending_new_steps)
            self._update("pending_new", o)
        else:
            o.status = "new"
            self._update("new", o)

    def _finish(self, o: Order, status: str) -> None:
        now = self._now()
        o.status, o.pending = status, None
        if status == "canceled":
            o.canceled_at = now
        elif status == "expired":
            o.expired_at = now
        elif status == "rejected":
            o.failed_at = now
        elif status == "replaced":
            o.replaced_at = now
        self._update(status, o)

    def step(self) -> None:
        """One step of the asynchronous transitions (each ``on_bars`` call is one): the broker catches up."""
        with self.lock:
            self._step()

    def _step(self) -> None:
        for o in list(self.orders.values()):
            if o.pending is None:
                continue
            kind, left = o.pending
            if left > 1:
                o.pending = (kind, left - 1)
                continue
            self._complete(o, kind)

    def _complete(self, o: Order, kind: str) -> None:
        o.pending = None
        if kind == "route" and o.status == "pending_new":
            o.status = "new"
            self._update("new", o)
        elif kind == "cancel" and o.status == "pending_cancel" and not o.stick_cancel:
            self._finish(o, "canceled")
        elif kind == "cancel" and o.stick_cancel:
            o.pending = ("cancel", 1)
        elif kind == "replace" and o.status == "pending_replace":
            new = self.orders[o.replaced_by] if o.replaced_by else None
            self._finish(o, "replaced")
            if new is not None and new.status == "pending_new":
                if self.market_open() or not self.behaviours.market_hours or self.initial_status is not None:
                    new.status = "new"
                    self._update("new", new)
                else:
                    new.status = "accepted"
                    self._update("accepted", new)

    def settle(self) -> None:
        """Finish every pending replace, cancel and routing now (the broker caught up)."""
        with self.lock:
            for o in list(self.orders.values()):
                if o.pending is not None:
                    self._complete(o, o.pending[0])

    # -- the market ---------------------------------------------------------------
    def on_bars(self, rows: Sequence[Any]) -> None:
        """The market prints ``rows`` (``shared.schemas.BarRow``-like: symbol, ts, open, high, low, close, volume).

        Each symbol's last price becomes its latest row's close; open orders placed before this call work
        against the rows in ts order (rows outside regular hours only set the price). Then one step of
        the asynchronous transitions: an old order that filled first makes its pending replacement rejected.
        """
        with self.lock:
            self._tick()
            cal = calendar()
            live = [o for o in self.orders.values() if o.status in WORKING]
            for row in sorted(rows, key=lambda r: (r.ts, r.symbol)):
                d = ny_trade_date(row.ts)
                in_hours = cal.is_session(d) and cal.open_close_ns(d)[0] < row.ts <= cal.open_close_ns(d)[1]
                if in_hours:
                    for o in live:
                        if o.symbol == row.symbol and o.status in WORKING and (not o.session or o.session <= d):
                            self._work(o, row)
                self.prices[row.symbol] = float(row.close)
                pos = self.positions.get(row.symbol)
                if pos is not None:
                    pos.price = float(row.close)
            self._step()

    def _work(self, o: Order, row: Any) -> None:
        price = self._fill_price(o, row)
        if price is None:
            return
        left = o.qty - o.filled_qty
        pct = self.behaviours.partial_fill_pct
        qty = left if pct <= 0 else max(1, min(left, int(row.volume * pct / 100.0)))
        if o.side == "sell" and not self.behaviours.shorting_enabled:
            held = self.positions.get(o.symbol)
            if qty > (held.qty if held else 0):
                self.short_sells += 1  # a sell that would open a short (the chaos test asserts none)
            qty = min(qty, held.qty if held else 0)
            if qty <= 0:
                return
        self._fill(o, qty, round(price, 4))

    @staticmethod
    def _fill_price(o: Order, row: Any) -> float | None:
        op, hi, lo = float(row.open), float(row.high), float(row.low)
        if o.type == "market":
            return op
        if o.type == "stop" and o.stop_price is not None:
            if o.side == "sell" and lo <= o.stop_price:
                return min(op, o.stop_price)
            if o.side == "buy" and hi >= o.stop_price:
                return max(op, o.stop_price)
        if o.type == "limit" and o.limit_price is not None:
            if o.side == "buy" and (op <= o.limit_price or lo < o.limit_price):
                return min(op, o.limit_price)
            if o.side == "sell" and (op >= o.limit_price or hi > o.limit_price):
                return max(op, o.limit_price)
        return None

    def _fill(self, o: Order, qty: int, price: float) -> None:
        prev = (o.filled_avg_price or 0.0) * o.filled_qty
        o.filled_qty += qty
        o.filled_avg_price = round((prev + qty * price) / o.filled_qty, 4)
        done = o.filled_qty >= o.qty
        if done:
            o.filled_at = self._now()
        if o.status not in ("pending_replace", "pending_cancel") or done:
            o.status = "filled" if done else "partially_filled"
        pos = self.positions.setdefault(o.symbol, Position())
        if o.side == "buy":
            pos.avg = (pos.avg * pos.qty + qty * price) / (pos.qty + qty) if pos.qty + qty else 0.0
            pos.qty += qty
            self.cash -= qty * price
        else:
            pos.qty -= qty
            self.cash += qty * price
        pos.price = price
        self.prices[o.symbol] = price
        if pos.qty == 0:
            del self.positions[o.symbol]
        self._update("fill" if done else "partial_fill", o, execution_id=str(uuid.uuid4()), price=num(price),
                     qty=num(qty), position_qty=num(pos.qty))
        if done:
            self._filled_first(o)

    def _filled_first(self, o: Order) -> None:
        """[api] patchOrderByOrderId: the old order filled before its replacement reached the venue ->
        the replacement is rejected (both events on trade_updates); a pending cancel is moot."""
        o.pending = None
        if o.replaced_by and o.replaced_by in self.orders:
            new = self.orders[o.replaced_by]
            if new.status in OPEN_STATES:
                self._finish(new, "rejected")
            o.replaced_by = None
