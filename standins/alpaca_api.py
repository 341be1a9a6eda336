"""A local HTTP stand-in of Alpaca's trading API v2 (stdlib http.server on 127.0.0.1, free port).

Implements what alpaca-py's ``TradingClient`` calls: account, clock, calendar, positions (list,
get, close), orders (create, list, get by id, get by client id, replace, cancel), with Alpaca's
JSON shapes (numbers as strings, ISO timestamps, UUID ids) and its error bodies:
- 422 ``{"code": 40010001, "message": "client_order_id must be unique"}`` on a reused client id;
- 403 ``{"code": 40310000, "message": "insufficient qty available for order (requested: N, available: M)",
  "available": ..., "existing_qty": ..., "held_for_orders": ..., "related_orders": [...], "symbol": ...}``;
- 422 ``{"code": 42210000, "message": "unable to replace order, order isn't sent to exchange yet"}`` on a
  PATCH in a pending state; 422 ``order is already in "<status>" state`` on cancel/replace of a final order;
- 404 ``{"code": 40410000, "message": "order not found"}``.

Test controls (call from the test, the server runs in a thread): ``fault(method, path, kind)``
queues a fault for the next matching request (``timeout``: the order is created, the response is
delayed past the client's timeout; ``drop``: created, then the connection closes without a
response; ``429``/``500``/``503``: refused before processing; ``502-after``/``504-after``: processed,
then that error answered, as a gateway that lost the backend's answer does), ``fill``, ``set_status``,
``stick_pending_cancel``, ``external_order`` (an order placed outside the system), ``posts``
(every POST /v2/orders body, to count submissions).

With ``stream=True`` it also runs the trade-update websocket (``standins/alpaca_stream.py``,
``stream_url``) and publishes an update on every order change, as Alpaca does: ``new`` (created,
also outside the system), ``partial_fill``/``fill`` (``fill``), ``pending_cancel``/``canceled``,
``replaced`` (the old order) then ``new`` (its replacement).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from standins.alpaca_assets import assets_api
from standins.alpaca_stream import TradeUpdatesStandIn

OPEN_STATES = {"new", "accepted", "pending_new", "partially_filled", "pending_cancel", "pending_replace", "held",
               "accepted_for_bidding"}
NO_REPLACE = {"pending_new", "pending_cancel", "pending_replace", "accepted_for_bidding", "held"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _s(x: float | int | None) -> str | None:
    return None if x is None else (str(int(x)) if float(x).is_integer() else repr(float(x)))


@dataclass
class _Order:
    id: str
    client_order_id: str
    symbol: str
    side: str
    qty: int
    type: str
    time_in_force: str
    stop_price: float | None = None
    limit_price: float | None = None
    status: str = "accepted"
    filled_qty: int = 0
    filled_avg_price: float | None = None
    created_at: str = field(default_factory=_now)
    replaced_by: str | None = None
    replaces: str | None = None
    stick_cancel: bool = False

    def json(self) -> dict[str, Any]:
        t = _now()
        return {
            "id": self.id, "client_order_id": self.client_order_id, "created_at": self.created_at, "updated_at": t,
            "submitted_at": self.created_at, "filled_at": t if self.status == "filled" else None, "expired_at": None,
            "canceled_at": t if self.status == "canceled" else None, "failed_at": None,
            "replaced_at": t if self.status == "replaced" else None, "replaced_by": self.replaced_by,
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


class AlpacaStandIn:
    """The stand-in's state and controls. ``url`` is the base URL for ``url_override``."""

    def __init__(self, cash: float = 100_000.0, *, initial_status: str = "accepted", response_delay_s: float = 1.0,
                 stream: bool = False, keys: tuple[str, str] | None = None) -> None:
        self.cash = cash
        self.orders: dict[str, _Order] = {}
        self.positions: dict[str, _Position] = {}
        self.posts: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.headers_seen: list[dict[str, str]] = []
        self.initial_status = initial_status
        self.response_delay_s = response_delay_s
        self._faults: list[tuple[str, str, str]] = []
        self.lock = threading.RLock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="alpaca-standin")
        self.stream: TradeUpdatesStandIn | None = None
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

    def _update(self, event: str, o: _Order, **extra: Any) -> None:
        """Publish a trade update for ``o`` (its state now) when the stream runs."""
        if self.stream is not None:
            self.stream.publish(event, o.json(), **extra)

    # -- controls ----------------------------------------------------------------
    def fault(self, method: str, path: str, kind: str) -> None:
        """Queue a fault for the next request whose method matches and whose path starts with ``path``."""
        with self.lock:
            self._faults.append((method.upper(), path, kind))

    def by_client_id(self, coid: str) -> _Order:
        return next(o for o in self.orders.values() if o.client_order_id == coid)

    def set_position(self, symbol: str, qty: int, avg: float) -> None:
        with self.lock:
            self.positions[symbol] = _Position(qty=qty, avg=avg, price=avg)

    def set_status(self, coid: str, status: str) -> None:
        with self.lock:
            self.by_client_id(coid).status = status

    def stick_pending_cancel(self, coid: str, stuck: bool = True) -> None:
        with self.lock:
            self.by_client_id(coid).stick_cancel = stuck

    def finish_cancel(self, coid: str) -> None:
        with self.lock:
            o = self.by_client_id(coid)
            o.stick_cancel = False
            if o.status == "pending_cancel":
                o.status = "canceled"
                self._update("canceled", o)

    def fill(self, coid: str, qty: int, price: float) -> None:
        """Fill ``qty`` more shares of an order at ``price`` (partial when short of its qty)."""
        with self.lock:
            o = self.by_client_id(coid)
            prev = (o.filled_avg_price or 0.0) * o.filled_qty
            o.filled_qty += qty
            o.filled_avg_price = round((prev + qty * price) / o.filled_qty, 4)
            o.status = "filled" if o.filled_qty >= o.qty else "partially_filled"
            pos = self.positions.setdefault(o.symbol, _Position())
            if o.side == "buy":
                pos.avg = (pos.avg * pos.qty + qty * price) / (pos.qty + qty)
                pos.qty += qty
                self.cash -= qty * price
            else:
                pos.qty -= qty
                self.cash += qty * price
            pos.price = price
            if pos.qty == 0:
                del self.positions[o.symbol]
            self._update("fill" if o.status == "filled" else "partial_fill", o, execution_id=str(uuid.uuid4()),
                         price=_s(price), qty=_s(qty), position_qty=_s(pos.qty))

    def external_order(self, symbol: str, side: str, qty: int, order_type: str = "stop", stop_price: float | None = None) -> _Order:
        """An order placed outside the system (e.g. by hand in the dashboard)."""
        with self.lock:
            o = _Order(id=str(uuid.uuid4()), client_order_id=str(uuid.uuid4()), symbol=symbol, side=side, qty=qty,
                       type=order_type, time_in_force="gtc", stop_price=stop_price, status="accepted")
            self.orders[o.id] = o
            self._update("new", o)
            return o

    def orders_for(self, coid: str) -> list[_Order]:
        return [o for o in self.orders.values() if o.client_order_id == coid]

    # -- API ---------------------------------------------------------------------
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
        return 403, {"available": str(available), "code": 40310000, "existing_qty": str(existing),
                     "held_for_orders": str(held), "related_orders": related, "symbol": symbol,
                     "message": f"insufficient qty available for order (requested: {requested}, available: {available})"}

    def api(self, method: str, path: str, query: dict[str, list[str]], body: dict[str, Any]) -> tuple[int, Any]:
        with self.lock:
            return self._api(method, path, query, body)

    def _api(self, method: str, path: str, query: dict[str, list[str]], body: dict[str, Any]) -> tuple[int, Any]:
        assets = assets_api(method, path, query)  # GET /v2/assets[/{symbol}]: standins/alpaca_assets.py
        if assets is not None:
            return assets
        not_found = (404, {"code": 40410000, "message": "order not found"})
        if method == "GET" and path == "/v2/account":
            equity = self.cash + sum(p.qty * p.price for p in self.positions.values())
            return 200, {"id": str(uuid.uuid5(uuid.NAMESPACE_DNS, "acct")), "account_number": "PA0STANDIN",
                         "status": "ACTIVE", "crypto_status": "ACTIVE", "currency": "USD", "cash": _s(round(self.cash, 2)),
                         "buying_power": _s(round(max(self.cash, 0), 2)), "equity": _s(round(equity, 2)),
                         "portfolio_value": _s(round(equity, 2)), "pattern_day_trader": False, "trading_blocked": False,
                         "transfers_blocked": False, "account_blocked": False, "created_at": "2024-01-02T00:00:00Z",
                         "trade_suspended_by_user": False, "multiplier": "1", "shorting_enabled": False,
                         "last_equity": _s(round(equity, 2)), "long_market_value": "0", "short_market_value": "0",
                         "initial_margin": "0", "maintenance_margin": "0", "daytrade_count": 0, "sma": "0"}
        if method == "GET" and path == "/v2/clock":
            return 200, {"timestamp": _now(), "is_open": True, "next_open": "2030-01-02T14:30:00Z",
                         "next_close": "2030-01-02T21:00:00Z"}
        if method == "GET" and path == "/v2/calendar":
            return 200, [{"date": "2030-01-02", "open": "09:30", "close": "16:00", "session_open": "0400",
                          "session_close": "2000", "settlement_date": "2030-01-03"}]
        if path == "/v2/positions" and method == "GET":
            return 200, [self._pos_json(s, p) for s, p in sorted(self.positions.items())]
        if path.startswith("/v2/positions/"):
            sym = path.rsplit("/", 1)[1]
            p = self.positions.get(sym)
            if p is None:
                return 404, {"code": 40410000, "message": "position does not exist"}
            if method == "GET":
                return 200, self._pos_json(sym, p)
            if method == "DELETE":
                err = self._insufficient(sym, p.qty)
                if err:
                    return err
                return 200, self._new_order({"symbol": sym, "qty": str(p.qty), "side": "sell", "type": "market",
                                             "time_in_force": "day"}).json()
        if path == "/v2/orders" and method == "POST":
            self.posts.append(body)
            coid = body.get("client_order_id") or str(uuid.uuid4())
            if any(o.client_order_id == coid for o in self.orders.values()):
                return 422, {"code": 40010001, "message": "client_order_id must be unique"}
            if body.get("side") == "sell":
                err = self._insufficient(body["symbol"], int(float(body["qty"])))
                if err:
                    return err
            return 200, self._new_order(body).json()
        if path == "/v2/orders" and method == "GET":
            status = (query.get("status") or ["open"])[0]
            rows = sorted(self.orders.values(), key=lambda o: o.created_at, reverse=True)
            if status == "open":
                rows = [o for o in rows if o.status in OPEN_STATES]
            elif status == "closed":
                rows = [o for o in rows if o.status not in OPEN_STATES]
            return 200, [o.json() for o in rows]
        if path == "/v2/orders:by_client_order_id" and method == "GET":
            coid = (query.get("client_order_id") or [""])[0]
            matches = self.orders_for(coid)
            return (200, matches[0].json()) if matches else not_found
        if path.startswith("/v2/orders/"):
            o = self.orders.get(path.rsplit("/", 1)[1])
            if o is None:
                return not_found
            if method == "GET":
                return 200, o.json()
            if method == "DELETE":
                if o.status not in OPEN_STATES:
                    return 422, {"code": 42210000, "message": f"order is already in \"{o.status}\" state"}
                o.status = "pending_cancel" if o.stick_cancel else "canceled"
                self._update(o.status, o)
                return 204, None
            if method == "PATCH":
                if o.status not in OPEN_STATES:
                    return 422, {"code": 42210000, "message": f"order is already in \"{o.status}\" state"}
                if o.status in NO_REPLACE:
                    return 422, {"code": 42210000, "message": "unable to replace order, order isn't sent to exchange yet"}
                coid = body.get("client_order_id") or str(uuid.uuid4())
                if any(x.client_order_id == coid for x in self.orders.values()):
                    return 422, {"code": 40010001, "message": "client_order_id must be unique"}
                qty = int(float(body.get("qty") or o.qty))
                if o.side == "sell":
                    err = self._insufficient(o.symbol, qty, exclude=o.id)
                    if err:
                        return err
                new = self._new_order({"symbol": o.symbol, "qty": str(qty), "side": o.side, "type": o.type,
                                       "time_in_force": body.get("time_in_force") or o.time_in_force,
                                       "stop_price": body.get("stop_price", o.stop_price),
                                       "limit_price": body.get("limit_price", o.limit_price), "client_order_id": coid,
                                       "_replacement": True})
                new.replaces = o.id
                o.status, o.replaced_by = "replaced", new.id
                self._update("replaced", o)
                self._update("new", new)
                return 200, new.json()
        return 404, {"code": 40400000, "message": "endpoint not found"}

    def _new_order(self, body: dict[str, Any]) -> _Order:
        o = _Order(id=str(uuid.uuid4()), client_order_id=body.get("client_order_id") or str(uuid.uuid4()),
                   symbol=body["symbol"], side=body["side"], qty=int(float(body["qty"])), type=body.get("type", "market"),
                   time_in_force=body.get("time_in_force", "day"),
                   stop_price=float(body["stop_price"]) if body.get("stop_price") is not None else None,
                   limit_price=float(body["limit_price"]) if body.get("limit_price") is not None else None,
                   status=self.initial_status)
        self.orders[o.id] = o
        if not body.get("_replacement"):
            self._update("new", o)
        return o

    @staticmethod
    def _pos_json(sym: str, p: _Position) -> dict[str, Any]:
        return {"asset_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, sym)), "symbol": sym, "exchange": "NASDAQ",
                "asset_class": "us_equity", "asset_marginable": True, "avg_entry_price": _s(round(p.avg, 4)),
                "qty": _s(p.qty), "qty_available": _s(p.qty), "side": "long", "market_value": _s(round(p.qty * p.price, 2)),
                "cost_basis": _s(round(p.qty * p.avg, 2)), "unrealized_pl": "0", "unrealized_plpc": "0",
                "unrealized_intraday_pl": "0", "unrealized_intraday_plpc": "0", "current_price": _s(p.price),
                "lastday_price": _s(p.price), "change_today": "0"}

    def _take_fault(self, method: str, path: str) -> str | None:
        with self.lock:
            for i, (m, p, kind) in enumerate(self._faults):
                if m == method and path.startswith(p):
                    del self._faults[i]
                    return kind
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
                standin.requests.append((self.command, u.path))
                standin.headers_seen.append(dict(self.headers))
                fault = standin._take_fault(self.command, u.path)
                if fault in ("429", "500", "503"):
                    return self._send(int(fault), {"code": int(fault) * 100000, "message": "fault injected"})
                status, payload = standin.api(self.command, u.path, parse_qs(u.query), body)
                if fault and fault.endswith("-after"):
                    code = int(fault.split("-")[0])
                    return self._send(code, {"code": code * 100000, "message": "fault injected after processing"})
                if fault == "drop":
                    self.close_connection = True
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return None
                if fault == "timeout":
                    time.sleep(standin.response_delay_s)
                try:
                    return self._send(status, payload)
                except (BrokenPipeError, ConnectionResetError):
                    return None

            def _send(self, status: int, payload: Any) -> None:
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if data:
                    self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _do

        return Handler
