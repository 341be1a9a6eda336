"""Analytics settings: portfolio guardrails, reports, notifier."""

from __future__ import annotations

from pydantic import Field

from .base import Section


class AnalyticsSettings(Section):
    starting_capital: float = Field(100_000.0, description="Capital of the portfolio snapshot before any broker snapshot.")
    guard_max_open_positions: int = Field(5, description="Decision guardrail: maximum open positions.")
    guard_max_new_entries_per_day: int = Field(3, description="Decision guardrail: maximum new entries per day.")
    guard_max_symbol_concentration_pct: float = Field(20.0, description="Decision guardrail: max % of equity in one symbol.")
    guard_max_gross_exposure_pct: float = Field(100.0, description="Decision guardrail: max gross exposure % of equity.")
    guard_drawdown_throttle_pct: float = Field(10.0, description="Decision guardrail: block entries when drawdown exceeds this %.")
    rolling_vol_window: int = Field(20, description="Days of the rolling volatility of daily returns.")
    slack_rate_per_min: int = Field(20, description="Maximum Slack messages per minute.")
    recon_price_tolerance: float = Field(0.01, description="Reconciliation: largest average-price difference (dollars) that is not a mismatch.")
    report_on_close: bool = Field(True, description="Write the daily report (HTML, Markdown, PNG charts) after each CLOSE snapshot.")
    slack_max_attempts: int = Field(5, description="Notifier: attempts per message on 429/5xx before leaving it in the outbox for the next round.")
    slack_backoff_s: float = Field(1.0, description="Notifier: first backoff after a Slack 5xx or connection error (doubles, max 60 s).")
