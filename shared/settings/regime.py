"""Regime settings: the classifier's thresholds and the risk modulation table (docs/regime.md).

Every threshold of the classifier is a setting; ``REGIME_MODULATION`` (default off) turns the
modulation of risk on. The classifier runs (and publishes its label) either way.
"""

from __future__ import annotations

from pydantic import Field

from .base import Section


class RegimeSettings(Section):
    """Market regime: features, thresholds, rule table inputs, per-regime multipliers, drawdown curve."""

    regime_modulation: bool = Field(False, description="1: the regime modulates risk (size, gross exposure, new entries "
                                    "per day) in risk's sizing and analytics' decisions; 0: measurement only.")
    regime_history_bars: int = Field(260, ge=201, description="Sessions of daily history the classifier reads (must cover "
                                     "the slow trend SMA and the drawdown window).")
    regime_vol_window: int = Field(20, ge=2, description="Daily returns of the realized volatility (annualized, x sqrt(252)).")
    regime_vol_low: float = Field(0.20, gt=0, description="Realized volatility at or above which the market is RISK_OFF.")
    regime_vol_high: float = Field(0.30, gt=0, description="Realized volatility at or above which the market is STRESSED.")
    regime_dd_window: int = Field(63, ge=2, description="Sessions of the market drawdown (close vs the highest close of the window).")
    regime_dd_mild: float = Field(-0.10, lt=0, description="Drawdown at or below which the market is RISK_OFF (fraction).")
    regime_dd_deep: float = Field(-0.20, lt=0, description="Drawdown at or below which the market is STRESSED (fraction).")
    regime_trend_fast: int = Field(50, ge=2, description="Fast SMA of the trend feature (SMA fast / SMA slow - 1).")
    regime_trend_slow: int = Field(200, ge=3, description="Slow SMA of the trend feature.")
    regime_trend_band: float = Field(0.02, gt=0, description="Trend at or above +band (with breadth) is RISK_ON; at or below "
                                     "-band (with weak breadth) is RISK_OFF.")
    regime_breadth_sma: int = Field(50, ge=2, description="SMA of the breadth feature (fraction of the universe closing at or above it).")
    regime_breadth_low: float = Field(0.45, ge=0, le=1, description="Breadth below which a down trend is RISK_OFF.")
    regime_breadth_high: float = Field(0.55, ge=0, le=1, description="Breadth at or above which an up trend is RISK_ON.")
    regime_breadth_min_symbols: int = Field(20, ge=1, description="Fewest universe symbols with a full SMA window on D; "
                                            "fewer: REGIME_UNKNOWN (BREADTH_SHORT).")
    regime_risk_mult_risk_on: float = Field(1.0, ge=0, le=1, description="RISK_ON: multiplier on risk per trade.")
    regime_risk_mult_neutral: float = Field(0.75, ge=0, le=1, description="NEUTRAL: multiplier on risk per trade.")
    regime_risk_mult_risk_off: float = Field(0.5, ge=0, le=1, description="RISK_OFF: multiplier on risk per trade.")
    regime_risk_mult_stressed: float = Field(0.25, ge=0, le=1, description="STRESSED: multiplier on risk per trade.")
    regime_gross_mult_risk_on: float = Field(1.0, ge=0, le=1, description="RISK_ON: multiplier on the gross exposure cap.")
    regime_gross_mult_neutral: float = Field(0.8, ge=0, le=1, description="NEUTRAL: multiplier on the gross exposure cap.")
    regime_gross_mult_risk_off: float = Field(0.5, ge=0, le=1, description="RISK_OFF: multiplier on the gross exposure cap.")
    regime_gross_mult_stressed: float = Field(0.25, ge=0, le=1, description="STRESSED: multiplier on the gross exposure cap.")
    regime_max_entries_risk_on: int = Field(3, ge=0, description="RISK_ON: cap on new entries per day (the lower of it and the base cap).")
    regime_max_entries_neutral: int = Field(3, ge=0, description="NEUTRAL: cap on new entries per day.")
    regime_max_entries_risk_off: int = Field(2, ge=0, description="RISK_OFF: cap on new entries per day.")
    regime_max_entries_stressed: int = Field(1, ge=0, description="STRESSED: cap on new entries per day.")
    regime_dd_throttle_start_pct: float = Field(3.0, ge=0, description="Portfolio drawdown (% from its high-water mark) at "
                                                "which the drawdown multiplier starts to fall below 1.")
    regime_dd_throttle_full_pct: float = Field(10.0, gt=0, description="Portfolio drawdown (%) at and beyond which the "
                                               "drawdown multiplier is the floor (linear in between).")
    regime_dd_throttle_floor: float = Field(0.25, ge=0, le=1, description="Smallest drawdown multiplier.")
