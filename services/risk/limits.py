"""Risk's inputs besides the message: the settings as plain values (``Limits``) and the controls
the shell reads at each step (``Controls``)."""

from __future__ import annotations

from typing import Literal

import msgspec

from shared.regime import Table
from shared.settings.core import EXECUTION_MODES
from shared.settings.risk import RiskSettings

MODES = EXECUTION_MODES  # any other EXECUTION_MODE refuses every entry (MODE_UNKNOWN)


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """The risk settings as plain values (built by the shell from ``RiskSettings``)."""

    max_risk_per_trade: float = 500.0
    max_risk_per_trade_pct: float = 0.5
    max_gross_exposure: float = 100_000.0
    max_gross_exposure_pct: float = 100.0
    max_notional_per_symbol: float = 20_000.0
    max_concurrent_positions: int = 5
    max_new_entries_per_day: int = 3
    max_risk_per_share: float = 3.0
    allowlist: tuple[str, ...] = ()
    phase_c_enabled: bool = False
    phase_c_enable_date: str = ""
    phase_c_allowlist: tuple[str, ...] = ()
    enforce: bool = False
    snapshot_max_age_s: int = 900
    settings_hash: str = ""
    code_version: str = ""  # recorded in each telemetry line's provenance (the shell reads it)
    run_id: str = ""  # ditto (``Settings.resolved_run_id()``)
    modulation: Table | None = None  # REGIME_MODULATION=1: the regime table (shared.regime); None: off

    @classmethod
    def from_settings(cls, rs: RiskSettings, settings_hash: str = "", code_version: str = "", run_id: str = "") -> Limits:
        return cls(
            max_risk_per_trade=rs.max_risk_per_trade, max_risk_per_trade_pct=rs.max_risk_per_trade_pct,
            max_gross_exposure=rs.max_gross_exposure, max_gross_exposure_pct=rs.max_gross_exposure_pct,
            max_notional_per_symbol=rs.max_notional_per_symbol, max_concurrent_positions=rs.max_concurrent_positions,
            max_new_entries_per_day=rs.max_new_entries_per_day, max_risk_per_share=rs.max_risk_per_share,
            allowlist=tuple(rs.allowlist), phase_c_enabled=rs.phase_c_enabled,
            phase_c_enable_date=rs.phase_c_enable_date.strip(), phase_c_allowlist=tuple(rs.phase_c_allowlist),
            enforce=rs.portfolio_decision_enforce, snapshot_max_age_s=rs.snapshot_max_age_s,
            settings_hash=settings_hash, code_version=code_version, run_id=run_id,
        )


class Controls(msgspec.Struct, frozen=True, kw_only=True):
    """Control inputs the shell reads at each step (never cached)."""

    kill_switch: Literal["off", "on", "unreadable"] = "off"  # the trading state's entry view (shared.controls)
    kill_switch_env: bool = False
    trading_state: Literal["ACTIVE", "REDUCING", "HALTED", "UNREADABLE"] = "ACTIVE"
    mode: str = "DRY_RUN"  # EXECUTION_MODE as set: an unknown one is a gate (MODE_UNKNOWN), not an error
    live_trading: bool = False
    live_token: Literal["n/a", "ok", "missing", "file_missing", "mismatch"] = "n/a"  # n/a: not LIVE
    # dead-lettered decision batches seen by the risk group: (source entry ms, date or "", code)
    decision_dlq: tuple[tuple[int, str, str], ...] = ()
