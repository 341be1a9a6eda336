"""Alpaca's trade-update websocket (``trade_updates``) through alpaca-py's ``TradingStream``.

A daemon thread runs the ``TradingStream`` (its own asyncio loop; alpaca-py reconnects with
exponential backoff and jitter, here bounded by ``BROKER_STREAM_BACKOFF_MIN_S`` /
``BROKER_STREAM_BACKOFF_MAX_S``). Each update's ``order`` (the same order object the REST API
returns) becomes ``(ts_ns, OrderView)`` on a thread-safe queue; the worker drains it on its own
thread and applies each view with ``core.on_broker_update``, the path polling takes, so an event
is published once whether it comes by stream, by poll, or both (fills are keyed by the order's
cumulative filled quantity, terminal states are final).

The stream is an accelerator, never the only source: Alpaca does not replay updates missed
while disconnected, so every (re)connection and every update that cannot be parsed sets
``resync``, and the worker polls at once. The keys go only into the authentication message.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Any
from urllib.parse import urlparse, urlunparse

from alpaca.trading.models import TradeUpdate
from alpaca.trading.stream import TradingStream

from shared.clock import dt_to_ns
from shared.logs import redact

from .alpaca import view_of
from .broker import OrderView
from .settings import BrokerSettings

log = logging.getLogger(__name__)
# websockets logs every frame at DEBUG, the authentication message (with the keys, only truncated)
# included: keep its client logger at INFO whatever LOG_LEVEL says
logging.getLogger("websockets.client").setLevel(logging.INFO)


def stream_url_for(base_url: str) -> str:
    """The trade-update websocket of a trading API base URL: ``https://h`` -> ``wss://h/stream``."""
    u = urlparse(base_url.rstrip("/"))
    scheme = "ws" if u.scheme == "http" else "wss"
    return urlunparse((scheme, u.netloc, "/stream", "", "", ""))


class _Stream(TradingStream):
    """``TradingStream`` that tells its owner when a connection is up or gone."""

    def __init__(self, owner: TradeUpdates, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._owner = owner

    async def _start_ws(self) -> None:
        await super()._start_ws()  # connect, authenticate, listen
        self._owner._connected()

    async def close(self) -> None:
        had = self._ws is not None
        await super().close()
        if had:
            self._owner._disconnected()


class TradeUpdates:
    """The trade-update stream as a queue of ``(ts_ns, OrderView)`` (thread-safe)."""

    def __init__(self, key: str, secret: str, *, url: str, paper: bool, backoff_min_s: float = 1.0,
                 backoff_max_s: float = 30.0) -> None:
        self.url = url
        self._queue: queue.Queue[tuple[int, OrderView]] = queue.Queue()
        self._lock = threading.Lock()
        self._resync = False
        self.connected = False
        self.connects = 0  # successful (re)connections
        self.received = 0  # updates queued
        self.unparsed = 0  # updates that could not be read (each one triggers a poll)
        self._stream = _Stream(self, key, secret, paper=paper, raw_data=True, url_override=url)
        self._stream._reconnect_min_backoff = backoff_min_s  # noqa: SLF001 - alpaca-py has no public knob
        self._stream._reconnect_max_backoff = backoff_max_s  # noqa: SLF001
        self._stream.subscribe_trade_updates(self._on_update)
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, bs: BrokerSettings, *, paper: bool) -> TradeUpdates:
        key = bs.apca_api_key_id.get_secret_value() if bs.apca_api_key_id else ""
        secret = bs.apca_api_secret_key.get_secret_value() if bs.apca_api_secret_key else ""
        return cls(key, secret, url=bs.apca_stream_url or stream_url_for(bs.apca_api_base_url), paper=paper,
                   backoff_min_s=bs.broker_stream_backoff_min_s, backoff_max_s=bs.broker_stream_backoff_max_s)

    # -- lifecycle (worker thread) -----------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._stream.run, name="alpaca-trade-updates", daemon=True)
            self._thread.start()
            log.info("trade-update stream starting (%s)", self.url)

    def stop(self, timeout_s: float = 7.0) -> None:
        """Ask the stream to stop, close the connection (so a pending read ends now), join the thread."""
        loop = self._stream._loop  # noqa: SLF001
        if self._thread is None or loop is None or not loop.is_running():
            return

        async def _stop() -> None:
            await self._stream.stop_ws()
            await self._stream.close()

        try:
            asyncio.run_coroutine_threadsafe(_stop(), loop).result(timeout_s)
        except Exception as exc:  # noqa: BLE001 - shutting down anyway
            log.warning("trade-update stream did not stop cleanly: %s", exc)
        self._thread.join(timeout_s)

    def drain(self) -> list[tuple[int, OrderView]]:
        """Every update received since the last call, in arrival order."""
        out = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    def take_resync(self) -> bool:
        """True once after a (re)connection or an unreadable update: updates may have been missed."""
        with self._lock:
            flag, self._resync = self._resync, False
            return flag

    # -- stream thread -------------------------------------------------------------
    def _connected(self) -> None:
        with self._lock:
            self.connected, self._resync = True, True
            self.connects += 1
        log.info("trade-update stream connected (%d)", self.connects)

    def _disconnected(self) -> None:
        with self._lock:
            self.connected = False
        log.warning("trade-update stream disconnected; polling covers the gap while it reconnects")

    async def _on_update(self, msg: dict[str, Any]) -> None:
        try:
            update = TradeUpdate(**msg["data"])
            item = (dt_to_ns(update.timestamp), view_of(update.order))
        except Exception as exc:  # noqa: BLE001 - never lose the stream over one message
            with self._lock:
                self.unparsed += 1
                self._resync = True
            log.warning("unreadable trade update (%s: %s); polling instead", type(exc).__name__, redact(str(exc))[:200])
            return
        with self._lock:
            self.received += 1
        self._queue.put(item)
