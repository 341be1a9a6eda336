"""A local stand-in of Alpaca's market-data API: ``GET /v2/stocks/bars`` (what StockHistoricalDataClient calls).

Behaviour, as Alpaca documents it (alpaca-docs ``content/api-references/market-data-api/stock-pricing-data/
historical.md``, "Multi Bars") and alpaca-py's ``RESTClient._get_marketdata`` uses it:

- bars are stamped at their START in RFC 3339 UTC (daily bars at midnight New York time), grouped by
  symbol: ``{"bars": {"AAPL": [{"t", "o", "h", "l", "c", "v", "n", "vw"}]}, "next_page_token": ...}``;
- ``start``/``end`` filter inclusively; ``limit`` (1..10000, default 1000) caps the data points of one
  response across all symbols, ordered by symbol then time; when more remain, ``next_page_token`` is an
  opaque token the client sends back as ``page_token`` (alpaca-py loops until it is null);
- ``adjustment``: ``raw`` (the default) or ``split``/``dividend``/``all``; here ``split`` and ``all``
  apply the stand-in's ``splits`` (symbol -> [(effective NY date, ratio)]: once ``clock()`` reaches the
  date, bars before it have prices divided and volume multiplied by the ratio; the bars given are raw),
  ``dividend`` is served as raw;
- ``feed``: ``iex``, ``sip`` or ``otc`` (one data set here; anything else is a 400 "invalid feed");
- errors: 400 on a bad parameter, 422 on a limit out of range, 429 when throttled (``throttle_next``, with
  ``throttle_headers`` such as ``X-RateLimit-Reset``), ``fail_next``: 500.

Only bars that ENDED at or before ``clock()`` are served (default: the wall clock), so a warped clock
(the rehearsal) sees no future bars. Our ``BarRow`` convention is ts = bar END.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from shared.clock import NS, NY, ns_to_dt
from shared.schemas import BarRow

FEEDS = ("iex", "sip", "otc")
ADJUSTMENTS = ("raw", "split", "dividend", "all")


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(s: str) -> int:
    return int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()) * NS


def _token(sym: str, t: int) -> str:
    return base64.urlsafe_b64encode(f"{sym}|{t}".encode()).decode()


def _untoken(tok: str) -> tuple[str, int]:
    sym, _, t = base64.urlsafe_b64decode(tok.encode()).decode().partition("|")
    return sym, int(t)


class BadRequest(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class AlpacaDataStandIn:
    def __init__(self, minute: list[BarRow], daily: list[BarRow], *,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.minute, self.daily = minute, daily
        self.clock = clock or (lambda: datetime.now(tz=UTC))
        self.splits: dict[str, list[tuple[str, float]]] = {}
        self.requests: list[dict[str, list[str]]] = []
        self.fail_next = 0
        self.throttle_next = 0  # the next N requests answer 429 with ``throttle_headers``
        self.throttle_headers: dict[str, str] = {}
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                return

            def do_GET(self) -> None:  # noqa: N802
                u = urlparse(self.path)
                q = parse_qs(u.query)
                standin.requests.append(q)
                if standin.fail_next:
                    standin.fail_next -= 1
                    return self._send(500, {"code": 50000000, "message": "internal server error"})
                if standin.throttle_next:  # Alpaca: 429 "Rate limit exceeded", with its X-RateLimit-* headers
                    standin.throttle_next -= 1
                    return self._send(429, {"code": 42910000, "message": "rate limit exceeded"}, standin.throttle_headers)
                if u.path != "/v2/stocks/bars":
                    return self._send(404, {"code": 40400000, "message": "not found"})
                try:
                    self._send(200, standin.bars(q))
                except BadRequest as exc:
                    self._send(exc.status, {"code": exc.status * 100000, "message": str(exc)})

            def _send(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> AlpacaDataStandIn:
        self._thread.start()
        return self

    def __exit__(self, *a: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _factor(self, sym: str, d: str, adjustment: str, today: str) -> float:
        """Split adjustment as of ``today``: splits effective by then divide the prices before them."""
        if adjustment not in ("split", "all"):
            return 1.0
        f = 1.0
        for eff, ratio in self.splits.get(sym, []):
            if d < eff <= today:
                f *= ratio
        return f

    def bars(self, q: dict[str, list[str]]) -> dict[str, object]:
        one = {k: v[0] for k, v in q.items()}
        if "symbols" not in one or "timeframe" not in one:
            raise BadRequest(400, "symbols and timeframe are required")
        symbols = set(one["symbols"].split(","))
        tf = one["timeframe"]
        if tf not in ("1Day", "1Min"):
            raise BadRequest(400, f"unsupported timeframe {tf}")
        feed = one.get("feed", "iex")
        if feed not in FEEDS:
            raise BadRequest(400, f"invalid feed {feed}")
        adjustment = one.get("adjustment", "raw")
        if adjustment not in ADJUSTMENTS:
            raise BadRequest(400, f"invalid adjustment {adjustment}")
        limit = int(one.get("limit", 1000))
        if not 1 <= limit <= 10000:
            raise BadRequest(422, "limit must be in range 1-10000")
        now = int(self.clock().timestamp() * NS)
        start = _parse(one["start"]) if "start" in one else 0
        end = min(_parse(one["end"]), now) if "end" in one else now
        after = _untoken(one["page_token"]) if one.get("page_token") else None
        picked: list[tuple[str, int, BarRow]] = []
        for b in self.daily if tf == "1Day" else self.minute:
            if b.symbol not in symbols or b.ts > now:  # only bars that have ended
                continue
            if tf == "1Day":
                d = ns_to_dt(b.ts, NY).date()
                t = int(datetime(d.year, d.month, d.day, tzinfo=NY).timestamp()) * NS
            else:
                t = b.ts - 60 * NS
            if start <= t <= end and (after is None or (b.symbol, t) > after):
                picked.append((b.symbol, t, b))
        picked.sort(key=lambda x: (x[0], x[1]))
        page, more = picked[:limit], len(picked) > limit
        out: dict[str, list[dict[str, object]]] = {}
        today = ns_to_dt(now, NY).date().isoformat()
        for sym, t, b in page:
            f = self._factor(sym, ns_to_dt(b.ts, NY).date().isoformat(), adjustment, today)
            out.setdefault(sym, []).append({"t": _iso(t), "o": b.open / f, "h": b.high / f, "l": b.low / f,
                                            "c": b.close / f, "v": b.volume * f, "n": 1, "vw": b.close / f})
        return {"bars": out, "next_page_token": _token(page[-1][0], page[-1][1]) if more else None}
