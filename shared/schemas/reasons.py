"""The closed sets of entry reason codes a ``Rejection`` (and risk's decision record) carries.

One spelling: upper-case snake. ``RiskCode`` lists risk's gate codes in the gate table's order
(``services.risk.gates.GATES`` describes each; a test and an import-time check keep the two equal);
``ExecutorCode`` the codes only the executor adds. Rejection v1 carried free text, and three Phase C
codes were spelt in lower case until Rejection v2: ``LEGACY_CODES`` maps those old spellings, and
``upcast_codes`` is what every upcaster (messages, risk's state, old artifacts) applies.
"""

from __future__ import annotations

from typing import Literal, get_args

RiskCode = Literal[
    "KILL_SWITCH_ON", "KILL_SWITCH_UNREADABLE", "TRADING_HALTED",
    "MODE_UNKNOWN",
    "LIVE_TRADING_DISABLED", "LIVE_TOKEN_MISSING", "LIVE_TOKEN_FILE_MISSING", "LIVE_TOKEN_MISMATCH",
    "PHASE_C_LIVE_DATE_NOT_PERMITTED", "PHASE_C_ALLOWLIST_MUST_BE_SINGLE_SYMBOL", "PHASE_C_SYMBOL_NOT_PERMITTED",
    "SYMBOL_NOT_ALLOWLISTED",
    "SESSION_NOT_STARTED",
    "WATCHLIST_STALE",
    "SNAPSHOT_MISSING", "SNAPSHOT_STALE", "SNAPSHOT_UNRECONCILED",
    "DECISION_FILE_MISSING", "DECISION_JSON_INVALID", "DECISION_SCHEMA_INVALID", "DECISION_DATE_MISMATCH",
    "DECISION_SYMBOL_NOT_FOUND", "DECISION_BLOCK",
    "INVALID_CANDIDATE",
    "STOP_NOT_BELOW_ENTRY", "RISK_PER_SHARE_TOO_HIGH",
    "POSITION_ALREADY_OPEN",
    "MAX_CONCURRENT_POSITIONS",
    "MAX_NEW_ENTRIES_PER_DAY",
    "EQUITY_INVALID", "MAX_RISK_PER_TRADE", "MAX_NOTIONAL_PER_SYMBOL", "MAX_GROSS_EXPOSURE", "INSUFFICIENT_CASH",
    "REGIME_UNKNOWN", "REGIME_ENTRY_CAP", "REGIME_THROTTLED",
]
RISK_CODES: tuple[str, ...] = get_args(RiskCode)

# the executor's own refusals of an entry (it also uses KILL_SWITCH_ON, KILL_SWITCH_UNREADABLE, TRADING_HALTED)
ExecutorCode = Literal["EXECUTOR_UNRECONCILED", "INTENT_EXPIRED", "ENTRY_NOT_CONFIRMED", "INVALID_QTY", "LIVE_GATE_CLOSED"]
EXECUTOR_CODES: tuple[str, ...] = get_args(ExecutorCode)

RejectionCode = Literal[RiskCode, ExecutorCode]
REJECTION_CODES: tuple[str, ...] = RISK_CODES + EXECUTOR_CODES

# old spelling -> current (Rejection v1, risk state and risk_decisions lines written before the rename)
LEGACY_CODES: dict[str, str] = {
    "phase_c_live_date_not_permitted": "PHASE_C_LIVE_DATE_NOT_PERMITTED",
    "phase_c_allowlist_must_be_single_symbol": "PHASE_C_ALLOWLIST_MUST_BE_SINGLE_SYMBOL",
    "phase_c_symbol_not_permitted": "PHASE_C_SYMBOL_NOT_PERMITTED",
}


def upcast_codes(codes: list[str]) -> list[str]:
    """``codes`` in the current spelling (old spellings mapped, order kept)."""
    return [LEGACY_CODES.get(c, c) for c in codes]


def upcast_text(raw: bytes) -> bytes:
    """A JSON document (a risk state blob, a ``risk_decisions`` line) with every old code spelling, as a
    JSON string, replaced by the current one. Only the quoted codes change: they are distinctive enough
    that no other JSON string equals them."""
    for old, new in LEGACY_CODES.items():
        raw = raw.replace(b'"' + old.encode() + b'"', b'"' + new.encode() + b'"')
    return raw


__all__ = [
    "EXECUTOR_CODES", "ExecutorCode", "LEGACY_CODES", "REJECTION_CODES", "RISK_CODES", "RejectionCode", "RiskCode",
    "upcast_codes", "upcast_text",
]
