"""Analytics worker (shell): ingestion into ledgers, decisions at PRE_MARKET (and at OPEN when
candidates are missing), the CLOSE snapshot, reconciliation, trades and report.

Each message is stored once (``store.Store.ingest``, one script); ``core.route`` then says what it
sets off, and this module runs that under the date's lock: a close of day (``close_of_day``),
decisions (``day_decisions``), or the rewrite of a closed day's files (``ledger_files``).
Artifacts are always rewritten whole from the sorted records; a record of D arriving after D's
close (another replica, a late rejection) rewrites D's artifacts, so the last writer has them all.
A closed session more than ANALYTICS_KEEP_SESSIONS closed sessions old is sealed (``retire``): its
records leave Redis, and a later message of it goes to the DLQ (``ANALYTICS_SESSION_SEALED``).
Redis keys: ``store.py``; what is computed: ``core.py``.
"""

from __future__ import annotations

from shared.breakers import BreakerConfig
from shared.bus import DeadLetter, Delivery
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
from .core import Emit, batch_due, route
from .day_decisions import decisions_for, on_open, regime_of, undecided
from .ledger_files import flush_dirty, flush_ledgers, retire
from .state import State
from .store import SVC

SEALED = "ANALYTICS_SESSION_SEALED"  # DLQ reason: a message of a session whose records were dropped


class Analytics(Worker):
    """The analytics worker: ``handle`` one message, ``start`` (backfill the history logs, rewrite what a dead
    predecessor left dirty), ``idle`` (rewrite the dirty ledger files). Its process state is ``self.st``."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.st = State(ctx)
        self.store = self.st.store
        self.modulating = ctx.settings.regime.regime_modulation
        self.breakers = BreakerHook(ctx.r, BreakerConfig.from_settings(ctx.settings.analytics))
        self.keep = ctx.settings.analytics.analytics_keep_sessions

    def handle(self, msg: Message, d: Delivery) -> list[Emit]:
        st, store, modulating = self.st, self.store, self.modulating
        self.breakers(msg)  # circuit breakers on live equity (off unless configured; idempotent on redelivery)
        if isinstance(msg, BarBatch) and msg.tf == "1m":
            return []  # minute bars only mark equity for the breakers
        got = store.ingest(msg)
        if got is None:
            return []
        date, key, new, closed, sealed = got
        if sealed:
            raise DeadLetter(SEALED, f"{key} of {date}: the session is sealed (ANALYTICS_KEEP_SESSIONS); "
                                     "its artifacts stay as written")
        redelivered = d.deliveries > 1
        step = route(msg, key, new=new, closed=closed, redelivered=redelivered, modulating=modulating)
        if step.close:
            store.mark_closed(date)
            with st.locked(date):
                self._unsealed(date, key)
                out = process_close(st, date)
            retire(st, date, self.keep)
            return out
        if not step.locked:
            return []
        emits: list[Emit] = []
        with st.locked(date):  # the last writer of D's files has read every record of D
            self._unsealed(date, key)
            for what in step.decide:
                if what == "batch" and isinstance(msg, CandidateBatch):
                    regime = regime_of(st, date) if modulating else None
                    opened = modulating and store.open_ms(date) is not None
                    if batch_due(modulating=modulating, regime=regime, opened=opened, redelivered=redelivered,
                                 decided=store.decided(msg.batch_id)):
                        emits.append(decisions_for(st, msg))
                elif what == "open" and isinstance(msg, SessionEvent):
                    emits += on_open(st, msg, d)
                elif what == "undecided":
                    emits += undecided(st, date)
            if step.regen == "artifacts":
                process_close(st, date)
            elif step.regen:
                flush_ledgers(st, date, (step.regen,))
        if step.regen == "artifacts":
            retire(st, date, self.keep)
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
