"""The entry gates, in their documented, stable order (docs/risk.md is generated from this table).

A Rejection lists every failing code sorted by its position here. Never reorder or rename a
code: analytics, alerts and operators key on them. New gates are appended to their group.
One spelling, upper-case snake: the wire's closed set is ``shared.schemas.reasons.RiskCode`` (a
decode-time check), which must list exactly these codes in this order (checked on import). The three
Phase C codes were lower case before Rejection v2; old messages, state and artifacts are upcast
(``shared.schemas.reasons.LEGACY_CODES``).
"""

from __future__ import annotations

from typing import NamedTuple

from shared.schemas.reasons import RISK_CODES, RiskCode


class Gate(NamedTuple):
    code: RiskCode
    gate: str
    blocks_when: str
    switch: str


GATES: tuple[Gate, ...] = (
    Gate("KILL_SWITCH_ON", "kill_switch", "the trading state is REDUCING (the kill switch; key `avwap:control:trading_state`) or `KILL_SWITCH=1`",
         "`avwap state reduce|resume` (alias `avwap kill-switch on|off`); env `KILL_SWITCH`"),
    Gate("KILL_SWITCH_UNREADABLE", "kill_switch", "the trading-state key cannot be read or parsed (Redis error, wrong type, bad JSON)",
         "fix, or `avwap state reduce|resume` (rewrites the key)"),
    Gate("TRADING_HALTED", "kill_switch", "the trading state is HALTED (no new orders of any kind)", "`avwap state halt|resume`"),
    Gate("MODE_UNKNOWN", "mode", "`EXECUTION_MODE` is not DRY_RUN, PAPER_SIM, ALPACA_PAPER or LIVE", "`EXECUTION_MODE`"),
    Gate("LIVE_TRADING_DISABLED", "live_gate", "mode is LIVE and `LIVE_TRADING` is not 1", "`LIVE_TRADING=1`"),
    Gate("LIVE_TOKEN_MISSING", "live_gate", "mode is LIVE and `LIVE_CONFIRM_TOKEN` is unset", "`LIVE_CONFIRM_TOKEN`"),
    Gate("LIVE_TOKEN_FILE_MISSING", "live_gate", "mode is LIVE and the token file is missing, unreadable or empty",
         "`LIVE_CONFIRM_TOKEN_FILE`"),
    Gate("LIVE_TOKEN_MISMATCH", "live_gate", "mode is LIVE and the token does not match the file", "`LIVE_CONFIRM_TOKEN`"),
    Gate("PHASE_C_LIVE_DATE_NOT_PERMITTED", "phase_c", "Phase C is on and today's NY session is not `PHASE_C_ENABLE_DATE`",
         "`PHASE_C_ENABLED`, `PHASE_C_ENABLE_DATE`"),
    Gate("PHASE_C_ALLOWLIST_MUST_BE_SINGLE_SYMBOL", "phase_c", "Phase C is on and `PHASE_C_ALLOWLIST` is not exactly one symbol",
         "`PHASE_C_ALLOWLIST`"),
    Gate("PHASE_C_SYMBOL_NOT_PERMITTED", "phase_c", "Phase C is on and the symbol is not the Phase C symbol", "`PHASE_C_ALLOWLIST`"),
    Gate("SYMBOL_NOT_ALLOWLISTED", "allowlist", "`ALLOWLIST` is set and does not contain the symbol", "`ALLOWLIST` (empty: all)"),
    Gate("SESSION_NOT_STARTED", "session", "no `SessionEvent(PRE_MARKET)` of the candidate's session was seen by OPEN",
         "the clock (scheduler / replay driver)"),
    Gate("WATCHLIST_STALE", "watchlist_freshness", "the batch's scan_date is not the current NY trading session", "always on"),
    Gate("SNAPSHOT_MISSING", "broker_snapshot", "no BrokerSnapshot of the session arrived by OPEN", "always on"),
    Gate("SNAPSHOT_STALE", "broker_snapshot", "the session's snapshot is further than `SNAPSHOT_MAX_AGE_S` from the decision time",
         "`SNAPSHOT_MAX_AGE_S`"),
    Gate("SNAPSHOT_UNRECONCILED", "broker_snapshot", "the snapshot says the executor has not reconciled with the broker", "always on"),
    Gate("DECISION_FILE_MISSING", "portfolio_decision", "enforcement on and no PortfolioDecisionBatch of the session arrived by OPEN",
         "`PORTFOLIO_DECISION_ENFORCE`"),
    Gate("DECISION_JSON_INVALID", "portfolio_decision", "enforcement on and the session's decision batch was not JSON (dead-lettered)",
         "`PORTFOLIO_DECISION_ENFORCE`"),
    Gate("DECISION_SCHEMA_INVALID", "portfolio_decision", "enforcement on and the decision batch failed validation "
         "(dead-lettered, or a decision not ALLOW/BLOCK, unknown reason code, duplicate)", "`PORTFOLIO_DECISION_ENFORCE`"),
    Gate("DECISION_DATE_MISMATCH", "portfolio_decision", "enforcement on and the decision batch for this candidate batch has another date",
         "`PORTFOLIO_DECISION_ENFORCE`"),
    Gate("DECISION_SYMBOL_NOT_FOUND", "portfolio_decision", "enforcement on and the batch has no decision for the candidate",
         "`PORTFOLIO_DECISION_ENFORCE`"),
    Gate("DECISION_BLOCK", "portfolio_decision", "enforcement on and analytics decided BLOCK (its codes are in `detail`)",
         "`PORTFOLIO_DECISION_ENFORCE`"),
    Gate("INVALID_CANDIDATE", "candidate", "non-LONG direction, or a non-finite or non-positive entry or stop", "always on"),
    Gate("STOP_NOT_BELOW_ENTRY", "risk_per_share", "entry - stop <= 0", "always on"),
    Gate("RISK_PER_SHARE_TOO_HIGH", "risk_per_share", "entry - stop > `MAX_RISK_PER_SHARE` ($3.00)", "`MAX_RISK_PER_SHARE`"),
    Gate("POSITION_ALREADY_OPEN", "one_position_per_symbol", "the symbol is held, has an open entry order, or an entry pending", "always on"),
    Gate("MAX_CONCURRENT_POSITIONS", "max_concurrent_positions", "positions + pending entries >= `MAX_CONCURRENT_POSITIONS`",
         "`MAX_CONCURRENT_POSITIONS`"),
    Gate("MAX_NEW_ENTRIES_PER_DAY", "max_new_entries_per_day", "entry intents already sent this NY day >= `MAX_NEW_ENTRIES_PER_DAY`",
         "`MAX_NEW_ENTRIES_PER_DAY`"),
    Gate("EQUITY_INVALID", "sizing", "the snapshot's equity is not positive", "always on"),
    Gate("MAX_RISK_PER_TRADE", "sizing", "min(`MAX_RISK_PER_TRADE`, `MAX_RISK_PER_TRADE_PCT`% of equity) / (entry - stop) < 1 share",
         "`MAX_RISK_PER_TRADE`, `MAX_RISK_PER_TRADE_PCT`"),
    Gate("MAX_NOTIONAL_PER_SYMBOL", "sizing", "per-symbol notional headroom / entry < 1 share", "`MAX_NOTIONAL_PER_SYMBOL`"),
    Gate("MAX_GROSS_EXPOSURE", "sizing", "min(`MAX_GROSS_EXPOSURE`, `MAX_GROSS_EXPOSURE_PCT`% of equity) - gross / entry < 1 share",
         "`MAX_GROSS_EXPOSURE`, `MAX_GROSS_EXPOSURE_PCT`"),
    Gate("INSUFFICIENT_CASH", "sizing", "(cash - open and pending entry notional) / entry < 1 share", "always on"),
    Gate("REGIME_UNKNOWN", "regime", "modulation on and the session's regime is unknown or never arrived by OPEN: the most "
         "conservative row applied, and it changed this decision (with one of the two codes below)", "`REGIME_MODULATION`"),
    Gate("REGIME_ENTRY_CAP", "regime", "modulation on and entries sent this NY day >= the regime's cap "
         "(`REGIME_MAX_ENTRIES_<LABEL>`)", "`REGIME_MODULATION`"),
    Gate("REGIME_THROTTLED", "regime", "modulation on and the regime / drawdown multipliers cut the size (an intent "
         "with fewer shares lists it in its decision record; zero shares: a rejection)", "`REGIME_MODULATION`"),
)

