"""Risk settings: every entry gate and the sizing limits (DESIGN §5-6)."""

from __future__ import annotations

from pydantic import Field

from .base import Section


class RiskSettings(Section):
    account_equity: float = Field(100_000.0, description="Starting equity of a simulated account. Risk never sizes from it: it sizes "
                                  "from the latest BrokerSnapshot and fails closed without one.")
    max_risk_per_trade: float = Field(500.0, description="Maximum dollars at risk per trade.")
    max_risk_per_trade_pct: float = Field(0.5, description="Maximum risk per trade as % of equity.")
    max_gross_exposure: float = Field(100_000.0, description="Maximum gross exposure in dollars.")
    max_gross_exposure_pct: float = Field(100.0, description="Maximum gross exposure as % of equity.")
    max_notional_per_symbol: float = Field(20_000.0, description="Maximum notional per symbol.")
    max_concurrent_positions: int = Field(5, description="Maximum open positions.")
    max_new_entries_per_day: int = Field(3, description="Maximum new entries per NY trading day.")
    max_risk_per_share: float = Field(3.00, description="Reject when entry - stop exceeds this (dollars per share).")
    allowlist: str = Field("", description="Comma-separated symbols allowed to trade; empty: all.")
    phase_c_enabled: bool = Field(False, description="Phase C: live trading of exactly one symbol on one date.")
    phase_c_enable_date: str = Field("", description="Phase C: the only NY date (YYYY-MM-DD) entries are permitted.")
    phase_c_allowlist: str = Field("", description="Phase C: the single permitted symbol.")
    portfolio_decision_enforce: bool = Field(False, description="1: follow analytics' ALLOW/BLOCK decisions (fail-closed); 0: shadow only.")
    snapshot_max_age_s: int = Field(900, description="Risk decides session D only with a BrokerSnapshot of D whose ts is within this "
                                    "many seconds of PRE_MARKET(D) (event time); else it holds, then fails closed at OPEN.")
