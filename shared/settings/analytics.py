"""Analytics settings: portfolio guardrails, reports, notifier."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import CommaList, Flag, Section


class AnalyticsSettings(Section):
    starting_capital: float = Field(100_000.0, gt=0, le=1e12, description="Capital of the portfolio snapshot before any broker snapshot.")
    guard_max_open_positions: int = Field(5, ge=0, le=10_000, description="Decision guardrail: maximum open positions.")
    guard_max_new_entries_per_day: int = Field(3, ge=0, le=10_000, description="Decision guardrail: maximum new entries per day.")
    guard_max_symbol_concentration_pct: float = Field(20.0, gt=0, le=100, description="Decision guardrail: max % of equity in one symbol.")
    guard_max_gross_exposure_pct: float = Field(100.0, gt=0, le=1000, description="Decision guardrail: max gross exposure % of equity.")
    guard_drawdown_throttle_pct: float = Field(10.0, gt=0, le=100, description="Decision guardrail: block entries when drawdown exceeds this %.")
    guard_max_correlation: float | None = Field(
        None, ge=-1.0, le=1.0,
        description="Decision guardrail: block a candidate whose daily-return correlation with a held or already "
        "allowed symbol is at or above this (unset: off). Fails closed: too little common history also blocks.")
    guard_correlation_window: int = Field(60, ge=10, description="Daily returns (sessions before D) the correlation guardrail uses.")
    rolling_vol_window: int = Field(20, ge=2, le=10_000, description="Days of the rolling volatility of daily returns.")
    slack_rate_per_min: int = Field(20, ge=1, le=10_000, description="Maximum Slack messages per minute.")
    recon_price_tolerance: float = Field(0.01, ge=0, le=1e6, description="Reconciliation: largest average-price difference (dollars) that is not a mismatch.")
    report_on_close: Flag = Field(True, description="Write the daily report (HTML, Markdown, PNG charts) after each CLOSE snapshot.")
    slack_max_attempts: int = Field(5, ge=1, le=100, description="Notifier: attempts per message on 429/5xx before leaving it in the outbox for the next round.")
    slack_backoff_s: float = Field(1.0, ge=0, le=3600, description="Notifier: first backoff after a Slack 5xx or connection error (doubles, max 60 s).")
    analytics_lock_timeout_s: int = Field(120, ge=5, le=86_400, description="Analytics: seconds the per-session lock (snapshot, reconciliation, report) outlives a holder that died; the longest a successor waits. Must exceed the longest CLOSE work (the report's charts).")
    analytics_keep_sessions: int = Field(20, ge=1, le=100_000, description="Analytics: closed sessions whose records (`day:<D>`, `prov:<D>`) stay in Redis. An older closed session, its artifacts written, has them dropped and is sealed: a late message of a sealed session goes to the DLQ (`ANALYTICS_SESSION_SEALED`) and its artifacts stay as written.")
    heartbeat_watch_services: CommaList = Field(["scanner", "regime", "risk", "executor", "exits", "analytics"], description="Notifier watchdog: comma-separated services (consumer groups) whose heartbeat keys must exist; empty: no watchdog.")
    heartbeat_grace_s: float = Field(90.0, gt=0, le=86_400, description="Notifier watchdog: seconds a service may have no live heartbeat before a `heartbeat_missing` alert (give restarts time).")
    heartbeat_check_s: float = Field(15.0, gt=0, le=3600, description="Notifier watchdog: seconds between heartbeat checks.")
    heartbeat_summary: Flag = Field(True, description="Notifier: post a `heartbeat` system-alive summary (every watched service and its consumers) at each session's PRE_MARKET.")
    slack_runbook_base_url: str = Field("", description="Notifier: URL the docs/ paths of runbook links are appended to (e.g. https://github.com/ORG/avwap/blob/main/); empty: links are shown as paths.")
    breaker_daily_loss_pct: float | None = Field(None, gt=0, description="Circuit breaker `daily_loss`: trip when mark-to-market equity is this % below the session's opening equity (unset: off, unless `BREAKER_DAILY_LOSS_USD`).")
    breaker_daily_loss_usd: float | None = Field(None, gt=0, description="Circuit breaker `daily_loss`: trip when equity is this many dollars below the session's opening equity (unset: off).")
    breaker_max_drawdown_pct: float | None = Field(None, gt=0, description="Circuit breaker `drawdown`: trip when equity is this % below its high-water mark (unset: off).")
    breaker_max_consecutive_stops: int | None = Field(None, ge=1, description="Circuit breaker `consecutive_stops`: trip after this many positions in a row closed by their stop at a loss (unset: off).")
    breaker_trip_state: Literal["REDUCING", "HALTED"] = Field("REDUCING", description="Trading state a tripped breaker sets (a HALTED state is never lowered).")
    slack_allowed_users: CommaList = Field([], description="Slack commands: comma-separated Slack user ids allowed to act (`/avwap status` too); empty: nobody.")
    slack_confirm_ttl_s: float = Field(120.0, gt=0, description="Slack commands: seconds a confirmation button stays valid (one use).")
