"""Risk worker: consumes candidates, publishes intents or rejections."""

from __future__ import annotations

from shared.bus import Delivery, Emit
from shared.schemas import CandidateBatch, EntryIntent, Message
from shared.service import ServiceContext, ServiceSpec, run_service
from shared.streams import CANDIDATES, INTENTS, REJECTIONS

from .core import decide


def build(ctx: ServiceContext):
    rs = ctx.settings.risk

    def handle(msg: Message, d: Delivery) -> list[Emit]:
        if not isinstance(msg, CandidateBatch):
            return []
        out: list[Emit] = []
        for c in msg.candidates:
            res = decide(c, equity=rs.account_equity, max_risk_per_trade=rs.max_risk_per_trade,
                         max_risk_per_share=rs.max_risk_per_share, ts=0)
            out.append((INTENTS if isinstance(res, EntryIntent) else REJECTIONS, res))
        return out

    return handle


SPEC = ServiceSpec(name="risk", streams=[CANDIDATES], build=build)


def main() -> int:
    return run_service(SPEC)
