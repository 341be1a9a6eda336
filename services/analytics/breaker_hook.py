"""The circuit breakers' shell in analytics (the core is ``shared.breakers``).

Analytics already sees every broker snapshot, order event and bar batch; for each of them this hook
runs one unit of work (``shared.audit.transact``): watching the breakers' book, the trading-state key
and the audit log, apply the message to the book (pure), then commit the book and, for each new trip,
the state transition (``BREAKER_TRIP_STATE``, never lowering a HALTED state), its ``TradingStateChange``
on ``avwap:control``, its audit record and a critical alert with the figures, all at once. Replicas race
safely (a lost race recomputes on the new book; fills are de-duplicated by event id), and replay
trips exactly as live does: the figures and the transition's time come from the message (event time).

Fail closed: a book that does not decode trips the state to ``BREAKER_TRIP_STATE`` (once: not
again while the state is already at least that) and alerts; ``avwap breakers rearm`` replaces it.
Nothing happens while no breaker is configured.
"""

from __future__ import annotations

import logging

import redis

from shared import audit
from shared.alerts import make_alert
from shared.breakers import (
    BreakerBook,
    BreakerConfig,
    Trip,
    decode_book,
    encode_book,
    on_bars,
    on_fill,
    on_snapshot,
)
from shared.controls import RANK, parse_state, stage_transition
from shared.schemas import Alert, BarBatch, BrokerSnapshot, Message, OrderEvent
from shared.streams import ALERTS, BREAKERS_KEY, TRADING_STATE_KEY

log = logging.getLogger(__name__)
RUNBOOK = "circuit-breakers"


def trip_alert(t: Trip, state: str, ts: int) -> Alert:
    fields = {k: f"{v:.4f}" for k, v in sorted(t.figures.items())}
    return make_alert("analytics", "breaker_tripped", f"breaker {t.breaker} tripped: trading state {state}",
                      severity="critical", text=t.reason + "; stays tripped until `avwap breakers rearm "
                      f"{t.breaker} --reason ...` (or /avwap rearm)", fields=fields, ts=ts,
                      dedup=["breaker", t.breaker, t.ts], runbook=RUNBOOK)


def apply(book: BreakerBook, msg: Message, cfg: BreakerConfig) -> list[Trip]:
    if isinstance(msg, BrokerSnapshot):
        return on_snapshot(book, msg, cfg)
    if isinstance(msg, OrderEvent):
        return on_fill(book, msg, cfg)
    if isinstance(msg, BarBatch):
        return on_bars(book, msg, cfg)
    return []


class BreakerHook:
    def __init__(self, r: redis.Redis, cfg: BreakerConfig) -> None:
        self.r = r
        self.cfg = cfg

    def __call__(self, msg: Message) -> list[Trip]:
        """Apply one message; returns the breakers it tripped."""
        if not self.cfg.configured() or not isinstance(msg, BrokerSnapshot | OrderEvent | BarBatch):
            return []
        if isinstance(msg, OrderEvent) and (msg.fill_qty <= 0 or msg.event not in ("filled", "partially_filled")):
            return []
        cfg = self.cfg

        def step(pipe: redis.client.Pipeline):  # noqa: ANN202
            raw = pipe.get(BREAKERS_KEY)
            book = decode_book(raw)  # type: ignore[arg-type]
            ts = getattr(msg, "ts", 0) or (max(b.ts for b in msg.bars) if isinstance(msg, BarBatch) and msg.bars else 0)
            if book is None:
                cur = parse_state(pipe.get(TRADING_STATE_KEY)).state  # type: ignore[arg-type]
                if RANK[cur] >= RANK[cfg.trip_state] and cur != "UNREADABLE":
                    return [], lambda p: None
                staged = stage_transition(pipe, cfg.trip_state, who="breaker:book", source="breaker",
                                          reason="the breakers' book is unreadable (fail closed)", ts=ts, never_lower=True)
                alert = make_alert("analytics", "breaker_book_unreadable", "breakers: book unreadable, trading state "
                                   f"{staged.change.state}", severity="critical", ts=ts, runbook=RUNBOOK,
                                   text="`avwap breakers rearm NAME --reason ...` replaces it", dedup=["book", ts])

                def write_bad(p: audit.Writes) -> None:
                    staged.write(p)
                    p.emit(ALERTS, alert)
                return [], write_bad
            trips = apply(book, msg, cfg)
            new = encode_book(book)
            stages = []
            prev: audit.AuditRecord | None = None
            for t in trips:  # several trips of one message chain: each follows the one before it
                st = stage_transition(pipe, cfg.trip_state, who=f"breaker:{t.breaker}", source="breaker", reason=t.reason,
                                      ts=t.ts, breaker=t.breaker, figures=t.figures, never_lower=True, after=prev,
                                      current=stages[-1][1].change.state if stages else None)
                prev = st.record
                stages.append((t, st))

            def write(p: audit.Writes) -> None:
                if new != raw:
                    p.set(BREAKERS_KEY, new)
                for t, st in stages:
                    st.write(p)
                    p.emit(ALERTS, trip_alert(t, st.change.state, t.ts))
            return trips, write

        trips = audit.transact(self.r, step, watch=(BREAKERS_KEY, TRADING_STATE_KEY))
        for t in trips:
            log.warning("breaker %s tripped: %s", t.breaker, t.reason)
        return trips
