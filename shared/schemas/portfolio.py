"""Analytics output consumed by risk: portfolio snapshots and ALLOW/BLOCK decision batches."""

from __future__ import annotations

import msgspec

from .base import Message, register
from .types import Symbol, TradeDate


class PositionMark(msgspec.Struct, frozen=True, kw_only=True):
    symbol: Symbol
    qty: int
    avg_entry_price: float
    mark: float
    market_value: float
    unrealized_pnl: float
    stop_price: float = 0.0


@register
class PortfolioSnapshot(Message, frozen=True, kw_only=True, tag="portfolio_snapshot"):
    snapshot_id: str
    date: TradeDate
    capital: float
    cash: float
    equity: float
    gross_exposure: float
    net_exposure: float
    positions: list[PositionMark]
    realized_pnl: float
    unrealized_pnl: float
    fees: float = 0.0
    peak_equity: float = 0.0
    drawdown: float = 0.0
    max_drawdown: float = 0.0
    rolling_volatility: float = 0.0
    contribution: dict[str, float] = {}
    new_entries_today: int = 0
    provenance: dict[str, str] = {}


DECISION_REASON_ORDER = (
    "CANDIDATES_MISSING",
    "CANDIDATES_PARSE_ERROR",
    "PORTFOLIO_SNAPSHOT_MISSING",
    "PORTFOLIO_SNAPSHOT_INVALID",
    "OPEN_POSITIONS_MISSING",
    "LIMIT_MAX_OPEN_POSITIONS",
    "LIMIT_MAX_NEW_ENTRIES_PER_DAY",
    "LIMIT_SYMBOL_CONCENTRATION",
    "LIMIT_GROSS_EXPOSURE",
    "LIMIT_CORRELATION",
    "LIMIT_DRAWDOWN_THROTTLE",
    "REGIME_UNKNOWN",
    "REGIME_ENTRY_CAP",
    "REGIME_THROTTLED",
    "ALLOW_WITHIN_LIMITS",
)


class PortfolioDecision(msgspec.Struct, frozen=True, kw_only=True):
    decision_id: str
    symbol: Symbol
    candidate_id: str
    decision: str  # ALLOW | BLOCK
    reason_codes: list[str]


@register
class PortfolioDecisionBatch(Message, frozen=True, kw_only=True, tag="portfolio_decision_batch"):
    """ALLOW/BLOCK per candidate of session ``date``.

    ``reason_codes`` are batch-level codes: ``CANDIDATES_MISSING`` (no candidate batch of the
    date by its OPEN) or ``CANDIDATES_PARSE_ERROR`` (the date's batch was dead-lettered); such a
    batch has no decisions, so any candidate of the date is unmatched (a BLOCK for risk's
    enforcement). ``provenance["decision_artifact"]`` is the artifact path relative to ARTIFACTS_DIR.
    """

    batch_id: str
    date: TradeDate
    decisions: list[PortfolioDecision]
    snapshot_id: str = ""
    candidates_batch_id: str = ""
    reason_codes: list[str] = []
    provenance: dict[str, str] = {}
