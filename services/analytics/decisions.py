"""Portfolio decisions, Phase 2A (pure): ALLOW/BLOCK per candidate with ordered reason codes.

Inputs: the ``CandidateBatch`` of date D (or None: missing) and the latest portfolio snapshot
before D (or None: missing; the worker passes the starting-capital snapshot before the first
session has closed). Codes are emitted in ``DECISION_REASON_ORDER``; a candidate gets every
limit it breaks, or ``ALLOW_WITHIN_LIMITS`` alone.

Guardrails (settings ``ANALYTICS_GUARD_*``), evaluated per candidate in order of
``(-score, symbol, candidate_id)``; an ALLOW counts against the next candidates:
- LIMIT_MAX_OPEN_POSITIONS: open positions + ALLOWs so far >= max open positions.
- LIMIT_MAX_NEW_ENTRIES_PER_DAY: ALLOWs so far this day >= max new entries per day.
- LIMIT_SYMBOL_CONCENTRATION: the symbol is held or already allowed today, and its market value
  plus one new entry would exceed the concentration limit. A new entry is estimated at the
  concentration limit itself (``max_symbol_pct`` % of equity: the largest entry allowed).
- LIMIT_GROSS_EXPOSURE: gross exposure + (ALLOWs so far + 1) x that estimate > the gross limit.
- LIMIT_CORRELATION (only with ``max_correlation`` set): the candidate's daily-return correlation
  with a held symbol or one already allowed today is >= ``max_correlation``, or cannot be computed
  (fewer than half the window of common returns: fail closed). ``returns`` holds each symbol's
  close-to-close returns over the same sessions before D (NaN where a bar is missing).
- LIMIT_DRAWDOWN_THROTTLE: the snapshot's drawdown (peak to trough) >= the throttle.
- With the regime modulation (``modulation``, a ``shared.regime.Effect``; REGIME_MODULATION=1), on a
  candidate the guardrails above would ALLOW: REGIME_ENTRY_CAP when ALLOWs so far >= the regime's
  cap on new entries, REGIME_THROTTLED when the gross check fails against the gross limit times
  the regime's (and the drawdown curve's) multiplier, plus REGIME_UNKNOWN when the regime was
  unknown (the most conservative row). A decision the modulation does not change has no such code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from shared.ids import stable_id
from shared.regime import Effect, changed_codes
from shared.schemas import (
    DECISION_REASON_ORDER,
    Candidate,
    CandidateBatch,
    PortfolioDecision,
    PortfolioDecisionBatch,
    PortfolioSnapshot,
)

ALLOW, BLOCK = "ALLOW", "BLOCK"


@dataclass(frozen=True)
class Guardrails:
    max_open_positions: int
    max_new_entries_per_day: int
    max_symbol_pct: float
    max_gross_pct: float
    drawdown_throttle_pct: float
    max_correlation: float | None = None  # None: the correlation guardrail is off
    correlation_window: int = 60


def correlation(a: Sequence[float], b: Sequence[float], min_obs: int) -> float | None:
    """Pearson correlation of two aligned return series over their common finite values (None: too few or flat)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if int(ok.sum()) < max(min_obs, 2):
        return None
    x, y = x[ok], y[ok]
    if np.ptp(x) == 0.0 or np.ptp(y) == 0.0:
        return None  # a flat series has no correlation
    x, y = x - x.mean(), y - y.mean()
    return float(x @ y) / math.sqrt(float(x @ x) * float(y @ y))


