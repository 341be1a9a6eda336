"""Risk decisions (walking skeleton): a candidate becomes a sized EntryIntent or a Rejection.

Pure: no Redis, no clock, no env. The full gate set lands with the risk issue.
"""

from __future__ import annotations

import math

from shared.ids import stable_id
from shared.schemas import Candidate, EntryIntent, Rejection


def decide(c: Candidate, *, equity: float, max_risk_per_trade: float, max_risk_per_share: float, ts: int) -> EntryIntent | Rejection:
    risk_per_share = round(c.entry_level - c.stop_loss, 4)
    reasons: list[str] = []
    if risk_per_share <= 0:
        reasons.append("STOP_NOT_BELOW_ENTRY")
    elif risk_per_share > max_risk_per_share:
        reasons.append("RISK_PER_SHARE_TOO_HIGH")
    qty = 0 if reasons else math.floor(max_risk_per_trade / risk_per_share)
    if not reasons and qty <= 0:
        reasons.append("SIZE_ZERO")
    if reasons:
        return Rejection(rejection_id=stable_id("rj", c.candidate_id, reasons), source="risk", symbol=c.symbol,
                         trade_date=c.scan_date, reasons=reasons, candidate_id=c.candidate_id, ts=ts)
    return EntryIntent(intent_id=stable_id("in", c.candidate_id), candidate_id=c.candidate_id, symbol=c.symbol,
                       trade_date=c.scan_date, qty=qty, entry_level=c.entry_level, stop_price=c.stop_loss,
                       risk_per_share=risk_per_share, notional=round(qty * c.entry_level, 2),
                       gates_passed=["RISK_PER_SHARE"], ts=ts)
