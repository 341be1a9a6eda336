"""Executor decisions (walking skeleton): DRY_RUN turns an intent into an accepted order event."""

from __future__ import annotations

from shared.ids import client_order_id, stable_id
from shared.schemas import EntryIntent, OrderEvent


def dry_run_accept(intent: EntryIntent, mode: str) -> OrderEvent:
    coid = client_order_id(intent.intent_id)
    return OrderEvent(event_id=stable_id("ev", coid, "accepted"), event="accepted", mode=mode,
                      intent_id=intent.intent_id, client_order_id=coid, symbol=intent.symbol, side=intent.side,
                      kind="entry", qty=intent.qty, trade_date=intent.trade_date, ts=intent.ts,
                      reason="DRY_RUN: no order sent")
