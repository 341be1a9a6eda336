"""Broker and executor settings. Only the executor package (executor, feed, backfill) reads them: broker keys never leave it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from shared.settings.base import CommaList, Flag, Section, fingerprint

ALPACA_PAPER_URL = "https://paper-api.alpaca.markets"
ALPACA_LIVE_URL = "https://api.alpaca.markets"


# the broker settings that change what the executor decides (fills, costs, confirmation); the rest
# (keys, endpoints, timeouts, polling, the feed) change how it talks to the broker, not the outcome
DECISION_FIELDS = ("sim_starting_cash", "sim_slippage_bps", "sim_commission_per_share", "sim_commission_per_order",
                   "sim_sell_fee_bps", "sim_max_volume_pct", "entry_confirm_start", "entry_confirm_end",
                   "entry_confirm_minutes")


class BrokerSettings(Section):
    """Alpaca credentials and endpoints, simulator costs, entry confirmation (read only by the executor)."""

    def hash(self) -> str:
        """Fingerprint of ``DECISION_FIELDS`` (ledger provenance: ``Settings.hash()`` does not see this section)."""
        return fingerprint({k: getattr(self, k) for k in DECISION_FIELDS})

    apca_api_key_id: SecretStr | None = Field(None, description="Alpaca API key id (secret; the executor package only: executor and feed containers).")
    apca_api_secret_key: SecretStr | None = Field(None, description="Alpaca API secret key (secret; the executor package only: executor and feed containers).")
    apca_api_base_url: str = Field("https://paper-api.alpaca.markets", description="Alpaca trading API base URL (paper or live).")
    apca_data_url: str | None = Field(None, description="Alpaca market-data base URL override (tests point it at a stand-in).")
    apca_paper_url: str = Field(ALPACA_PAPER_URL, description="The URL that counts as Alpaca's paper endpoint (ALPACA_PAPER must use it; LIVE must not).")
    apca_allow_local_url: Flag = Field(False, description="Accept a 127.0.0.1/localhost APCA_API_BASE_URL as the endpoint of either mode (tests and stand-ins only).")
    broker_timeout_s: float = Field(10.0, gt=0, description="HTTP timeout of one broker request; a timeout is an unknown outcome (looked up by client_order_id).")
    broker_poll_s: float = Field(2.0, gt=0, description="ALPACA modes: seconds between polls of open orders when idle.")
    broker_trade_stream: Flag = Field(True, description="ALPACA modes: listen to Alpaca's trade-update websocket for order events (polling stays the fallback).")
    apca_stream_url: str | None = Field(None, description="Trade-update websocket URL; unset: derived from APCA_API_BASE_URL (wss://<host>/stream). Must be on the same host as APCA_API_BASE_URL.")
    broker_poll_streaming_s: float = Field(30.0, gt=0, description="ALPACA modes: seconds between polls while the trade-update stream is connected (BROKER_POLL_S otherwise).")
    broker_stream_backoff_min_s: float = Field(1.0, gt=0, description="Trade-update stream: first reconnection delay (exponential backoff with jitter).")
    broker_stream_backoff_max_s: float = Field(30.0, gt=0, description="Trade-update stream: longest reconnection delay.")
    broker_snapshot_interval_s: int = Field(60, ge=5, description="ALPACA modes: seconds between periodic broker snapshots (event-time modes publish on session events only).")
    sim_starting_cash: float | None = Field(None, gt=0, le=1e12, description="PAPER_SIM starting cash; unset: STARTING_CAPITAL.")
    sim_slippage_bps: float = Field(5.0, le=10_000, ge=0, description="PAPER_SIM: adverse slippage (bps) on market and triggered stop fills.")
    sim_commission_per_share: float = Field(0.0, le=1000, ge=0, description="PAPER_SIM: commission per share filled.")
    sim_commission_per_order: float = Field(0.0, le=1e6, ge=0, description="PAPER_SIM: commission charged on an order's first fill.")
    sim_sell_fee_bps: float = Field(0.0, le=10_000, ge=0, description="PAPER_SIM: regulatory fees on sells (bps of notional).")
    sim_max_volume_pct: float = Field(0.0, ge=0, le=100, description="PAPER_SIM: partial fills — at most this % of a bar's volume fills per bar (0: fill in full).")
    entry_confirm_start: str = Field("09:45", description="Intraday entry confirmation window start (NY time, 10-minute bars).")
    entry_confirm_end: str = Field("15:30", description="Intraday entry confirmation window end (NY time).")
    entry_confirm_minutes: int = Field(10, ge=1, description="Bar length (minutes) of the intraday entry confirmation.")
    exit_max_unprotected_s: float = Field(120.0, gt=0, description="Longest a position may stay without its stop during an exit or flatten (from the stop's confirmed cancel): an exit still unfilled then is cancelled and the stop restored (event time; a simulated market exit fills on the next bar).")
    feed_symbols: CommaList = Field([], description="Live feed: comma-separated symbols; empty: SCAN_UNIVERSE_FILE, else the symbols in the bar store.")
    feed_intraday: Flag = Field(True, description="Live feed: also fetch and publish 1-minute bars.")
    feed_data_feed: Literal["iex", "sip"] = Field("iex", description="Alpaca market-data feed: iex (free) or sip.")
    feed_adjustment: Literal["raw", "split", "dividend", "all"] = Field("split", description="Corporate-action adjustment of the bars fetched (feed and backfill); split: history adjusted for splits as of the request (a later split re-fetches the symbol's history).")
    backfill_batch_symbols: int = Field(100, ge=1, le=1000, description="Backfill: symbols per market-data request (alpaca-py pages through each).")
    backfill_intraday_sessions: int = Field(5, ge=1, description="Backfill --intraday: sessions of 1-minute bars per chunk (the unit a crash can lose).")
    backfill_check_sessions: int = Field(5, ge=1, description="Backfill: last stored sessions re-fetched per symbol to detect a split or other adjustment.")
    feed_backfill_on_start: Flag = Field(True, description="The feed backfills daily history at start when the store holds fewer than SCAN_HISTORY_BARS sessions.")
    feed_poll_s: float = Field(5.0, gt=0, description="Live feed: seconds between scheduler ticks.")
    feed_minute_delay_s: int = Field(10, ge=0, description="Live feed: a minute bar is fetched this long after its minute ends.")
    feed_daily_delay_s: int = Field(300, ge=0, description="Live feed: the daily bar (then CLOSE) is fetched this long after the close.")
    feed_backoff_max_s: float = Field(60.0, gt=0, description="Live feed: longest wait between reconnection attempts (exponential backoff from 1 s).")
    feed_alert_after_failures: int = Field(3, ge=1, description="Live feed: failed ticks in a row before a feed_failing alert (one per outage; feed_recovered when it ends).")
    broker_rate_limit_per_min: int = Field(190, ge=1, le=200, description="Broker REST requests per rolling minute, shared by every process with the same key (feed, backfill, executor) through Redis; Alpaca allows 200 per key.")
    broker_rate_limit_retries: int = Field(5, ge=0, description="Retries of a request the broker answered 429 (after the pause Retry-After / X-RateLimit-Reset asks for).")
    broker_rate_limit_backoff_max_s: float = Field(60.0, gt=0, description="Longest pause after a 429 (without headers: 1 s doubling up to this).")
