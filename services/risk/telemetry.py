"""Risk's telemetry lines (``risk_decisions/<D>.jsonl``, docs/risk.md "Artifacts"): one record per
decision and per analytics decision received, with the provenance that links them."""

from __future__ import annotations

from typing import Literal

import msgspec

from shared.artifacts import provenance
from shared.schemas import PortfolioDecision, PortfolioDecisionBatch, RiskCode

from .limits import Limits

Enforcement = Literal["enforced", "shadow"]  # PORTFOLIO_DECISION_ENFORCE on / off


class DecisionRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One risk decision, as written to ``risk_decisions/<D>.jsonl``."""

    kind: str = "decision"
    ord: int
    session: str
    trade_date: str
    candidate_id: str
    symbol: str
    batch_id: str
    outcome: Literal["intent", "rejection"]
    message_id: str
    qty: int = 0
    notional: float = 0.0
    entry_level: float = 0.0
    stop_price: float = 0.0
    reasons: list[RiskCode] = []  # one spelling (a closed set: an old state's lower-case codes are upcast on load)
    gates_passed: list[str] = []
    decision_ts: int
    ny_day: str
    enforcement: Enforcement
    portfolio_decision: str = ""
    portfolio_decision_id: str = ""
    portfolio_reason_codes: list[str] = []
    provenance: dict[str, str] = {}


class ShadowRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An analytics ALLOW/BLOCK decision as risk received it (logged whether enforced or not)."""

    kind: str = "portfolio_decision"
    date: str
    decision_id: str
    candidate_id: str
    symbol: str
    decision: str  # as received (risk's enforcement judges it: DECISION_SCHEMA_INVALID)
    reason_codes: list[str]
    batch_id: str
    enforcement: Enforcement
    provenance: dict[str, str] = {}

UNKNOWN = "unknown"  # a provenance value risk does not have (no decision batch, or it did not say)


def line_provenance(limits: Limits, inputs: dict[str, str], b: PortfolioDecisionBatch | None,
                    d: PortfolioDecision | None) -> dict[str, str]:
    """The provenance block of one telemetry line (docs/risk.md "Artifacts").

    The project's provenance shape (``shared.artifacts.provenance``: code version and settings hash
    at decision time, ``input:<name>`` ids) plus ``run_id`` and what links the line to analytics'
    decision: the decision artifact the batch names and the decision id (``unknown`` when there is
    no batch or it does not say).
    """
    prov_in = b.provenance if b is not None else {}
    artifact = prov_in.get("decision_artifact") or prov_in.get("artifact") or UNKNOWN
    extra = {"decision_artifact": artifact, "decision_id": d.decision_id if d is not None else UNKNOWN,
             "run_id": limits.run_id or UNKNOWN}
    if b is not None:
        extra["decision_snapshot_id"] = b.snapshot_id or UNKNOWN
        if prov_in.get("run_id"):
            extra["decision_run_id"] = prov_in["run_id"]
    return provenance(limits.settings_hash, inputs, code=limits.code_version or UNKNOWN, **extra)
