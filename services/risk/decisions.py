"""Enforcement of analytics' ALLOW/BLOCK decisions: which decision batch belongs to a candidate
batch, whether it is valid, which decision is a candidate's, and a dead-lettered batch's code."""

from __future__ import annotations

from shared.schemas import (
    DECISION_REASON_ORDER,
    Candidate,
    CandidateBatch,
    PortfolioDecision,
    PortfolioDecisionBatch,
)

from .limits import Controls
from .state import RiskState


def dlq_code(st: RiskState, controls: Controls, session: str) -> str | None:
    """The code of a dead-lettered decision batch that belongs to ``session``, if any."""
    best: str | None = None
    starts = sorted((v.get("PRE_MARKET_entry_ms", 0), d) for d, v in st.clock.items() if v.get("PRE_MARKET_entry_ms"))
    for ms, date, code in controls.decision_dlq:
        owner = date
        if not owner:
            owners = [d for start, d in starts if start <= ms]
            owner = owners[-1] if owners else ""
        if owner == session and (best is None or code < best):
            best = code
    return best


def find_decisions(st: RiskState, batch: CandidateBatch) -> PortfolioDecisionBatch | None:
    linked = [b for b in st.decision_batches.values() if b.candidates_batch_id == batch.batch_id]
    if linked:
        return linked[0]
    same_day = [b for b in st.decision_batches.values() if b.date == batch.scan_date]
    return same_day[0] if same_day else None


def schema_ok(b: PortfolioDecisionBatch) -> bool:
    ids = [d.decision_id for d in b.decisions]
    cands = [d.candidate_id for d in b.decisions if d.candidate_id]
    if len(set(ids)) != len(ids) or len(set(cands)) != len(cands):
        return False
    for d in b.decisions:
        if d.decision not in ("ALLOW", "BLOCK") or not d.decision_id or not d.symbol or not d.reason_codes:
            return False
        if any(code not in DECISION_REASON_ORDER for code in d.reason_codes):
            return False
    return True


def match_decision(b: PortfolioDecisionBatch, c: Candidate) -> PortfolioDecision | None:
    for d in b.decisions:
        if d.candidate_id and d.candidate_id == c.candidate_id:
            return d
    by_symbol = [d for d in b.decisions if d.symbol == c.symbol and (not d.candidate_id or d.candidate_id == c.candidate_id)]
    return by_symbol[0] if len(by_symbol) == 1 else None
