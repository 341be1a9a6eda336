"""Scanner worker: on ``SessionEvent(PRE_MARKET, D)`` it scans for session D and returns the batch.

It consumes ``avwap:clock`` only. The scan reads the bar store (``BARS_DIR``, daily bars dated
before D, the last ``SCAN_HISTORY_BARS`` sessions), writes ``<ARTIFACTS_DIR>/candidates/D.json``,
``D.rejects.json`` and ``D.csv`` (deterministic bytes, so rewriting them on a redelivery or by a
second replica changes nothing), and RETURNS ``[(avwap:candidates, CandidateBatch), (avwap:alerts,
scan summary)]`` for the bus to commit with the ack. Every PRE_MARKET gets one batch, also when
the gate is closed, bars are stale or the universe file is unreadable (then ``market_gate_ok`` is
false with a reason and no candidates). When the rq cron job (or ``avwap scan --publish``) already
published D's batch, the worker publishes nothing (``services/scanner/session.py``). At CLOSE of D it
acks at once and computes the next session's scan ahead in a thread, used at PRE_MARKET only if its
inputs are still the same (``shared/ahead.py``).
"""

from __future__ import annotations

import logging

from shared.ahead import Ahead, Kept, file_stamp
from shared.allocator import keep_freed_memory
from shared.bars import BarStore
from shared.bus import Delivery, Emit
from shared.clock import calendar
from shared.schemas import Message, SessionEvent
from shared.service import ServiceContext, ServiceSpec, Worker, run_service
from shared.streams import ALERTS, CANDIDATES, CLOCK

from .artifacts import artifact_bytes, write_artifacts
from .core import ScanResult
from .session import claim_for_worker, claim_of, outputs, scan_for, store_panel

log = logging.getLogger(__name__)


class Scanner(Worker):
    """One batch per PRE_MARKET; at CLOSE, the next session's scan computed ahead in a thread
    (``shared.ahead``) while the other services do their close of day. Only that thread and PRE_MARKET
    read the bar store, never at the same time: PRE_MARKET (and the next CLOSE) first wait for it."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.store = BarStore(ctx.settings.core.bars_dir)
        self.ahead: Ahead[tuple[ScanResult, dict[str, bytes]]] = Ahead("scanner")

    def scan_ahead(self, after: str) -> Kept[tuple[ScanResult, dict[str, bytes]]]:
        """The scan of the session after ``after`` over the bars there are now, with its files' bytes."""
        settings = self.settings
        nxt = calendar().next_session(after)
        stamp = file_stamp(settings.scanner.scan_universe_file)
        panel = store_panel(self.store, nxt, settings)
        result = scan_for(panel, nxt, settings)
        return Kept.of(nxt, panel, stamp, (result, artifact_bytes(result)))

    def scan(self, day: str) -> tuple[ScanResult, dict[str, bytes] | None]:
        kept = self.ahead.take()
        settings = self.settings
        if kept is not None:
            now = self.store.day_versions(before=day, lookback=settings.scanner.scan_history_bars)
            if kept.fits(day, now, file_stamp(settings.scanner.scan_universe_file)):
                return kept.value
        return scan_for(store_panel(self.store, day, settings), day, settings, r=self.ctx.r), None

    def handle(self, msg: Message, d: Delivery) -> list[Emit]:
        if not isinstance(msg, SessionEvent):
            return []
        if msg.phase == "CLOSE":
            if self.settings.scanner.scan_shards == 1:  # a sharded scan runs on rq workers: never ahead
                self.ahead.start(lambda: self.scan_ahead(msg.trade_date))
            return []
        if msg.phase != "PRE_MARKET":
            return []
        ctx, settings, day = self.ctx, self.settings, msg.trade_date
        got = claim_of(ctx.r, day)
        if got is not None and (got[1] != "clock" or got[2] != d.entry_id):
            log.info("scanner: %s batch %s already published (%s %s); nothing to do", day, got[0], got[1], got[2])
            return []
        result, files = self.scan(day)
        write_artifacts(settings.core.artifacts_dir, result, files)
        if not claim_for_worker(ctx.r, result.batch, d.entry_id):
            return []
        b = result.batch
        log.info("scanner: %s -> %d candidates, gate %s (%s), universe %d", day, len(b.candidates),
                 "open" if b.market_gate_ok else "closed", b.market_gate_reason, b.universe_size)
        return outputs(result, msg.ts)

    def stop(self) -> None:
        self.ahead.shutdown()


SPEC = ServiceSpec(name="scanner", streams=[CLOCK], build=Scanner, produces=[CANDIDATES, ALERTS])


def main() -> int:
    keep_freed_memory()  # a scan's ~1 MB temporaries reuse freed pages (shared/allocator.py)
    return run_service(SPEC)
