"""Scanner worker: on ``SessionEvent(PRE_MARKET, D)`` it scans for session D and returns the batch.

It consumes ``avwap:clock`` only. The scan reads the bar store (``BARS_DIR``, daily bars dated
before D, the last ``SCAN_HISTORY_BARS`` sessions), writes ``<ARTIFACTS_DIR>/candidates/D.json``,
``D.rejects.json`` and ``D.csv`` (deterministic bytes, so rewriting them on a redelivery or by a
second replica changes nothing), and RETURNS ``[(avwap:candidates, CandidateBatch), (avwap:alerts,
scan summary)]`` for the bus to commit with the ack. Every PRE_MARKET gets one batch, also when
the gate is closed, bars are stale or the universe file is unreadable (then ``market_gate_ok`` is
false with a reason and no candidates). When the rq cron job (or ``avwap scan --publish``) already
published D's batch, the worker publishes nothing (``services/scanner/session.py``).
"""

from __future__ import annotations

import logging

from shared.bars import BarStore
from shared.bus import Delivery, Emit
from shared.schemas import Message, SessionEvent
from shared.service import ServiceContext, ServiceSpec, run_service
from shared.streams import ALERTS, CANDIDATES, CLOCK

from .artifacts import write_artifacts
from .session import claim_for_worker, claim_of, outputs, scan_for, store_panel

log = logging.getLogger(__name__)


def build(ctx: ServiceContext):
    settings = ctx.settings
    store = BarStore(settings.core.bars_dir)

    def handle(msg: Message, d: Delivery) -> list[Emit]:
        if not isinstance(msg, SessionEvent) or msg.phase != "PRE_MARKET":
            return []
        day = msg.trade_date
        got = claim_of(ctx.r, day)
        if got is not None and (got[1] != "clock" or got[2] != d.entry_id):
            log.info("scanner: %s batch %s already published (%s %s); nothing to do", day, got[0], got[1], got[2])
            return []
        result = scan_for(store_panel(store, day, settings), day, settings, r=ctx.r)
        write_artifacts(settings.core.artifacts_dir, result)
        if not claim_for_worker(ctx.r, result.batch, d.entry_id):
            return []
        b = result.batch
        log.info("scanner: %s -> %d candidates, gate %s (%s), universe %d", day, len(b.candidates),
                 "open" if b.market_gate_ok else "closed", b.market_gate_reason, b.universe_size)
        return outputs(result, msg.ts)

    return handle


SPEC = ServiceSpec(name="scanner", streams=[CLOCK], build=build, produces=[CANDIDATES, ALERTS])


def main() -> int:
    return run_service(SPEC)
