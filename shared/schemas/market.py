"""Market data messages: bars on ``avwap:bars:1d`` and ``avwap:bars:1m``."""

from __future__ import annotations

from typing import Literal

import msgspec

from .base import Message, register
from .types import Price, Symbol, TradeDate, Volume


class BarRow(msgspec.Struct, frozen=True, kw_only=True):
    """One OHLCV bar. ``ts`` is the bar's END time in UTC epoch ns (daily: the session close)."""

    symbol: Symbol
    ts: int
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Volume


@register
class BarBatch(Message, frozen=True, kw_only=True, tag="bar_batch"):
    """All bars of one timeframe for one timestamp (or one session chunk), sorted by (ts, symbol).

    ``trade_date`` is the NY trading date ``YYYY-MM-DD`` the bars belong to.
    ``final`` marks the last batch of a session for this timeframe (replay and feed set it).
    """

    tf: Literal["1d", "1m"]
    trade_date: TradeDate
    bars: list[BarRow]
    source: str = "feed"
    final: bool = False


SESSION_PHASES = ("PRE_MARKET", "OPEN", "WINDOW_OPEN", "CLOSE")


@register
class SessionEvent(Message, frozen=True, kw_only=True, tag="session_event"):
    """Event-time marker from the live scheduler/feed or the replay driver (on ``avwap:clock``).

    ``phase`` is one of ``SESSION_PHASES``; services use these events (and bar timestamps)
    as their clock. See docs/ARCHITECTURE.md "One session, event by event".
    """

    trade_date: TradeDate
    phase: Literal["PRE_MARKET", "OPEN", "WINDOW_OPEN", "CLOSE"]  # SESSION_PHASES
    ts: int
