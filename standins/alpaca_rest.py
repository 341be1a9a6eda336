"""The Alpaca stand-in's REST endpoints (a part of ``alpaca_api.AlpacaStandIn``): account, clock, calendar,
positions (list, get, close), orders (create, list, get by id, get by client id, replace, cancel), with
Alpaca's JSON shapes and, in Alpaca's order of checks, its validations and error bodies (``ERRORS``).
Sources as in ``alpaca_api.py``: [orders] docs "Orders at Alpaca"; [api] the trading API reference and
``oas/trading/openapi.yaml`` (operations ``postOrder``, ``patchOrderByOrderId``, ``deleteOrderByOrderID``).
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.clock import NS, calendar, dt_to_ns, ny_trade_date
from standins.alpaca_assets import assets_api
from standins.alpaca_model import (
    ERRORS,
    NO_REPLACE,
    OPEN_STATES,
    Behaviours,
    Order,
    Position,
    decimals,
    iso,
    num,
)


class TradingAPI:
    """``api(method, path, query, body)`` -> (status, JSON) over the stand-in's state; the market's
    transitions (``_route``, ``_finish``, ``_complete``) and hours come from ``alpaca_market.Market``."""

    behaviours: Behaviours
    orders: dict[str, Order]
    positions: dict[str, Position]
    prices: dict[str, float]
    cash: float
    posts: list[dict[str, Any]]
    initial_status: str | None
    lock: threading.RLock

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
            if decimals(str(raw)) > (2 if price >= 1.0 else 4):
                return self._error("sub_penny", field=fld, price=raw)
        last = self.prices.get(symbol)
        stop = body.get("stop_price")
        if b.stop_side and stop is not None and last is not None:
            if side == "sell" and float(stop) > last / 1.001:
                return self._error("stop_side", base=num(last))
            if side == "buy" and float(stop) < last * 1.001:
                return self._error("stop_side_buy", base=num(last))
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
                "status": "ACTIVE", "crypto_status": "ACTIVE", "currency": "USD", "cash": num(round(self.cash, 2)),
                "buying_power": num(round(max(self._buying_power(), 0), 2)), "equity": num(round(equity, 2)),
                "portfolio_value": num(round(equity, 2)), "pattern_day_trader": False, "trading_blocked": False,
                "transfers_blocked": False, "account_blocked": False, "created_at": "2024-01-02T00:00:00Z",
                "trade_suspended_by_user": False, "multiplier": "1",
                "shorting_enabled": self.behaviours.shorting_enabled,
                "last_equity": num(round(equity, 2)), "long_market_value": num(round(long_mv, 2)),
                "short_market_value": num(round(short_mv, 2)), "initial_margin": "0", "maintenance_margin": "0",
                "daytrade_count": 0, "sma": "0"}

    def _clock_json(self) -> dict[str, Any]:
        now = self._now()
        cal = calendar()
        ts = dt_to_ns(now)
        d = ny_trade_date(ts)
        nxt = d if cal.is_session(d) and ts < cal.open_close_ns(d)[0] else cal.next_session(d)
        cur_close = cal.open_close_ns(d)[1] if cal.is_session(d) and ts < cal.open_close_ns(d)[1] else cal.open_close_ns(nxt)[1]
        return {"timestamp": iso(now), "is_open": self.market_open(now),
                "next_open": iso(datetime.fromtimestamp(cal.open_close_ns(nxt)[0] / NS, tz=UTC)),
                "next_close": iso(datetime.fromtimestamp(cur_close / NS, tz=UTC))}

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

    def _cancel(self, o: Order) -> tuple[int, Any]:
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

    def _replace(self, o: Order, body: dict[str, Any]) -> tuple[int, Any]:
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

    def _new_order(self, body: dict[str, Any], *, replacement: bool = False) -> Order:
        now = self._now()
        tif = body.get("time_in_force", "day")
        o = Order(id=str(uuid.uuid4()), client_order_id=body.get("client_order_id") or str(uuid.uuid4()),
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
    def _pos_json(sym: str, p: Position) -> dict[str, Any]:
        return {"asset_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, sym)), "symbol": sym, "exchange": "NASDAQ",
                "asset_class": "us_equity", "asset_marginable": True, "avg_entry_price": num(round(p.avg, 4)),
                "qty": num(p.qty), "qty_available": num(p.qty), "side": "long" if p.qty >= 0 else "short",
                "market_value": num(round(p.qty * p.price, 2)),
                "cost_basis": num(round(p.qty * p.avg, 2)), "unrealized_pl": "0", "unrealized_plpc": "0",
                "unrealized_intraday_pl": "0", "unrealized_intraday_plpc": "0", "current_price": num(p.price),
                "lastday_price": num(p.price), "change_today": "0"}