def _too_correlated(sym: str, others: Iterable[str], returns: Mapping[str, Sequence[float]], limit: float,
                    window: int) -> bool:
    """True when ``sym`` moves with one of ``others`` (correlation >= ``limit``) or that cannot be told."""
    mine = returns.get(sym)
    for o in sorted(set(others) - {sym}):
        theirs = returns.get(o)
        rho = correlation(mine, theirs, window // 2) if mine is not None and theirs is not None else None
        if rho is None or rho >= limit:
            return True
    return False


def _order(codes: set[str]) -> list[str]:
    return [c for c in DECISION_REASON_ORDER if c in codes]


def _candidate_ok(c: Candidate) -> bool:
    return bool(c.symbol) and bool(c.candidate_id) and all(
        math.isfinite(x) and x > 0 for x in (c.price, c.entry_level))


def _snapshot_ok(s: PortfolioSnapshot) -> bool:
    vals = (s.equity, s.cash, s.gross_exposure, s.net_exposure, s.drawdown)
    return all(math.isfinite(v) for v in vals) and s.equity > 0


def decide(date: str, batch: CandidateBatch | None, snapshot: PortfolioSnapshot | None, g: Guardrails,
           *, snapshot_problem: str = "", candidates_problem: str = "",
           provenance: Mapping[str, str] | None = None,
           returns: Mapping[str, Sequence[float]] | None = None,
           modulation: Effect | None = None) -> PortfolioDecisionBatch:
    """Decisions for date D. ``snapshot_problem`` forces a snapshot code (MISSING/INVALID).

    ``batch=None``: no candidate batch of D by its OPEN: a batch without decisions carrying the
    batch-level code ``candidates_problem`` (``CANDIDATES_MISSING`` by default, or
    ``CANDIDATES_PARSE_ERROR`` when D's batch was dead-lettered). A batch given with a
    ``candidates_problem`` (it came after D's decisions were already closed at OPEN) has every
    candidate BLOCKed with that code.
    """
    prov = dict(provenance or {})
    sid = snapshot.snapshot_id if snapshot else ""
    if batch is None:
        code = candidates_problem or "CANDIDATES_MISSING"
        return PortfolioDecisionBatch(batch_id=stable_id("pdb", date, code, sid), date=date, decisions=[],
                                      snapshot_id=sid, reason_codes=[code], provenance=prov)
    global_codes: set[str] = {candidates_problem} if candidates_problem else set()
    if batch.scan_date != date:
        global_codes.add("CANDIDATES_PARSE_ERROR")
    if snapshot_problem:
        global_codes.add(snapshot_problem)
    elif snapshot is None:
        global_codes.add("PORTFOLIO_SNAPSHOT_MISSING")
    elif not _snapshot_ok(snapshot):
        global_codes.add("PORTFOLIO_SNAPSHOT_INVALID")
    elif any(p.qty != 0 and (not math.isfinite(p.mark) or p.mark <= 0) for p in snapshot.positions):
        global_codes.add("OPEN_POSITIONS_MISSING")
    held: dict[str, float] = {}
    equity = gross = drawdown_pct = 0.0
    if snapshot is not None and not global_codes:
        for p in snapshot.positions:
            if p.qty:
                held[p.symbol] = held.get(p.symbol, 0.0) + abs(p.market_value)
        equity, gross, drawdown_pct = snapshot.equity, snapshot.gross_exposure, snapshot.drawdown * 100.0
    est = equity * g.max_symbol_pct / 100.0
    allowed = 0
    allowed_syms: set[str] = set()
    decisions: list[PortfolioDecision] = []
    for c in sorted(batch.candidates, key=lambda c: (-c.score if math.isfinite(c.score) else math.inf, c.symbol, c.candidate_id)):
        codes = set(global_codes)
        if not _candidate_ok(c):
            codes.add("CANDIDATES_PARSE_ERROR")
        if not codes:
            if len(held) + allowed >= g.max_open_positions:
                codes.add("LIMIT_MAX_OPEN_POSITIONS")
            if allowed >= g.max_new_entries_per_day:
                codes.add("LIMIT_MAX_NEW_ENTRIES_PER_DAY")
            existing = held.get(c.symbol, 0.0) + (est if c.symbol in allowed_syms else 0.0)
            if (c.symbol in held or c.symbol in allowed_syms) and existing + est > equity * g.max_symbol_pct / 100.0 + 1e-9:
                codes.add("LIMIT_SYMBOL_CONCENTRATION")
            if gross + (allowed + 1) * est > equity * g.max_gross_pct / 100.0 + 1e-9:
                codes.add("LIMIT_GROSS_EXPOSURE")
            if g.max_correlation is not None and _too_correlated(c.symbol, [*held, *allowed_syms], returns or {},
                                                                 g.max_correlation, g.correlation_window):
                codes.add("LIMIT_CORRELATION")
            if drawdown_pct >= g.drawdown_throttle_pct:
                codes.add("LIMIT_DRAWDOWN_THROTTLE")
            if modulation is not None and not codes:
                capped = allowed >= modulation.max_entries
                throttled = gross + (allowed + 1) * est > equity * g.max_gross_pct * modulation.gross_mult / 100.0 + 1e-9
                codes.update(changed_codes(modulation, throttled=throttled and not capped, capped=capped))
        if not codes:
            codes.add("ALLOW_WITHIN_LIMITS")
            allowed += 1
            allowed_syms.add(c.symbol)
        ordered = _order(codes)
        decision = ALLOW if ordered == ["ALLOW_WITHIN_LIMITS"] else BLOCK
        decisions.append(PortfolioDecision(
            decision_id=stable_id("pd", date, c.candidate_id, ordered), symbol=c.symbol,
            candidate_id=c.candidate_id, decision=decision, reason_codes=ordered))
    return PortfolioDecisionBatch(
        batch_id=stable_id("pdb", date, batch.batch_id, sid, [d.decision_id for d in decisions]), date=date,
        decisions=decisions, snapshot_id=sid, candidates_batch_id=batch.batch_id, provenance=prov)
