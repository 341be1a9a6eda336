"""A local HTTP stand-in of Alpaca's trading API v2 (stdlib http.server on 127.0.0.1, free port).

It behaves as Alpaca documents it, not as the executor would like. Sources, cited per behaviour below:
[orders] docs "Orders at Alpaca" (docs.alpaca.markets/docs/orders-at-alpaca: lifecycle, statuses, buying
power, sub-penny, time in force, hours); [api] the trading API reference and the OpenAPI file
``oas/trading/openapi.yaml`` of ``alpacahq/alpaca-docs`` (operations ``postOrder``, ``patchOrderByOrderId``,
``deleteOrderByOrderID``; "Rate Limit": 200 requests/minute per key, 429); [stream] the streaming page
("Trade Updates": event set and fields); [py] alpaca-py (``alpaca/trading/models.py`` ``Order.expires_at``,
``TradeUpdate``; its recorded error payloads in ``tests/``). Each behaviour is a field of ``Behaviours``
so a test can switch it off or on; the defaults are Alpaca's.

Endpoints: account, clock, calendar, positions (list, get, close), orders (create, list, get by id, get
by client id, replace, cancel), with Alpaca's JSON shapes (numbers as strings, ISO timestamps, UUIDs)
and error bodies ``{"code": <Alpaca code>, "message": ...}`` (``ERRORS``).

The market is driven by bars: ``on_bars(rows)`` sets each symbol's last price and works the open orders
against each row, in ts order: a market order fills at the open of the first row after it was placed;
a sell stop triggers when low <= stop and fills at min(open, stop) (a gap fills at the open), a buy stop
mirrors it; a limit fills when the row trades through it, at the limit or the better open. Only rows
inside a session's regular hours trade, and only orders routed to the exchange (``new``,
``partially_filled``, pending states) work. ``Behaviours.partial_fill_pct`` caps each row's fill at that
% of its volume. Time comes from ``clock`` (default: the wall clock) with the NYSE calendar
(``shared.clock.calendar``): orders placed while the market is closed are ``accepted`` and routed
(``new``) at the next open; day orders expire at the close of their session; GTC orders carry
``expires_at`` and are cancelled once aged 90 days.

Test controls (call from the test, the server runs in a thread): ``fault(method, path, kind)``
queues a fault for the next matching request (``timeout``: the order is created, the response is
delayed past the client's timeout; ``drop``: created, then the connection closes without a
response; ``429``/``500``/``503``: refused before processing; ``502-after``/``504-after``: processed,
then that error answered, as a gateway that lost the backend's answer does), ``refuse(method, path,
status, code, message)`` (the next matching request answers that Alpaca error), ``fill``,
``set_status``, ``stick_pending_cancel``/``finish_cancel``, ``settle`` (finish pending replaces and
cancels now), ``external_order`` (an order placed outside the system), ``posts`` (every POST
/v2/orders body), ``requests``, ``set_position``, ``set_price``.

With ``stream=True`` it also runs the trade-update websocket (``standins/alpaca_stream.py``,
``stream_url``) and publishes the documented events on every order change [stream]: ``new``,
``pending_new``, ``accepted``, ``partial_fill``/``fill`` (with ``price``, ``qty``, ``position_qty``,
``execution_id``), ``pending_cancel``, ``canceled``, ``pending_replace``, ``replaced`` (the old order)
then ``new`` (its replacement), ``order_replace_rejected``, ``order_cancel_rejected``, ``rejected``,
``expired``, ``done_for_day``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from shared.clock import NS, calendar, dt_to_ns, ny_trade_date
from standins.alpaca_assets import assets_api
from standins.alpaca_stream import TradeUpdatesStandIn

# [orders] "Order Lifecycle": every status an order can have; the open ones are those GET ?status=open lists.
STATUSES = ("new", "partially_filled", "filled", "done_for_day", "canceled", "expired", "replaced", "pending_cancel",
            "pending_replace", "accepted", "pending_new", "accepted_for_bidding", "stopped", "rejected", "suspended",
            "calculated", "held")
OPEN_STATES = {"new", "accepted", "pending_new", "partially_filled", "pending_cancel", "pending_replace", "held",
               "accepted_for_bidding", "done_for_day", "stopped", "suspended", "calculated"}
# [api] patchOrderByOrderId: "Order cannot be replaced when the status is accepted, pending_new, pending_cancel or
# pending_replace" (plus the exchange-side holds).
NO_REPLACE = {"accepted", "pending_new", "pending_cancel", "pending_replace", "accepted_for_bidding", "held"}
# Routed to the exchange: these work against the market (the old order of a pending replace or cancel is still live).
WORKING = {"new", "partially_filled", "pending_replace", "pending_cancel"}

# Alpaca's error bodies, by case: (HTTP status, code, message). Sources in the comments.
ERRORS: dict[str, tuple[int, int, str]] = {
    "not_found": (404, 40410000, "order not found"),  # [api] getOrderByOrderID
    "position_not_found": (404, 40410000, "position does not exist"),
    "endpoint": (404, 40400000, "endpoint not found"),
    "duplicate_client_id": (422, 40010001, "client_order_id must be unique"),  # [py] tests' recorded payload
    "insufficient_qty": (403, 40310000, "insufficient qty available for order (requested: {req}, available: {avail})"),
    "buying_power": (403, 40310000, "insufficient buying power"),  # [orders] "Buying Power"
    "unchanged": (403, 40310000, "order parameters are not changed"),  # PATCH that changes nothing
    "sub_penny": (422, 42210000,  # [orders] "Sub-penny increments for limit/stop orders"
                  "invalid {field} {price}. sub-penny increment does not fulfill minimum pricing criteria"),
    "stop_side": (422, 42210000, "stop price must not be greater than base price / 1.001 ({base})"),
    "stop_side_buy": (422, 42210000, "stop price must not be less than base price * 1.001 ({base})"),
    "not_replaceable": (422, 42210000, "unable to replace order, order isn't sent to exchange yet"),
    "final": (422, 42210000, 'order is already in "{status}" state'),
    "not_cancelable": (422, 42210000, 'order is not cancelable while in "{status}" state'),  # [orders] pending_replace
    "wash_trade": (403, 40310000, "potential wash trade detected. use complex orders"),
    "rate_limit": (429, 42910000, "rate limit exceeded"),  # [api] "Rate Limit": 200/min per key, HTTP 429
    "no_shorting": (403, 40310000, "account is not allowed to short"),
}


@dataclass
class Behaviours:
    """Alpaca's documented behaviours, each switchable per test. Defaults are Alpaca's; 0 steps = at once."""

    market_hours: bool = True  # [orders] Time in Force/Lifecycle: closed market -> accepted, routed at the open
    day_expiry: bool = True  # [orders] "day": unfilled day orders expire at the close (event expired)
    gtc_age_days: int = 90  # [py] Order.expires_at: GTC orders are cancelled once aged (0: never)
    done_for_day: bool = False  # [orders] done_for_day: GTC orders rest at the close, resume at the next open
    sub_penny: bool = True  # [orders] Sub-penny increments: >= $1 two decimals, < $1 four; 422 42210000
    stop_side: bool = True  # a sell stop at/above the last price (buy stop below it) is refused, 422
    buying_power: bool = True  # [orders] Buying Power: buys need cash net of open buy orders; 403 40310000
    related_orders: bool = True  # the 403 insufficient-qty body lists related_orders (alpaca-py's payload: none)
    unchanged_patch: bool = True  # a PATCH that changes nothing: 403 40310000 "order parameters are not changed"
    # asynchronous transitions last N steps (each on_bars call, or step(), is one; settle() ends them all)
    replace_steps: int = 0  # [api] patchOrderByOrderId is asynchronous: pending_replace for N steps
    cancel_steps: int = 0  # [orders] pending_cancel for N steps before canceled
    pending_new_steps: int = 0  # [orders] pending_new for N steps before new (rare)
    partial_fill_pct: float = 0.0  # at most this % of a bar's volume fills per bar (0: whole order)
    rate_limit_per_min: int = 200  # [api] Rate Limit: 200 requests per minute per key, then 429
    shorting_enabled: bool = False  # account flag; without it a sell beyond the position is refused


def _s(x: float | int | None) -> str | None:
    return None if x is None else (str(int(x)) if float(x).is_integer() else repr(float(x)))


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _decimals(text: str) -> int:
    try:
        exp = Decimal(text).normalize().as_tuple().exponent
    except InvalidOperation:
        return 99
    return -exp if isinstance(exp, int) and exp < 0 else 0


@dataclass
class _Order:
    id: str
    client_order_id: str
    symbol: str
    side: str
    qty: int
    type: str
    time_in_force: str
    created_at: datetime
    stop_price: float | None = None
    limit_price: float | None = None
    status: str = "accepted"
    filled_qty: int = 0
    filled_avg_price: float | None = None
    updated_at: datetime | None = None
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    expired_at: datetime | None = None
    replaced_at: datetime | None = None
    failed_at: datetime | None = None
    expires_at: datetime | None = None
    session: str = ""  # the session a day order lives in (it expires at that session's close)
    replaced_by: str | None = None
    replaces: str | None = None
    stick_cancel: bool = False
    # asynchronous transitions in flight: (kind, steps left); kind "replace" | "cancel" | "route"
    pending: tuple[str, int] | None = None
    resume: str = ""  # the status to return to after done_for_day / a refused replace

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id, "client_order_id": self.client_order_id, "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at or self.created_at), "submitted_at": _iso(self.created_at),
            "filled_at": _iso(self.filled_at), "expired_at": _iso(self.expired_at), "expires_at": _iso(self.expires_at),
            "canceled_at": _iso(self.canceled_at), "failed_at": _iso(self.failed_at),
            "replaced_at": _iso(self.replaced_at), "replaced_by": self.replaced_by,
            "replaces": self.replaces, "asset_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, self.symbol)),
            "symbol": self.symbol, "asset_class": "us_equity", "notional": None, "qty": _s(self.qty),
            "filled_qty": _s(self.filled_qty), "filled_avg_price": _s(self.filled_avg_price), "order_class": "simple",
            "order_type": self.type, "type": self.type, "side": self.side, "time_in_force": self.time_in_force,
            "limit_price": _s(self.limit_price), "stop_price": _s(self.stop_price), "status": self.status,
            "extended_hours": False, "legs": None, "trail_percent": None, "trail_price": None, "hwm": None,
            "position_intent": "buy_to_open" if self.side == "buy" else "sell_to_close",
        }


@dataclass
class _Position:
    qty: int = 0
    avg: float = 0.0
    price: float = 0.0


@dataclass
class _Fault:
    method: str
    path: str
    kind: str
    error: tuple[int, dict[str, Any]] | None = None


@dataclass
class _RateLimiter:
    """[api] Rate Limit: at most ``per_min`` requests in any 60 s (monotonic time)."""

    per_min: int
    seen: deque[float] = field(default_factory=deque)

    def allow(self) -> bool:
        if self.per_min <= 0:
            return True
        now = time.monotonic()
        while self.seen and now - self.seen[0] >= 60.0:
            self.seen.popleft()
        if len(self.seen) >= self.per_min:
            return False
        self.seen.append(now)
        return True


def _wall() -> datetime:
    return datetime.now(UTC)


class AlpacaStandIn:
    """The stand-in's state and controls. ``url`` is the base URL for ``url_override``.

    ``clock`` returns the stand-in's "now" (aware datetime; default the wall clock): market hours, the
    calendar, order timestamps, expiry. ``initial_status`` (when given) forces the status of every new
    order, as the old stand-in did; by default it follows the market hours.
    """

    def __init__(self, cash: float = 100_000.0, *, initial_status: str | None = None, response_delay_s: float = 1.0,
                 stream: bool = False, keys: tuple[str, str] | None = None,
                 clock: Callable[[], datetime] | None = None, behaviours: Behaviours | None = None) -> None:
        self.cash = cash
        self.clock = clock or _wall
        self.behaviours = behaviours or Behaviours()
        self.orders: dict[str, _Order] = {}
        self.positions: dict[str, _Position] = {}
        self.prices: dict[str, float] = {}  # last price per symbol (from on_bars / set_price)
        self.short_sells = 0  # sell fills that found fewer shares than they sold
        self.posts: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.responses: list[tuple[str, str, int, Any]] = []  # (method, path, status, body) for the contract test
        self.headers_seen: list[dict[str, str]] = []
        self.initial_status = initial_status
        self.response_delay_s = response_delay_s
        self._faults: list[_Fault] = []
        self._limiter = _RateLimiter(self.behaviours.rate_limit_per_min)
        self.lock = threading.RLock()
        calendar()  # loaded now (about 1 s once per process), not inside the first request's timeout
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="alpaca-standin")
        self.stream: TradeUpdatesStandIn | None = None
        self.updates: list[dict[str, Any]] = []  # every trade update produced (also without a listener)
        if stream:
            self.stream = TradeUpdatesStandIn(*(keys or (None, None)))
            self.stream_url = self.stream.url

    # -- lifecycle --------------------------------------------------------------
    def __enter__(self) -> AlpacaStandIn:
        self._thread.start()
        if self.stream is not None:
            self.stream.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.stream is not None:
            self.stream.__exit__()
        self._server.shutdown()
        self._server.server_close()

    def _now(self) -> datetime:
        now = self.clock()
        return now if now.tzinfo else now.replace(tzinfo=UTC)

    def _update(self, event: str, o: _Order, **extra: Any) -> None:
        """Record (and publish, when the stream runs) a trade update for ``o`` as it is now [stream]."""
        o.updated_at = self._now()
        data = {"event": event, "timestamp": _iso(o.updated_at), "order": o.json(), **extra}
        self.updates.append(data)
        if self.stream is not None:
            self.stream.publish(event, data["order"], **extra)

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

    def _route(self, o: _Order) -> None:
        """``accepted`` -> ``pending_new`` (when switched on) -> ``new``: the order reaches the exchange."""
        if self.behaviours.pending_new_steps > 0:
            o.status, o.pending = "pending_new", ("route", self.behaviours.pending_new_steps)
            self._update("pending_new", o)
        else:
            o.status = "new"
            self._update("new", o)

    def _finish(self, o: _Order, status: str) -> None:
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

    def _complete(self, o: _Order, kind: str) -> None:
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

    def _work(self, o: _Order, row: Any) -> None:
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
    def _fill_price(o: _Order, row: Any) -> float | None:
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

    def _fill(self, o: _Order, qty: int, price: float) -> None:
        prev = (o.filled_avg_price or 0.0) * o.filled_qty
        o.filled_qty += qty
        o.filled_avg_price = round((prev + qty * price) / o.filled_qty, 4)
        done = o.filled_qty >= o.qty
        if done:
            o.filled_at = self._now()
        if o.status not in ("pending_replace", "pending_cancel") or done:
            o.status = "filled" if done else "partially_filled"
        pos = self.positions.setdefault(o.symbol, _Position())
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
        self._update("fill" if done else "partial_fill", o, execution_id=str(uuid.uuid4()), price=_s(price),
                     qty=_s(qty), position_qty=_s(pos.qty))
        if done:
            self._filled_first(o)

    def _filled_first(self, o: _Order) -> None:
        """[api] patchOrderByOrderId: the old order filled before its replacement reached the venue ->
        the replacement is rejected (both events on trade_updates); a pending cancel is moot."""
        o.pending = None
        if o.replaced_by and o.replaced_by in self.orders:
            new = self.orders[o.replaced_by]
            if new.status in OPEN_STATES:
                self._finish(new, "rejected")
            o.replaced_by = None

    # -- controls ----------------------------------------------------------------
    def fault(self, method: str, path: str, kind: str) -> None:
        """Queue a fault for the next request whose method matches and whose path starts with ``path``."""
        with self.lock:
            self._faults.append(_Fault(method.upper(), path, kind))

    def refuse(self, method: str, path: str, case: str, **fmt: Any) -> None:
        """The next matching request is answered with Alpaca's error ``ERRORS[case]`` (not processed)."""
        with self.lock:
            self._faults.append(_Fault(method.upper(), path, "error", self._error(case, **fmt)))

    def by_client_id(self, coid: str) -> _Order:
        return next(o for o in self.orders.values() if o.client_order_id == coid)

    def set_position(self, symbol: str, qty: int, avg: float) -> None:
        with self.lock:
            self.positions[symbol] = _Position(qty=qty, avg=avg, price=avg)

    def set_price(self, symbol: str, price: float) -> None:
        with self.lock:
            self.prices[symbol] = price

    def set_status(self, coid: str, status: str) -> None:
        with self.lock:
            o = self.by_client_id(coid)
            o.status = status
            o.pending = None

    def stick_pending_cancel(self, coid: str, stuck: bool = True) -> None:
        with self.lock:
            self.by_client_id(coid).stick_cancel = stuck

    def finish_cancel(self, coid: str) -> None:
        with self.lock:
            o = self.by_client_id(coid)
            o.stick_cancel = False
            if o.status == "pending_cancel":
                self._finish(o, "canceled")

    def fill(self, coid: str, qty: int, price: float) -> None:
        """Fill ``qty`` more shares of an order at ``price`` (partial when short of its qty)."""
        with self.lock:
            self._fill(self.by_client_id(coid), qty, price)

    def external_order(self, symbol: str, side: str, qty: int, order_type: str = "stop", stop_price: float | None = None) -> _Order:
        """An order placed outside the system (e.g. by hand in the dashboard)."""
        with self.lock:
            now = self._now()
            o = _Order(id=str(uuid.uuid4()), client_order_id=str(uuid.uuid4()), symbol=symbol, side=side, qty=qty,
                       type=order_type, time_in_force="gtc", stop_price=stop_price, status="accepted", created_at=now,
                       session=self._session_for(now))
            self.orders[o.id] = o
            self._update("new", o)
            return o

    def orders_for(self, coid: str) -> list[_Order]:
        return [o for o in self.orders.values() if o.client_order_id == coid]

    # -- API ---------------------------------------------------------------------
    @staticmethod
    def _error(case: str, **fmt: Any) -> tuple[int, dict[str, Any]]:
        status, code, msg = ERRORS[case]
        return status, {"code": code, "message": msg.format(**fmt) if fmt else msg}

    def _available(self, symbol: str, exclude: str = "") -> tuple[int, int, list[str]]:
        pos = self.positions.get(symbol)
        held = [o for o in self.orders.values() if o.symbol == symbol and o.side == "sell" and o.status in OPEN_STATES
                and o.id != exclude]
        held_qty = sum(o.qty - o.filled_qty for o in held)
        existing = pos.qty if pos else 0
        return existing, held_qty, [o.id for o in held]

    def _insufficient(self, symbol: str, requested: int, exclude: str = "") -> tuple[int, dict] | None:
        existing, held, related = self._available(symbol, exclude)
        available = max(existing - held, 0)
        if requested <= available:
            return None
        if existing <= 0 and held == 0 and self.behaviours.shorting_enabled:
            return None  # a short sale (checked against buying power by the caller)
        status, body = self._error("insufficient_qty", req=requested, avail=available)
        body.update({"available": str(available), "existing_qty": str(existing), "held_for_orders": str(held),
                     "symbol": symbol})
        if self.behaviours.related_orders:
            body["related_orders"] = related
        return status, body

    def _price_errors(self, body: dict[str, Any], side: str, symbol: str) -> tuple[int, dict] | None:
        b = self.behaviours
        for fld in ("limit_price", "stop_price"):
            raw = body.get(fld)
            if raw is None or not b.sub_penny:
                continue
            price = float(raw)
            if _decimals(str(raw)) > (2 if price >= 1.0 else 4):
                return self._error("sub_penny", field=fld, price=raw)
        last = self.prices.get(symbol)
        stop = body.get("stop_price")
        if b.stop_side and stop is not None and last is not None:
            if side == "sell" and float(stop) > last / 1.001:
                return self._error("stop_side", base=_s(last))
            if side == "buy" and float(stop) < last * 1.001:
                return self._error("stop_side_buy", base=_s(last))
        return None

    def _buying_power(self) -> float:
        """Cash net of the open buy orders' value ([orders] Buying Power; a cash account, multiplier 1)."""
        held = 0.0
        for o in self.orders.values():
            if o.side == "buy" and o.status in OPEN_STATES:
                px = o.limit_price or o.stop_price or self.prices.get(o.symbol) or 0.0
                held += (o.qty - o.filled_qty) * px
        return self.cash - held

    def api(self, method: str, path: str, query: dict[str, list[str]], body: dict[str, Any]) -> tuple[int, Any]:
        with self.lock:
            self._tick()
            return self._api(method, path, query, body)

    def _account(self) -> dict[str, Any]:
        equity = self.cash + sum(p.qty * p.price for p in self.positions.values())
        long_mv = sum(p.qty * p.price for p in self.positions.values() if p.qty > 0)
        short_mv = sum(p.qty * p.price for p in self.positions.values() if p.qty < 0)
        return {"id": str(uuid.uuid5(uuid.NAMESPACE_DNS, "acct")), "account_number": "PA0STANDIN",
                "status": "ACTIVE", "crypto_status": "ACTIVE", "currency": "USD", "cash": _s(round(self.cash, 2)),
                "buying_power": _s(round(max(self._buying_power(), 0), 2)), "equity": _s(round(equity, 2)),
                "portfolio_value": _s(round(equity, 2)), "pattern_day_trader": False, "trading_blocked": False,
                "transfers_blocked": False, "account_blocked": False, "created_at": "2024-01-02T00:00:00Z",
                "trade_suspended_by_user": False, "multiplier": "1",
                "shorting_enabled": self.behaviours.shorting_enabled,
                "last_equity": _s(round(equity, 2)), "long_market_value": _s(round(long_mv, 2)),
                "short_market_value": _s(round(short_mv, 2)), "initial_margin": "0", "maintenance_margin": "0",
                "daytrade_count": 0, "sma": "0"}

    def _clock_json(self) -> dict[str, Any]:
        now = self._now()
        cal = calendar()
        ts = dt_to_ns(now)
        d = ny_trade_date(ts)
        nxt = d if cal.is_session(d) and ts < cal.open_close_ns(d)[0] else cal.next_session(d)
        cur_close = cal.open_close_ns(d)[1] if cal.is_session(d) and ts < cal.open_close_ns(d)[1] else cal.open_close_ns(nxt)[1]
        return {"timestamp": _iso(now), "is_open": self.market_open(now),
                "next_open": _iso(datetime.fromtimestamp(cal.open_close_ns(nxt)[0] / NS, tz=UTC)),
                "next_close": _iso(datetime.fromtimestamp(cur_close / NS, tz=UTC))}

    def _calendar_json(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        from shared.clock import NY, ns_to_dt

        today = ny_trade_date(dt_to_ns(self._now()))
        start = (query.get("start") or [today])[0][:10]
        end = (query.get("end") or [(datetime.fromisoformat(start) + timedelta(days=30)).date().isoformat()])[0][:10]
        cal = calendar()
        out = []
        for d in cal.sessions_in_range(start, end):
            op, cl = cal.open_close_ns(d)
            out.append({"date": d, "open": ns_to_dt(op, NY).strftime("%H:%M"), "close": ns_to_dt(cl, NY).strftime("%H:%M"),
                        "session_open": "0400", "session_close": "2000", "settlement_date": cal.next_session(d)})
        return out

    def _api(self, method: str, path: str, query: dict[str, list[str]], body: dict[str, Any]) -> tuple[int, Any]:
        assets = assets_api(method, path, query)  # GET /v2/assets[/{symbol}]: standins/alpaca_assets.py
        if assets is not None:
            return assets
        if method == "GET" and path == "/v2/account":
            return 200, self._account()
        if method == "GET" and path == "/v2/clock":
            return 200, self._clock_json()
        if method == "GET" and path == "/v2/calendar":
            return 200, self._calendar_json(query)
        if path == "/v2/positions" and method == "GET":
            return 200, [self._pos_json(s, p) for s, p in sorted(self.positions.items())]
        if path.startswith("/v2/positions/"):
            sym = path.rsplit("/", 1)[1]
            p = self.positions.get(sym)
            if p is None:
                return self._error("position_not_found")
            if method == "GET":
                return 200, self._pos_json(sym, p)
            if method == "DELETE":
                err = self._insufficient(sym, p.qty)
                if err:
                    return err
                return 200, self._new_order({"symbol": sym, "qty": str(p.qty), "side": "sell", "type": "market",
                                             "time_in_force": "day"}).json()
        if path == "/v2/orders" and method == "POST":
            return self._post_order(body)
        if path == "/v2/orders" and method == "GET":
            status = (query.get("status") or ["open"])[0]
            rows = sorted(self.orders.values(), key=lambda o: o.created_at, reverse=True)
            if status == "open":
                rows = [o for o in rows if o.status in OPEN_STATES]
            elif status == "closed":
                rows = [o for o in rows if o.status not in OPEN_STATES]
            symbols = {x for q in query.get("symbols") or [] for x in q.split(",") if x}
            if symbols:
                rows = [o for o in rows if o.symbol in symbols]
            limit = int((query.get("limit") or ["50"])[0])
            return 200, [o.json() for o in rows[:limit]]
        if path == "/v2/orders:by_client_order_id" and method == "GET":
            coid = (query.get("client_order_id") or [""])[0]
            matches = self.orders_for(coid)
            return (200, matches[0].json()) if matches else self._error("not_found")
        if path.startswith("/v2/orders/"):
            o = self.orders.get(path.rsplit("/", 1)[1])
            if o is None:
                return self._error("not_found")
            if method == "GET":
                return 200, o.json()
            if method == "DELETE":
                return self._cancel(o)
            if method == "PATCH":
                return self._replace(o, body)
        return self._error("endpoint")

    def _post_order(self, body: dict[str, Any]) -> tuple[int, Any]:
        """[api] postOrder with the documented validations, in Alpaca's order of checks."""
        self.posts.append(body)
        coid = body.get("client_order_id") or str(uuid.uuid4())
        if any(o.client_order_id == coid for o in self.orders.values()):
            return self._error("duplicate_client_id")
        sym, side, qty = body["symbol"], body["side"], int(float(body["qty"]))
        err = self._price_errors(body, side, sym)
        if err:
            return err
        if side == "sell":
            err = self._insufficient(sym, qty)
            if err:
                return err
        if side == "buy" and self.behaviours.buying_power:
            px = float(body.get("limit_price") or body.get("stop_price") or self.prices.get(sym) or 0.0)
            if qty * px > self._buying_power():
                return self._error("buying_power")
        return 200, self._new_order(body).json()

    def _cancel(self, o: _Order) -> tuple[int, Any]:
        """[api] deleteOrderByOrderID: 204 when accepted for cancelation, 422 when not cancelable."""
        if o.status not in OPEN_STATES:
            return self._error("final", status=o.status)
        if o.status == "pending_replace":  # [orders] "The order will reject cancel request while in this state."
            self._update("order_cancel_rejected", o)
            return self._error("not_cancelable", status=o.status)
        if o.status == "pending_cancel":
            return 204, None
        steps = self.behaviours.cancel_steps
        if o.stick_cancel or steps > 0:
            o.resume, o.status, o.pending = o.status, "pending_cancel", ("cancel", max(steps, 1))
            self._update("pending_cancel", o)
        else:
            self._finish(o, "canceled")
        return 204, None

    def _replace(self, o: _Order, body: dict[str, Any]) -> tuple[int, Any]:
        """[api] patchOrderByOrderId: refusals, then the replacement; asynchronous with ``replace_steps``."""
        b = self.behaviours
        if o.status not in OPEN_STATES:
            return self._error("final", status=o.status)
        if o.status in NO_REPLACE:
            return self._error("not_replaceable")
        coid = body.get("client_order_id") or str(uuid.uuid4())
        if any(x.client_order_id == coid for x in self.orders.values()):
            return self._error("duplicate_client_id")
        qty = int(float(body.get("qty") or o.qty))
        stop = float(body["stop_price"]) if body.get("stop_price") is not None else o.stop_price
        limit = float(body["limit_price"]) if body.get("limit_price") is not None else o.limit_price
        tif = body.get("time_in_force") or o.time_in_force
        if b.unchanged_patch and (qty, stop, limit, tif) == (o.qty, o.stop_price, o.limit_price, o.time_in_force):
            return self._error("unchanged")
        err = self._price_errors({"stop_price": body.get("stop_price"), "limit_price": body.get("limit_price")},
                                 o.side, o.symbol)
        if err:
            return err
        if o.side == "sell":
            err = self._insufficient(o.symbol, qty - o.filled_qty, exclude=o.id)
            if err:
                return err
        new = self._new_order({"symbol": o.symbol, "qty": str(qty), "side": o.side, "type": o.type,
                               "time_in_force": tif, "stop_price": stop, "limit_price": limit,
                               "client_order_id": coid}, replacement=True)
        new.replaces = o.id
        o.replaced_by = new.id
        if b.replace_steps > 0:
            o.resume, o.status, o.pending = o.status, "pending_replace", ("replace", b.replace_steps)
            new.status = "pending_new"
            self._update("pending_replace", o)
        else:
            o.status = "pending_replace"
            self._complete(o, "replace")
        return 200, new.json()

    def _new_order(self, body: dict[str, Any], *, replacement: bool = False) -> _Order:
        now = self._now()
        tif = body.get("time_in_force", "day")
        o = _Order(id=str(uuid.uuid4()), client_order_id=body.get("client_order_id") or str(uuid.uuid4()),
                   symbol=body["symbol"], side=body["side"], qty=int(float(body["qty"])), type=body.get("type", "market"),
                   time_in_force=tif, created_at=now,
                   stop_price=float(body["stop_price"]) if body.get("stop_price") is not None else None,
                   limit_price=float(body["limit_price"]) if body.get("limit_price") is not None else None,
                   session=self._session_for(now))
        if tif == "gtc" and self.behaviours.gtc_age_days > 0:
            o.expires_at = now.astimezone(UTC) + timedelta(days=self.behaviours.gtc_age_days)
        self.orders[o.id] = o
        if replacement:
            return o
        if self.initial_status is not None:
            o.status = self.initial_status
            self._update("new", o)
        elif self.market_open(now) or not self.behaviours.market_hours:
            o.status = "accepted"
            self._route(o)
        else:
            o.status = "accepted"  # [orders] "accepted": seen outside trading hours; routed at the next open
            self._update("accepted", o)
        return o

    @staticmethod
    def _pos_json(sym: str, p: _Position) -> dict[str, Any]:
        return {"asset_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, sym)), "symbol": sym, "exchange": "NASDAQ",
                "asset_class": "us_equity", "asset_marginable": True, "avg_entry_price": _s(round(p.avg, 4)),
                "qty": _s(p.qty), "qty_available": _s(p.qty), "side": "long" if p.qty >= 0 else "short",
                "market_value": _s(round(p.qty * p.price, 2)),
                "cost_basis": _s(round(p.qty * p.avg, 2)), "unrealized_pl": "0", "unrealized_plpc": "0",
                "unrealized_intraday_pl": "0", "unrealized_intraday_plpc": "0", "current_price": _s(p.price),
                "lastday_price": _s(p.price), "change_today": "0"}

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self.lock:
            for i, f in enumerate(self._faults):
                if f.method == method and path.startswith(f.path):
                    del self._faults[i]
                    return f
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                return

            def _do(self) -> None:
                u = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else {}
                with standin.lock:
                    standin.requests.append((self.command, u.path))
                    standin.headers_seen.append(dict(self.headers))
                    allowed = standin._limiter.allow()
                if not allowed:  # [api] Rate Limit: 429 with the X-RateLimit-* headers
                    reset = int(time.time()) + 60
                    return self._send(*standin._error("rate_limit"), path=u.path,
                                      headers={"X-RateLimit-Limit": str(standin._limiter.per_min),
                                               "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)})
                fault = standin._take_fault(self.command, u.path)
                kind = fault.kind if fault else None
                if fault is not None and fault.error is not None:
                    return self._send(*fault.error, path=u.path)
                if kind in ("429", "500", "503"):
                    return self._send(int(kind), {"code": int(kind) * 100000, "message": "fault injected"}, path=u.path)
                status, payload = standin.api(self.command, u.path, parse_qs(u.query), body)
                if kind and kind.endswith("-after"):
                    code = int(kind.split("-")[0])
                    return self._send(code, {"code": code * 100000, "message": "fault injected after processing"},
                                      path=u.path)
                if kind == "drop":
                    self.close_connection = True
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return None
                if kind == "timeout":
                    time.sleep(standin.response_delay_s)
                try:
                    return self._send(status, payload, path=u.path)
                except (BrokenPipeError, ConnectionResetError):
                    return None

            def _send(self, status: int, payload: Any, *, path: str = "", headers: dict[str, str] | None = None) -> None:
                with standin.lock:
                    standin.responses.append((self.command, path, status, payload))
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if data:
                    self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _do

        return Handler
