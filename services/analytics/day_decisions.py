"""D's portfolio decisions (shell): load the snapshot before D, D's Regime and the returns the
correlation guardrail needs, call ``core.day_decisions``, keep the result once per key in Redis (staged on
the day's unit of work; a redelivery or another replica publishes the same decisions) and write the artifact."""

from __future__ import annotations

from shared.artifacts import under, write_json_artifact
from shared.bus import Delivery, entry_id
from shared.schemas import CandidateBatch, PortfolioDecisionBatch, Regime, SessionEvent
from shared.streams import ALERTS, DLQ, PORTFOLIO

from .core import (
    Emit,
    candidates_missing_alert,
    correlation_symbols,
    day_decisions,
    dead_lettered,
    decision_artifact,
    decode_day,
    guardrails,
    late_code,
    open_problem,
    regime_in,
    snapshot_before,
)
from .state import State
from .store import DayWork

DLQ_SCAN = 1000  # newest DLQ entries searched for a dead-lettered candidate batch


def _decisions(st: State, work: DayWork, date: str, batch: CandidateBatch | None, key: str,
               candidates_problem: str, candidates_input: str) -> PortfolioDecisionBatch:
    """Decide once per ``key`` (kept in Redis, so a redelivery returns the same decisions) and write the artifact."""
    s = st.ctx.settings
    snaps = st.store.snapshots()
    snap, problem = snapshot_before(snaps, "" if snaps else st.store.first_session(), date, s.analytics.starting_capital)
    regime = regime_of(st, date) if s.regime.regime_modulation else None
    symbols = correlation_symbols(guardrails(s), batch, snap)
    returns = st.bars.returns(symbols, date, s.analytics.guard_correlation_window) if symbols is not None else None
    out = day_decisions(s, st.code, date, batch, snap, problem, candidates_problem=candidates_problem,
                        candidates_input=candidates_input, regime=regime, returns=returns)
    out = work.keep_decision(key, out)
    write_json_artifact(under(s.core.artifacts_dir, decision_artifact(date)), out, fsync=st.fsync)
    return out


def regime_of(st: State, date: str) -> Regime | None:
    """The Regime of session ``date`` among the day's records (None: not arrived)."""
    return regime_in(st.store.day(date))


def undecided(st: State, date: str, work: DayWork) -> list[Emit]:
    """Decisions of the candidate batches of ``date`` still waiting for the session's Regime (modulation on)."""
    batches = sorted(decode_day(st.store.day(date), "candidate_batch"), key=lambda b: b.batch_id)
    return [decisions_for(st, b, work) for b in batches if not work.decided(b.batch_id)]


def decisions_for(st: State, batch: CandidateBatch, work: DayWork) -> Emit:
    """Decisions of a candidate batch. If D's decisions were already closed at its OPEN (no batch
    by then), the late batch's candidates are all BLOCKed with the code published at the open."""
    late = late_code(work.decision(f"open:{batch.scan_date}"))
    return PORTFOLIO, _decisions(st, work, batch.scan_date, batch, batch.batch_id, late, batch.batch_id)


def on_open(st: State, ev: SessionEvent, d: Delivery, work: DayWork) -> list[Emit]:
    """At OPEN(D) with no candidate batch of D: D's decisions are a batch-level BLOCK
    (CANDIDATES_PARSE_ERROR if D's batch was dead-lettered, else CANDIDATES_MISSING), once."""
    date = ev.trade_date
    ms, after = work.note_open(date, entry_id(d.entry_id)[0])
    if any(k.startswith(b"candidate_batch:") for k in st.store.day_keys(date)):
        return []
    entries = (f for _, f in st.ctx.r.xrevrange(DLQ, count=DLQ_SCAN))
    code, what = open_problem(dead_lettered(entries, date, after, ms))
    out = _decisions(st, work, date, None, f"open:{date}", code, what)
    return [(PORTFOLIO, out), (ALERTS, candidates_missing_alert(date, out, code, ev.ts))]
