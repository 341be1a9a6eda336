"""Scanner settings: every threshold of the AVWAP scan (DESIGN §6), its schedule and sharding.

``strategy_hash`` fingerprints the fields that change what a scan computes (not paths, the
schedule or the shard count: a sharded scan is byte-identical to an unsharded one), so the
scanner's artifacts carry the same settings hash from the CLI, the worker and a replay.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from shared.schemas.types import is_symbol

from .base import CommaList, Section, fingerprint

MarketGateMode = Literal["symbol", "universe_proxy", "off"]

# Fields that do not change a scan's output (excluded from ``strategy_hash``).
NON_STRATEGY_FIELDS = frozenset({"scan_universe_file", "scan_cron", "scan_shards", "scan_rq_queue",
                                 "scan_shard_timeout_s", "universe_exchanges", "universe_min_price",
                                 "universe_min_avg_dollar_volume"})


class ScannerSettings(Section):
    """The daily AVWAP scan: filters, anchors, scoring, market gate, schedule, shards."""

    scan_market_gate: MarketGateMode = Field(
        "symbol", description="Market gate: `symbol` (SCAN_MARKET_SYMBOL close vs its SMA; missing or short history "
        "closes the gate), `universe_proxy` (equal-weight index of the universe vs its SMA) or `off`.")
    scan_market_symbol: str = Field("SPY", description="Symbol of the market gate (entries skipped when it closes below its SMA).")
    scan_market_sma: int = Field(200, ge=2, description="SMA length (sessions) of the market gate.")
    scan_history_bars: int = Field(
        260, ge=80, description="Sessions of daily history a scan reads (the window ending the session before the scan "
        "date); must cover SMA200, the weekly SMA40, the ATR% median and the year's first bar.")
    scan_min_avg_volume: float = Field(750_000, ge=0, le=1e13, description="Minimum 20-day average volume (shares).")
    scan_min_avg_dollar_volume: float = Field(10_000_000, ge=0, le=1e15, description="Minimum 20-day average dollar volume (close x volume).")
    scan_avg_len: int = Field(20, ge=1, description="Bars of the liquidity averages (volume, dollar volume).")
    scan_min_price: float = Field(3.0, ge=0, le=1e7, description="Minimum last close.")
    scan_min_history: int = Field(80, ge=1, description="Minimum bars of history.")
    scan_weekly_fast: int = Field(10, ge=1, description="Weekly trend filter: fast SMA of weekly closes (weeks).")
    scan_weekly_slow: int = Field(40, ge=1, description="Weekly trend filter: slow SMA of weekly closes (weeks).")
    scan_min_atr: float = Field(0.50, ge=0, le=1e6, description="Minimum ATR14 in dollars.")
    scan_max_atr_pct: float = Field(6.0, gt=0, le=1000, description="Maximum ATR% (ATR14 / close * 100).")
    scan_atr_len: int = Field(14, ge=1, description="ATR and ADX length (Wilder smoothing, alpha = 1/length).")
    scan_atr_median_len: int = Field(120, ge=1, description="Bars of the ATR% median filter (ATR% must be <= its median).")
    scan_gap_pct: float = Field(4.0, gt=0, le=1000, description="Gap size (% of the prior close, either direction) that anchors an AVWAP.")
    scan_gap_lookback: int = Field(60, ge=1, description="Bars searched for the last gap anchor.")
    scan_vol_breakout_mult: float = Field(1.8, gt=0, le=1000, description="Volume multiple of the prior 20-day average for a volume-breakout anchor.")
    scan_vol_breakout_top_pct: float = Field(0.30, ge=0, le=1, description="Close must be in the top fraction of the bar's range.")
    scan_vol_breakout_high_len: int = Field(5, ge=1, description="Breakout close must exceed the prior N-day high.")
    scan_vol_breakout_lookback: int = Field(60, ge=1, description="Bars searched for the last volume-breakout anchor.")
    scan_swing_lookback: int = Field(20, ge=1, description="Bars of the swing-low / swing-high anchors.")
    scan_swing_confirm_bars: int = Field(
        1, ge=0, description="Bars that must follow a swing low/high before it anchors (the last bar's own "
        "extreme is not yet a swing; 0: the literal lowest low / highest high of the lookback).")
    scan_max_dist_pct: float = Field(6.0, ge=0, le=1000, description="Maximum distance of close above the AVWAP (%).")
    scan_slope_bars: int = Field(5, ge=1, description="Bars of the AVWAP slope.")
    scan_min_slope_pct: float = Field(-3.0, ge=-1000, le=1000, description="Minimum AVWAP slope (%), waived on a reclaim.")
    scan_trend_slope_bars: int = Field(10, ge=1, description="Bars of the SMA50 % slope in TrendScore.")
    scan_score_trend_weight: float = Field(1.5, description="Score weight of TrendScore.")
    scan_near_min_pct: float = Field(0.1, description="Near-AVWAP bonus band: lower distance (%).")
    scan_near_max_pct: float = Field(1.5, description="Near-AVWAP bonus band: upper distance (%).")
    scan_near_bonus: float = Field(50.0, description="Score bonus when the distance is inside the near-AVWAP band.")
    scan_reclaim_bonus: float = Field(40.0, description="Score bonus on a reclaim (previous close <= AVWAP < close, the AVWAP anchored before the last bar).")
    scan_tier_strong: float = Field(20.0, description="TrendScore at or above which the trend tier is STRONG.")
    scan_tier_moderate: float = Field(5.0, description="TrendScore at or above which the trend tier is MODERATE (else WEAK).")
    scan_stop_mult: float = Field(0.997, gt=0, lt=1, description="Stop = min(SMA5, 5-day low) x this.")
    scan_top_n: int = Field(50, ge=1, description="Maximum candidates per batch (best score first).")
    universe_exchanges: CommaList = Field(["NYSE", "NASDAQ", "ARCA", "AMEX", "BATS"], description="`avwap universe build`: exchanges (Alpaca's names) whose active, tradable US equities are considered.")
    universe_min_price: float | None = Field(None, description="`avwap universe build`: minimum last close; unset: SCAN_MIN_PRICE.")
    universe_min_avg_dollar_volume: float | None = Field(None, description="`avwap universe build`: minimum average dollar volume over SCAN_AVG_LEN sessions; unset: SCAN_MIN_AVG_DOLLAR_VOLUME.")
    scan_universe_file: str | None = Field(None, description="Universe file (one `SYMBOL[,SECTOR]` per line, `#` comments); unset: every symbol with a bar in the history window.")
    scan_cron: str = Field("30 8 * * 1-5", description="rq cron expression, in America/New_York time, of the pre-market scan (`avwap scan cron`); non-sessions are skipped.")
    scan_shards: int = Field(1, ge=1, description="rq jobs a universe scan is split into (queue SCAN_RQ_QUEUE); 1 = in process.")
    scan_rq_queue: str = Field("avwap-scan", description="rq queue of the scan shard jobs and the cron job.")
    scan_shard_timeout_s: float = Field(20.0, le=3600, gt=0, description="Seconds to wait for shard jobs; a shard not done by then is computed in process (same bytes). Keep it under BUS_CLAIM_IDLE_MS.")

    @field_validator("scan_market_symbol")
    @classmethod
    def _symbol(cls, v: str) -> str:
        if not is_symbol(v):
            raise ValueError("not a symbol (upper-case letters, digits, '.', '-')")
        return v

    def strategy_hash(self) -> str:
        """sha256 (16 hex) of the fields that change a scan's result."""
        return fingerprint({k: v for k, v in self.model_dump().items() if k not in NON_STRATEGY_FIELDS})
