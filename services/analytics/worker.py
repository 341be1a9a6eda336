"""Analytics worker (shell): ingestion into ledgers, decisions at PRE_MARKET (and at OPEN when
candidates are missing), the CLOSE snapshot, reconciliation, trades and report.

Each message is one unit of work (``Bus.unit_of_work``), or two. The ingest reads under WATCH what Redis
holds of its record (``Store.seen``), ``core.route`` says what the message sets off, and the unit stages the
record (stored once) and commits it with the XACK. When the message sets off work on its date D, the ingest
commits without the XACK (``leave_pending``), and the work runs under D's lock: a close of day
(``close_of_day``), decisions (``day_decisions``), or the rewrite of a closed day's files (``ledger_files``).
Its files are written first (rewritten whole, so a redelivery writes the same bytes); its Redis writes
(``store.DayWork``), outputs and the XACK then commit in the second unit, before the lock is released.
Artifacts are always rewritten whole from the sorted records; a record of D arriving after D's
close (another replica, a late rejection) rewrites D's artifacts, so the last writer has them all.
A closed session more than ANALYTICS_KEEP_SESSIONS closed sessions old is sealed (``retire``): its
records leave Redis, and a later message of it goes to the DLQ (``ANALYTICS_SESSION_SEALED``).
Redis keys: ``store.py``; what is computed: ``core.py``.
"""

from __future__ import annotations

from shared.breakers import BreakerConfig
from shared.bus import Committed, DeadLetter, Delivery
from shared.schemas import BarBatch, CandidateBatch, Message, SessionEvent
from shared.service import ServiceContext, ServiceSpec, Worker, run_service
from shared.streams import (
    ALERTS,
    BARS_1D,
    BARS_1M,
    BROKER,
    CANDIDATES,
    CLOCK,
    CONTROL,
    EXITS,
    INTENTS,
    ORDERS,
    PORTFOLIO,
    REGIME,
    REJECTIONS,
)

from .breaker_hook import BreakerHook
from .close_of_day import process_close
from .core import Emit, Route, batch_due, route
from .day_decisions import decisions_for, on_open, regime_of, undecided
from .ledger_files import flush_dirty, flush_ledgers, retire
from .state import State
from .store import SVC, DayWork, Record, record_of

SEALED = "ANALYTICS_SESSION_SEALED"  # DLQ reason: a message of a session whose records were dropped


class Analytics(Worker):
    """The analytics worker: ``handle`` one message, ``start`` (backfill the history logs, rewrite what a dead
    predecessor left dirty), ``idle`` (rewrite the dirty ledger files). Its process state is ``self.st``."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.st = State(ctx)
        self.store = self.st.store
        self.modulating = ctx.settings.regime.regime_modulation
        self.breakers = BreakerHook(ctx.r, BreakerConfig.from_settings(ctx.settings.analytics))
        self.keep = ctx.settings.analytics.analytics_keep_sessions

    def handle(self, msg: Message, d: Delivery) -> list[Emit] | Committed:
        self.breakers(msg)  # circuit breakers on live equity (off unless configured; idempotent on redelivery)
        if isinstance(msg, BarBatch) and msg.tf == "1m":
            return []  # minute bars only mark equity for the breakers
        rec = record_of(msg)
        if rec is None:
            return []
        store, redelivered = self.store, d.deliveries > 1
        for uow in self.ctx.bus.unit_of_work(SVC, d):
            with uow:  # optimistic: guess on the first attempt, the commit's guards check it (one round trip)
                seen = store.seen(rec, uow, guess=not (uow.attempt or redelivered))
                if seen.sealed(rec.date):
                    raise DeadLetter(SEALED, f"{rec.key} of {rec.date}: the session is sealed "
                                             "(ANALYTICS_KEEP_SESSIONS); its artifacts stay as written")
                step = route(msg, rec.key, new=seen.new, closed=seen.closed, redelivered=redelivered,
                             modulating=self.modulating)
                store.stage(uow, rec, seen, closing=step.close)
                if step.locked:
                    uow.leave_pending()  # the record is stored first: the day's work below reads it
        if not step.locked:
            return uow.result  # type: ignore[return-value]
        with self.st.locked(rec.date):  # the last writer of D's files has read every record of D
            for uow in self.ctx.bus.unit_of_work(SVC, d, crash_points=("analytics_before_commit",
                                                                       "analytics_after_commit")):
                with uow:
                    work = DayWork(store, uow)
                    for stream, out in self._work(msg, d, rec, step, work, redelivered):
                        uow.emit(stream, out)
            if uow.result is not None and not uow.result.lost_race:
                work.committed()
        if step.close or step.regen == "artifacts":
            retire(self.st, rec.date, self.keep)
        return uow.result  # type: ignore[return-value]

    def _work(self, msg: Message, d: Delivery, rec: Record, step: Route, work: DayWork,
              redelivered: bool) -> list[Emit]:
        """What ``step`` sets off for ``msg`` of date D, under D's lock: D's close, decisions, the rewrite of
        D's files; the writes staged on ``work``, the outputs returned."""
        st, date = self.st, rec.date
        self._unsealed(date, rec.key)
        if step.close:
            return process_close(st, date, work)
        emits: list[Emit] = []
        for what in step.decide:
            if what == "batch" and isinstance(msg, CandidateBatch):
                regime = regime_of(st, date) if self.modulating else None
                opened = self.modulating and self.store.open_ms(date) is not None
                if batch_due(modulating=self.modulating, regime=regime, opened=opened,
                             redelivered=redelivered, decided=work.decided(msg.batch_id)):
                    emits.append(decisions_for(st, msg, work))
            elif what == "open" and isinstance(msg, SessionEvent):
                emits += on_open(st, msg, d, work)
            elif what == "undecided":
                emits += undecided(st, date, work)
        if step.regen == "artifacts":
            process_close(st, date, work, publishing=False)  # rewrites D's files; its messages went out at D's close
        elif step.regen:
            flush_ledgers(st, date, (step.regen,))
        return emits

    def _unsealed(self, date: str, key: str) -> None:
        """Under D's lock: D was sealed after this message's ingest (its records are gone), so it is dead-lettered."""
        if self.store.sealed(date):
            raise DeadLetter(SEALED, f"{key} of {date}: the session was sealed while it was handled "
                                     "(ANALYTICS_KEEP_SESSIONS); its artifacts stay as written")

    def start(self) -> list[Emit]:
        """Backfill the history ingest logs if needed, and rewrite the ledger files left dirty by a
        predecessor that died before writing them."""
        self.store.backfill_logs()
        flush_dirty(self.st)
        return []

    def idle(self) -> list[Emit]:
        flush_dirty(self.st)
        return []


SPEC = ServiceSpec(name=SVC, streams=[CLOCK, CANDIDATES, INTENTS, REJECTIONS, ORDERS, BROKER, EXITS, ALERTS, BARS_1D, BARS_1M, REGIME],
                   build=Analytics, produces=[PORTFOLIO, ALERTS, CONTROL])


def main() -> int:
    return run_service(SPEC)


__all__ = ["SPEC", "Analytics", "main"]
