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

The parts, each with the citations of what it does: ``alpaca_model.py`` (statuses, error bodies,
``Behaviours``, the order and position records), ``alpaca_market.py`` (hours, routing, expiry, the
asynchronous transitions, the bar-driven market), ``alpaca_rest.py`` (the endpoints and their
validations); this module holds the HTTP server, the rate limit, the faults and the test controls.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from shared.clock import calendar
from standins.alpaca_market import Market
from standins.alpaca_model import Behaviours, Order, Position, iso
from standins.alpaca_rest import TradingAPI
from standins.alpaca_stream import TradeUpdatesStandIn


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


class AlpacaStandIn(Market, TradingAPI):
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
        self.orders: dict[str, Order] = {}
        self.positions: dict[str, Position] = {}
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

    def _update(self, event: str, o: Order, **extra: Any) -> None:
        """Record (and publish, when the stream runs) a trade update for ``o`` as it is now [stream]."""
        o.updated_at = self._now()
        data = {"event": event, "timestamp": iso(o.updated_at), "order": o.json(), **extra}
        self.updates.append(data)
        if self.stream is not None:
            self.stream.publish(event, data["order"], **extra)

    # -- controls ----------------------------------------------------------------
    def fault(self, method: str, path: str, kind: str) -> None:
        """Queue a fault for the next request whose method matches and whose path starts with ``path``."""
        with self.lock:
            self._faults.append(_Fault(method.upper(), path, kind))

    def refuse(self, method: str, path: str, case: str, **fmt: Any) -> None:
        """The next matching request is answered with Alpaca's error ``ERRORS[case]`` (not processed)."""
        with self.lock:
            self._faults.append(_Fault(method.upper(), path, "error", self._error(case, **fmt)))

    def by_client_id(self, coid: str) -> Order:
        return next(o for o in self.orders.values() if o.client_order_id == coid)

    def set_position(self, symbol: str, qty: int, avg: float) -> None:
        with self.lock:
            self.positions[symbol] = Position(qty=qty, avg=avg, price=avg)

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

    def external_order(self, symbol: str, side: str, qty: int, order_type: str = "stop", stop_price: float | None = None) -> Order:
        """An order placed outside the system (e.g. by hand in the dashboard)."""
        with self.lock:
            now = self._now()
            o = Order(id=str(uuid.uuid4()), client_order_id=str(uuid.uuid4()), symbol=symbol, side=side, qty=qty,
                       type=order_type, time_in_force="gtc", stop_price=stop_price, status="accepted", created_at=now,
                       session=self._session_for(now))
            self.orders[o.id] = o
            self._update("new", o)
            return o

    def orders_for(self, coid: str) -> list[Order]:
        return [o for o in self.orders.values() if o.client_order_id == coid]

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
