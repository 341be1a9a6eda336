"""Exits settings: structural stops and the stop window (DESIGN §6)."""

from __future__ import annotations

from pydantic import Field

from .base import Section


class ExitsSettings(Section):
    stop_buffer: float = Field(0.10, description="Dollars below the higher low / swing low.")
    stop_window_start: str = Field("09:35", description="Stop orders are sent from this NY time...")
    stop_window_end: str = Field("15:55", description="...to this NY time (kept the same distance before an early close).")
    hl_lookback_days: int = Field(3, description="Sessions of 5-minute bars searched for the latest higher low.")
    hl_min_bars: int = Field(6, description="Minimum 5-minute bars for an intraday higher low.")
    swing_lookback: int = Field(20, description="Daily bars searched for the last swing low.")
