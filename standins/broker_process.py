"""The stand-in server process of the rehearsal: ``python -m standins.broker_process ...``.

One process serving, on 127.0.0.1 free ports, everything the compose stack talks to outside itself:
Alpaca's trading REST API and trade-updates websocket (``standins.alpaca_api``/``alpaca_stream``),
Alpaca's market data (``standins.alpaca_data``: only bars that have ENDED by the process clock), and
the Slack Web API (``standins.slack_api``). It runs on the rehearsal's warped clock (libfaketime), so
its "now" is the droplet's now: as that clock passes each real 1-minute bar of ``--intraday``, the
bar is printed to the trading stand-in's market (``AlpacaStandIn.on_bars``), which fills and triggers
the open orders against it exactly as it documents.

It also measures protection, the broker-side fact the rehearsal asserts: while the stop window is
open, every position must be covered by open sell stop orders for its whole quantity. Each uncovered
stretch is recorded (symbol, from, to, warped seconds).

Control (a fourth HTTP server, ``control_url``), for the rehearsal's seeded faults and its report:
``POST /refuse?seconds=S`` closes the trading API's listening socket for S (warped) seconds, so
connections are refused; ``POST /silence?seconds=S`` keeps the trade-updates websocket open but sends
nothing for S seconds (updates in that time are lost, as with a stalled stream); ``GET /state`` is the
JSON of orders, posts, trade updates, positions, Slack messages and files, stream counters and the
protection record. ``--ready FILE`` receives the URLs once every server listens; SIGTERM writes
``--state-out`` and exits.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from shared.bars import load_bars
from shared.clock import NS, calendar
from shared.schemas import BarRow
from standins.alpaca_api import AlpacaStandIn
from standins.alpaca_data import AlpacaDataStandIn
from standins.alpaca_model import OPEN_STATES
from standins.slack_api import SlackStandIn

COVERING = OPEN_STATES - {"held"}  # a sell stop in these states rests at the broker


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Protection:
    """Uncovered stretches of each position while the stop window is open (warped ns)."""

    def __init__(self, window: tuple[str, str]) -> None:
        self.window = window
        self.open: dict[str, int] = {}
        self.intervals: list[dict[str, Any]] = []
        self.samples = 0

    def sample(self, standin: AlpacaStandIn, now: int) -> None:
        cal = calendar()
        in_window = cal.in_window(now, *self.window)
        with standin.lock:
            held = {s: p.qty for s, p in standin.positions.items() if p.qty > 0}
            cover: dict[str, int] = {}
            for o in standin.orders.values():
                if o.side == "sell" and o.type == "stop" and o.status in COVERING:
                    cover[o.symbol] = cover.get(o.symbol, 0) + o.qty - o.filled_qty
        self.samples += 1
        bad = {s for s, q in held.items() if in_window and cover.get(s, 0) < q}
        for s in sorted(set(self.open) - bad):
            self._close(s, now)
        for s in sorted(bad - set(self.open)):
            self.open[s] = now

    def _close(self, s: str, now: int) -> None:
        t0 = self.open.pop(s)
        self.intervals.append({"symbol": s, "from": _iso(t0), "to": _iso(now), "seconds": round((now - t0) / NS, 1)})

    def finish(self, now: int) -> None:
        for s in sorted(self.open):
            self._close(s, now)

    def json(self) -> dict[str, Any]:
        worst = max(self.intervals, key=lambda i: i["seconds"], default=None)
        return {"window": list(self.window), "samples": self.samples, "intervals": self.intervals,
                "max_seconds": worst["seconds"] if worst else 0.0, "worst": worst}


class BrokerProcess:
    def __init__(self, minutes: Sequence[BarRow], daily: Sequence[BarRow], *, keys: tuple[str, str], slack_token: str,
                 cash: float, window: tuple[str, str]) -> None:
        self.trading = AlpacaStandIn(cash=cash, stream=True, keys=keys)
        self.data = AlpacaDataStandIn(list(minutes), list(daily))  # serves only bars ended by its clock
        self.slack = SlackStandIn(token=slack_token)
        self.minutes = sorted(minutes, key=lambda r: (r.ts, r.symbol))
        self.protection = Protection(window)
        self.printed = 0  # minute rows printed to the market so far
        self.silent_until = 0
        self.refused = 0  # refusal episodes
        self._stop = threading.Event()
        self._trading_port = int(self.trading.url.rsplit(":", 1)[1])
        self.control = ThreadingHTTPServer(("127.0.0.1", 0), self._control_handler())
        self.control.daemon_threads = True
        self.control_url = f"http://127.0.0.1:{self.control.server_address[1]}"
        stream = self.trading.stream
        assert stream is not None
        inner = stream._send  # noqa: SLF001 - the silence fault wraps the stand-in's send

        def send(msg: dict[str, Any]) -> None:
            if time.time_ns() < self.silent_until:
                stream.lost += 1
                return
            inner(msg)

        stream._send = send  # type: ignore[method-assign]  # noqa: SLF001

    def urls(self) -> dict[str, str]:
        return {"trading": self.trading.url, "stream": self.trading.stream_url, "data": self.data.url,
                "slack": self.slack.base_url, "control": self.control_url}

    def start(self) -> None:
        self.trading.__enter__()
        self.data.__enter__()
        self.slack.__enter__()
        threading.Thread(target=self.control.serve_forever, daemon=True, name="control").start()
        threading.Thread(target=self._market, daemon=True, name="market").start()

    def stop(self) -> None:
        self._stop.set()
        self.protection.finish(time.time_ns())

    # -- the market: real bars as the (warped) clock passes them -----------------------------
    def _market(self) -> None:
        while not self._stop.is_set():
            now = time.time_ns()
            rows = []
            while self.printed < len(self.minutes) and self.minutes[self.printed].ts <= now:
                rows.append(self.minutes[self.printed])
                self.printed += 1
            self.trading.on_bars(rows)  # also routes/expiries at the open and the close
            self.protection.sample(self.trading, now)
            time.sleep(2.0)  # two warped seconds: bars print within 2 s of their end

    # -- faults -----------------------------------------------------------------------------
    def refuse(self, seconds: float) -> None:
        """Close the trading API's listening socket for ``seconds`` (warped): connections are refused."""
        srv = self.trading._server  # noqa: SLF001
        srv.shutdown()
        srv.server_close()
        self.refused += 1

        def reopen() -> None:
            time.sleep(seconds)
            new = ThreadingHTTPServer(("127.0.0.1", self._trading_port), self.trading._handler())  # noqa: SLF001
            new.daemon_threads = True
            self.trading._server = new  # noqa: SLF001
            threading.Thread(target=new.serve_forever, daemon=True, name="alpaca-standin").start()

        threading.Thread(target=reopen, daemon=True).start()

    def silence(self, seconds: float) -> None:
        self.silent_until = time.time_ns() + int(seconds * NS)

    def state(self) -> dict[str, Any]:
        t = self.trading
        with t.lock:
            orders = [{k: v for k, v in o.json().items() if k in (
                "id", "client_order_id", "symbol", "side", "qty", "type", "time_in_force", "stop_price", "limit_price",
                "status", "filled_qty", "filled_avg_price", "created_at", "filled_at", "replaces", "replaced_by")}
                for o in sorted(t.orders.values(), key=lambda o: (o.created_at, o.id))]
            updates = [{"event": u["event"], "timestamp": u["timestamp"], "client_order_id": u["order"]["client_order_id"],
                        "symbol": u["order"]["symbol"], "status": u["order"]["status"], "price": u.get("price"),
                        "qty": u.get("qty")} for u in t.updates]
            positions = {s: {"qty": p.qty, "avg": round(p.avg, 4)} for s, p in sorted(t.positions.items())}
            posts = list(t.posts)
            refused = [{"method": m, "path": p, "status": st, "message": (b or {}).get("message") if isinstance(b, dict) else None}
                       for m, p, st, b in t.responses if st >= 400]
        stream = t.stream
        return {"now": _iso(time.time_ns()), "orders": orders, "posts": posts, "updates": updates, "positions": positions,
                "cash": round(t.cash, 2), "printed_minutes": self.printed,
                "stream": {"connects": stream.connects if stream else 0, "lost": stream.lost if stream else 0,
                           "sent": len(stream.sent) if stream else 0},
                "refused": self.refused, "errors": refused,
                "slack": {"messages": [{k: m.get(k) for k in ("channel", "text")} for m in self.slack.messages],
                          "files": [{k: f.get(k) for k in ("title", "filename", "channel")} for f in self.slack.files]},
                "data_requests": len(self.data.requests), "protection": self.protection.json()}

    def _control_handler(self) -> type[BaseHTTPRequestHandler]:
        proc = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                return

            def _reply(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                if urlparse(self.path).path == "/state":
                    return self._reply(200, proc.state())
                return self._reply(404, {"error": "not found"})

            def do_POST(self) -> None:  # noqa: N802
                u = urlparse(self.path)
                seconds = float((parse_qs(u.query).get("seconds") or ["0"])[0])
                if u.path == "/refuse":
                    proc.refuse(seconds)
                elif u.path == "/silence":
                    proc.silence(seconds)
                else:
                    return self._reply(404, {"error": "not found"})
                return self._reply(200, {"ok": True, "path": u.path, "seconds": seconds})

        return Handler


def client_env(key: str, secret: str, urls: dict[str, str]) -> dict[str, str]:
    """The variables an Alpaca client (the executor, the feed) needs to reach this stand-in with ``key``/``secret``:
    what an operator writes into ``.env.broker`` for the real broker, pointed at 127.0.0.1."""
    return {"APCA_API_KEY_ID": key, "APCA_API_SECRET_KEY": secret, "APCA_API_BASE_URL": urls["trading"],
            "APCA_STREAM_URL": urls["stream"], "APCA_DATA_URL": urls["data"], "APCA_ALLOW_LOCAL_URL": "1"}


def _rows(path: Path | None, symbols: set[str]) -> list[BarRow]:
    if path is None:
        return []
    res = load_bars(path)
    res.frame = res.frame[res.frame["symbol"].isin(symbols)].reset_index(drop=True)
    return res.rows()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m standins.broker_process", description=__doc__.splitlines()[0])
    ap.add_argument("--daily", type=Path, action="append", default=[], help="daily bar file (repeatable)")
    ap.add_argument("--intraday", type=Path, help="1-minute bar file")
    ap.add_argument("--symbols", required=True, help="comma-separated symbols served")
    ap.add_argument("--key", required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--slack-token", required=True)
    ap.add_argument("--cash", type=float, default=100_000.0)
    ap.add_argument("--window", default="09:35-15:55", help="stop window (NY) for the protection record")
    ap.add_argument("--ready", type=Path, required=True, help="file that receives the URLs (JSON) once listening")
    ap.add_argument("--state-out", type=Path, required=True, help="file that receives the final state on SIGTERM")
    args = ap.parse_args(argv)
    symbols = {s.strip() for s in args.symbols.split(",") if s.strip()}
    daily = [r for p in args.daily for r in _rows(p, symbols)]
    proc = BrokerProcess(_rows(args.intraday, symbols), daily, keys=(args.key, args.secret), slack_token=args.slack_token,
                         cash=args.cash, window=tuple(args.window.split("-", 1)))  # type: ignore[arg-type]
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    proc.start()
    tmp = args.ready.with_suffix(".tmp")
    tmp.write_text(json.dumps(proc.urls()))
    tmp.replace(args.ready)
    while not done.wait(3600):  # warped seconds; a signal ends the wait at once
        pass
    proc.stop()
    args.state_out.write_text(json.dumps(proc.state(), indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
