"""A local stand-in of Alpaca's market-data API: ``GET /v2/stocks/bars`` (what StockHistoricalDataClient calls).

Serves bars given as ``BarRow``s (ts = bar END, our convention) in Alpaca's shape: bars stamped
at their START in RFC 3339 UTC (daily bars at midnight New York time), grouped by symbol:
``{"bars": {"AAPL": [{"t": ..., "o": ..., "h": ..., "l": ..., "c": ..., "v": ..., "n": ..., "vw": ...}]},
"next_page_token": null}``. ``fail_next`` makes the next request answer 500.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from shared.clock import NS, NY, ns_to_dt
from shared.schemas import BarRow


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(s: str) -> int:
    return int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()) * NS


class AlpacaDataStandIn:
    def __init__(self, minute: list[BarRow], daily: list[BarRow]) -> None:
        self.minute, self.daily = minute, daily
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
                self._send(200, standin.bars(q))

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

    def bars(self, q: dict[str, list[str]]) -> dict[str, object]:
        symbols = set(q["symbols"][0].split(","))
        tf = q["timeframe"][0]
        start, end = _parse(q["start"][0]), _parse(q["end"][0])
        out: dict[str, list[dict[str, object]]] = {}
        for b in self.daily if tf == "1Day" else self.minute:
            if b.symbol not in symbols:
                continue
            if tf == "1Day":
                d = ns_to_dt(b.ts, NY).date()
                t = int(datetime(d.year, d.month, d.day, tzinfo=NY).timestamp()) * NS
            else:
                t = b.ts - 60 * NS
            if start <= t <= end:
                out.setdefault(b.symbol, []).append({"t": _iso(t), "o": b.open, "h": b.high, "l": b.low, "c": b.close,
                                                     "v": b.volume, "n": 1, "vw": b.close})
        return {"bars": out, "next_page_token": None}