CODES: tuple[RiskCode, ...] = tuple(g.code for g in GATES)
if CODES != RISK_CODES:  # the table and the wire's Literal are one list
    raise RuntimeError(f"services.risk.gates: GATES codes differ from shared.schemas.reasons.RiskCode: "
                      f"{sorted(set(CODES) ^ set(RISK_CODES)) or 'same codes, another order'}")
ORDER: dict[RiskCode, int] = {c: i for i, c in enumerate(CODES)}
GATE_NAMES: tuple[str, ...] = tuple(dict.fromkeys(g.gate for g in GATES))

# codes that mean "fail closed" (an input or control is missing/broken) rather than a normal limit
FAIL_CLOSED: frozenset[RiskCode] = frozenset({
    "KILL_SWITCH_UNREADABLE", "MODE_UNKNOWN", "LIVE_TRADING_DISABLED", "LIVE_TOKEN_MISSING", "LIVE_TOKEN_FILE_MISSING",
    "LIVE_TOKEN_MISMATCH", "SESSION_NOT_STARTED", "SNAPSHOT_MISSING", "SNAPSHOT_STALE", "SNAPSHOT_UNRECONCILED",
    "DECISION_FILE_MISSING", "DECISION_JSON_INVALID", "DECISION_SCHEMA_INVALID", "DECISION_DATE_MISMATCH",
    "DECISION_SYMBOL_NOT_FOUND", "EQUITY_INVALID",
})
ENFORCEMENT: frozenset[RiskCode] = frozenset(c for c in CODES if c.startswith("DECISION_"))


def ordered(codes: set[RiskCode] | list[RiskCode]) -> list[RiskCode]:
    """The codes in their documented order (unknown codes are a programming error)."""
    return sorted(set(codes), key=ORDER.__getitem__)


def gates_table_md() -> str:
    """The Markdown table of every gate (docs/risk.md embeds it; a test keeps them equal)."""
    lines = ["| # | reason code | gate | blocks when | on/off |", "| --- | --- | --- | --- | --- |"]
    for i, g in enumerate(GATES, start=1):
        lines.append(f"| {i} | `{g.code}` | {g.gate} | {g.blocks_when} | {g.switch} |")
    return "\n".join(lines) + "\n"
