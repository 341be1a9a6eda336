"""Scanner output: candidates on ``avwap:candidates``."""

from __future__ import annotations

import msgspec

from .base import Message, register


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    candidate_id: str
    scan_date: str
    symbol: str
    direction: str = "LONG"
    trend_tier: str = ""
    price: float
    anchor: str  # anchor kind, e.g. YTD, GAP, VOL_BREAKOUT, MTD, SWING_LOW, SWING_HIGH
    anchor_date: str
    avwap: float
    entry_level: float
    entry_dist_pct: float
    stop_loss: float
    target_r1: float
    target_r2: float
    trend_score: float
    avwap_slope: float
    score: float
    sector: str = ""
    setups: list[str] = []
    band_sigma: float = 0.0


@register
class CandidateBatch(Message, frozen=True, kw_only=True, tag="candidate_batch"):
    """One scan's result. With ``market_gate_ok`` false the batch carries no candidates."""

    batch_id: str
    scan_date: str
    market_gate_ok: bool
    market_gate_reason: str = ""
    candidates: list[Candidate]
    universe_size: int = 0
    provenance: dict[str, str] = {}
