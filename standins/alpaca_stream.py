"""A local stand-in of Alpaca's trade-update websocket (``wss://paper-api.alpaca.markets/stream``).

The ``websockets`` sync server on 127.0.0.1 (free port) speaks the protocol alpaca-py's
``TradingStream`` expects, in binary frames like Alpaca's paper stream:
1. client ``{"action": "authenticate", "data": {"key_id": ..., "secret_key": ...}}`` ->
   ``{"stream": "authorization", "data": {"action": "authenticate", "status": "authorized"}}``
   (``"unauthorized"`` and a close when the keys are wrong);
2. client ``{"action": "listen", "data": {"streams": ["trade_updates"]}}`` ->
   ``{"stream": "listening", "data": {"streams": ["trade_updates"]}}``;
3. then ``{"stream": "trade_updates", "data": {"event": "fill", "timestamp": ..., "order": {...},
   "execution_id": ..., "price": ..., "qty": ..., "position_qty": ...}}`` per order change.

Like Alpaca, updates published while no client listens are lost (``lost`` counts them).
Controls: ``publish`` (the HTTP stand-in calls it on every order change), ``drop()`` (cut every
connection without a close frame), ``resend_last()`` (a duplicate), ``connects``, ``wait_connected``.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.protocol import State
from websockets.sync.server import ServerConnection, serve

_DROP = object()


class TradeUpdatesStandIn:
    def __init__(self, key: str | None = None, secret: str | None = None) -> None:
        self.key, self.secret = key, secret
        self.lock = threading.Lock()
        self._outboxes: list[queue.Queue[Any]] = []
        self.connects = 0  # authorized, listening connections so far
        self.auth_failures = 0
        self.sent: list[dict[str, Any]] = []  # every update published to at least one client
        self.lost = 0  # published while nobody listened
        self._server = serve(self._handler, "127.0.0.1", 0)
        self.url = f"ws://127.0.0.1:{self._server.socket.getsockname()[1]}/stream"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="alpaca-stream-standin")

    def __enter__(self) -> TradeUpdatesStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.drop()
        self._server.shutdown()

    # -- controls -------------------------------------------------------------------
    @property
    def listening(self) -> int:
        with self.lock:
            return len(self._outboxes)

    def wait_connected(self, n: int = 1, timeout_s: float = 10.0) -> None:
        """Until ``n`` connections have been made in total and one is listening."""
        deadline = time.monotonic() + timeout_s
        while not (self.connects >= n and self.listening):
            if time.monotonic() > deadline:
                raise TimeoutError(f"stream: {self.connects} connections, {self.listening} listening; wanted {n}")
            time.sleep(0.01)

    def publish(self, event: str, order: dict[str, Any], **extra: Any) -> None:
        msg = {"stream": "trade_updates",
               "data": {"event": event, "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                        "order": order, **extra}}
        self._send(msg)

    def resend_last(self) -> None:
        self._send(self.sent[-1])

    def drop(self) -> None:
        """Cut every connection (no close frame), as a network failure would."""
        with self.lock:
            for q in self._outboxes:
                q.put(_DROP)

    # -- server ----------------------------------------------------------------------
    def _send(self, msg: dict[str, Any]) -> None:
        with self.lock:
            if not self._outboxes:
                self.lost += 1
                return
            self.sent.append(msg)
            for q in self._outboxes:
                q.put(json.dumps(msg).encode())

    def _handler(self, conn: ServerConnection) -> None:
        try:
            auth = json.loads(conn.recv(timeout=10))
            data = auth.get("data") or {}
            ok = auth.get("action") == "authenticate" and (
                self.key is None or (data.get("key_id"), data.get("secret_key")) == (self.key, self.secret))
            status = "authorized" if ok else "unauthorized"
            conn.send(json.dumps({"stream": "authorization", "data": {"action": "authenticate", "status": status}}).encode())
            if not ok:
                self.auth_failures += 1
                return
            listen = json.loads(conn.recv(timeout=10))
            streams = [s for s in (listen.get("data") or {}).get("streams", []) if s == "trade_updates"]
            conn.send(json.dumps({"stream": "listening", "data": {"streams": streams}}).encode())
        except (ConnectionClosed, TimeoutError, ValueError):
            return
        q: queue.Queue[Any] = queue.Queue()
        with self.lock:
            self._outboxes.append(q)
            self.connects += 1
        try:
            while True:
                try:
                    item = q.get(timeout=0.05)
                except queue.Empty:
                    if conn.protocol.state is not State.OPEN:
                        return
                    continue
                if item is _DROP:
                    conn.socket.shutdown(socket.SHUT_RDWR)
                    conn.socket.close()
                    return
                conn.send(item)
        except (ConnectionClosed, OSError):
            return
        finally:
            with self.lock:
                self._outboxes.remove(q)
