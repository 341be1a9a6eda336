"""Risk settings: every entry gate and the sizing limits (DESIGN §5-6)."""

from __future__ import annotations

from pydantic import Field, field_validator

from shared.schemas.types import is_date_text, is_symbol

from .base import CommaList, Flag, Section


class RiskSettings(Section):
    account_equity: float = Field(100_000.0, gt=0, le=1e12, description="Starting equity of a simulated account. Risk never sizes from it: it sizes "
                                  "from the latest BrokerSnapshot and fails closed without one.")
    max_risk_per_trade: float = Field(500.0, gt=0, le=1e9, description="Maximum dollars at risk per trade.")
    max_risk_per_trade_pct: float = Field(0.5, gt=0, le=100, description="Maximum risk per trade as % of equity.")
    max_gross_exposure: float = Field(100_000.0, gt=0, le=1e12, description="Maximum gross exposure in dollars.")
    max_gross_exposure_pct: float = Field(100.0, gt=0, le=1000, description="Maximum gross exposure as % of equity.")
    max_notional_per_symbol: float = Field(20_000.0, gt=0, le=1e12, description="Maximum notional per symbol.")
    max_concurrent_positions: int = Field(5, ge=0, le=10_000, description="Maximum open positions.")
    max_new_entries_per_day: int = Field(3, ge=0, le=10_000, description="Maximum new entries per NY trading day.")
    max_risk_per_share: float = Field(3.00, gt=0, le=1e6, description="Reject when entry - stop exceeds this (dollars per share).")
    allowlist: CommaList = Field([], description="Comma-separated symbols allowed to trade; empty: all.")
    phase_c_enabled: Flag = Field(False, description="Phase C: live trading of exactly one symbol on one date.")
    phase_c_enable_date: str = Field("", description="Phase C: the only NY date (YYYY-MM-DD) entries are permitted.")
    phase_c_allowlist: CommaList = Field([], description="Phase C: the single permitted symbol.")
    portfolio_decision_enforce: Flag = Field(False, description="1: follow analytics' ALLOW/BLOCK decisions (fail-closed); 0: shadow only.")
    snapshot_max_age_s: int = Field(900, ge=1, le=86_400, description="Risk decides session D only with a BrokerSnapshot of D whose ts is within this "
                                    "many seconds of PRE_MARKET(D) (event time); else it holds, then fails closed at OPEN.")

    @field_validator("allowlist", "phase_c_allowlist")
    @classmethod
    def _symbols(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if not is_symbol(s)]
        if bad:
            raise ValueError(f"not symbols (upper-case letters, digits, '.', '-'): {bad}")
        return v

    @field_validator("phase_c_enable_date")
    @classmethod
    def _date(cls, v: str) -> str:
        if v.strip() and not is_date_text(v.strip()):
            raise ValueError("must be a date YYYY-MM-DD (or empty)")
        return v
