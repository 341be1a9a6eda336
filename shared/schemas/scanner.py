"""Scanner output: candidates on ``avwap:candidates``."""

from __future__ import annotations

from typing import Literal

import msgspec

from .base import Message, register
from .types import OptTradeDate, Price, Symbol, TradeDate


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    candidate_id: str
    scan_date: TradeDate
    symbol: Symbol
    direction: str = "LONG"
    trend_tier: str = ""
    price: Price
    anchor: str  # anchor kind, e.g. YTD, GAP, VOL_BREAKOUT, MTD, SWING_LOW, SWING_HIGH
    anchor_date: TradeDate
    avwap: Price
    entry_level: Price
    entry_dist_pct: float
    stop_loss: Price
    target_r1: float
    target_r2: float
    trend_score: float
    avwap_slope: float
    score: float
    sector: str = ""
    setups: list[str] = []  # RECLAIM, PULLBACK, BAND1, CONFLUENCE (docs/scanner.md)
    band_sigma: float = 0.0  # volume-weighted sigma of the AVWAP from the anchor
    bands: dict[str, float] = {}  # AVWAP -/+ k sigma: L1 L2 L3 U1 U2 U3
    anchor_priority: int = 0
    reclaim: bool = False
    atr: float = 0.0
    atr_pct: float = 0.0
    adx: float = 0.0
    rank: int = 0  # 1 = best score of the batch


@register
class CandidateBatch(Message, frozen=True, kw_only=True, tag="candidate_batch"):
    """One scan's result. With ``market_gate_ok`` false the batch carries no candidates."""

    batch_id: str
    scan_date: TradeDate
    market_gate_ok: bool
    market_gate_reason: str = ""
    candidates: list[Candidate]
    universe_size: int = 0
    provenance: dict[str, str] = {}
    counts: dict[str, int] = {}  # symbols per outcome: CANDIDATE or the first failing filter's code
    market_gate_mode: Literal["symbol", "universe_proxy", "off", ""] = ""  # "": a batch written before the field
    bars_through: OptTradeDate = ""  # the last session of daily bars the scan read (the session before scan_date)
