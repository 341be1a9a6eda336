"""The gate checks: the codes that refuse every entry now, the codes of one candidate, the gates an
intent passed, and the alert of the entries blocked (the table of gates is ``gates``)."""

from __future__ import annotations

import math

from shared.alerts import make_alert
from shared.schemas import Alert, Candidate, RiskCode

from .gates import FAIL_CLOSED, GATE_NAMES, ordered
from .limits import MODES, Controls, Limits
from .sizing import EPS


def global_codes(controls: Controls, limits: Limits, today: str) -> set[RiskCode]:
    """The codes that refuse every entry right now (kill switch, mode, live gate, Phase C date/allowlist)."""
    codes: set[RiskCode] = set()
    if controls.trading_state == "HALTED":
        codes.add("TRADING_HALTED")
    elif controls.kill_switch == "on" or controls.kill_switch_env:
        codes.add("KILL_SWITCH_ON")
    if controls.kill_switch not in ("on", "off"):
        codes.add("KILL_SWITCH_UNREADABLE")
    if controls.mode not in MODES:
        codes.add("MODE_UNKNOWN")
    if controls.mode == "LIVE":
        if not controls.live_trading:
            codes.add("LIVE_TRADING_DISABLED")
        token_code: RiskCode | None = {"missing": "LIVE_TOKEN_MISSING", "file_missing": "LIVE_TOKEN_FILE_MISSING",
                                       "mismatch": "LIVE_TOKEN_MISMATCH"}.get(controls.live_token)
        if controls.live_token != "ok":
            codes.add(token_code or "LIVE_TOKEN_MISMATCH")
    if limits.phase_c_enabled:
        if limits.phase_c_enable_date != today:
            codes.add("PHASE_C_LIVE_DATE_NOT_PERMITTED")
        if len(limits.phase_c_allowlist) != 1:
            codes.add("PHASE_C_ALLOWLIST_MUST_BE_SINGLE_SYMBOL")
    return codes


def candidate_codes(c: Candidate, limits: Limits) -> set[RiskCode]:
    codes: set[RiskCode] = set()
    sym = c.symbol.upper()
    if limits.phase_c_enabled and sym not in limits.phase_c_allowlist:
        codes.add("PHASE_C_SYMBOL_NOT_PERMITTED")
    if limits.allowlist and sym not in limits.allowlist:
        codes.add("SYMBOL_NOT_ALLOWLISTED")
    finite = all(math.isfinite(x) for x in (c.entry_level, c.stop_loss))
    if c.direction != "LONG" or not finite or c.entry_level <= 0 or c.stop_loss <= 0:
        codes.add("INVALID_CANDIDATE")
    elif round(c.entry_level - c.stop_loss, 4) <= 0:
        codes.add("STOP_NOT_BELOW_ENTRY")
    elif round(c.entry_level - c.stop_loss, 4) > limits.max_risk_per_share + EPS:
        codes.add("RISK_PER_SHARE_TOO_HIGH")
    return codes


def gates_passed(limits: Limits) -> list[str]:
    skip = set() if limits.phase_c_enabled else {"phase_c"}
    if not limits.allowlist:
        skip.add("allowlist")
    if not limits.enforce:
        skip.add("portfolio_decision")
    return [g for g in GATE_NAMES if g not in skip]


def blocked_alert(session: str, ts: int, blocked: list[tuple[str, list[str]]]) -> Alert:
    """One alert summarising the entries blocked by a fail-closed gate, the kill switch or enforcement."""
    all_codes = sorted({c for _, rs in blocked for c in rs})
    critical = any(c in FAIL_CLOSED for c in all_codes)
    fields = {sym: ",".join(rs) for sym, rs in blocked[:25]}
    title = f"risk: {len(blocked)} entr{'y' if len(blocked) == 1 else 'ies'} blocked on {session} ({', '.join(ordered(all_codes))})"
    return make_alert("risk", "entry_blocked", title, severity="critical" if critical else "warning",
                      text="fail closed: no entry was sent for these candidates", fields=fields,
                      trade_date=session, ts=ts, dedup=str([session, sorted(blocked)]))
