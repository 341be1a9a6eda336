"""Scanner settings: every threshold of the AVWAP scan (DESIGN §6)."""

from __future__ import annotations

from pydantic import Field

from .base import Section


class ScannerSettings(Section):
    scan_market_symbol: str = Field("SPY", description="Symbol of the market gate (entries skipped when it closes below its SMA).")
    scan_market_sma: int = Field(200, description="SMA length of the market gate.")
    scan_min_avg_volume: float = Field(750_000, description="Minimum 20-day average volume (shares).")
    scan_min_avg_dollar_volume: float = Field(10_000_000, description="Minimum 20-day average dollar volume.")
    scan_min_price: float = Field(3.0, description="Minimum last close.")
    scan_min_history: int = Field(80, description="Minimum bars of history.")
    scan_min_atr: float = Field(0.50, description="Minimum ATR14 in dollars.")
    scan_max_atr_pct: float = Field(6.0, description="Maximum ATR% (ATR14 / close * 100).")
    scan_atr_median_len: int = Field(120, description="Bars of the ATR% median filter.")
    scan_gap_pct: float = Field(4.0, description="Gap size (%) that anchors an AVWAP.")
    scan_gap_lookback: int = Field(60, description="Bars searched for the last gap anchor.")
    scan_vol_breakout_mult: float = Field(1.8, description="Volume multiple of the 20-day average for a volume-breakout anchor.")
    scan_vol_breakout_top_pct: float = Field(0.30, description="Close must be in the top fraction of the bar's range.")
    scan_swing_lookback: int = Field(20, description="Bars of the swing-low / swing-high anchors.")
    scan_max_dist_pct: float = Field(6.0, description="Maximum distance of close above the AVWAP (%).")
    scan_min_slope_pct: float = Field(-3.0, description="Minimum 5-bar AVWAP slope (%), waived on a reclaim.")
    scan_stop_mult: float = Field(0.997, description="Stop = min(SMA5, 5-day low) x this.")
    scan_top_n: int = Field(50, description="Maximum candidates per batch (best score first).")
    scan_universe_file: str | None = Field(None, description="Universe file (one symbol per line, optional ',sector'); unset: all symbols in the store.")
    scan_cron: str = Field("30 8 * * 1-5", description="rq cron (America/New_York) of the pre-market scan; non-sessions are skipped.")
    scan_shards: int = Field(1, ge=1, description="rq jobs a universe scan is split into.")
    bars_dir: str = Field("data/bars", description="Directory of the bar store (Parquet per timeframe).")
