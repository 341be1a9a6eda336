"""Exits settings: structural stops and the stop window (DESIGN §6, docs/exits.md)."""

from __future__ import annotations

from pydantic import Field

from .base import Section


class ExitsSettings(Section):
    """Structural stops that only ratchet up, the stop window, and how the exits service waits."""

    stop_buffer: float = Field(0.10, ge=0, description="Dollars below the higher low / swing low (the stop is then floored to the cent).")
    stop_window_start: str = Field("09:35", description="Stop orders are sent from this NY time (the feed publishes WINDOW_OPEN then)...")
    stop_window_end: str = Field("15:55", description="...to this NY time (kept the same distance before an early close).")
    hl_lookback_days: int = Field(3, ge=0, description="Sessions of 5-minute bars searched for the latest higher low (0: daily swing lows only).")
    hl_min_bars: int = Field(6, ge=3, description="Minimum complete 5-minute bars for an intraday higher low.")
    swing_lookback: int = Field(20, ge=3, description="Daily bars searched for the last swing low.")
    intent_timeout_s: int = Field(300, ge=1, description="Event-time seconds a stop intent may stay unanswered by the executor before "
                                  "it is given up and re-sent (and before a refused identical intent is tried again).")
