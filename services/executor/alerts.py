"""The executor's alerts: one per execution decision, and the stream each event goes to."""

from __future__ import annotations

from shared.alerts import make_alert
from shared.schemas import Alert, Message, OrderEvent, Rejection
from shared.streams import ALERTS, BROKER, ORDERS, REJECTIONS

from . import core

# docs/runbook.md anchors the executor's alerts point at (a test checks each one exists)
RUNBOOK_REFUSED = "executor-refusing-to-start"
RUNBOOK_RECONCILIATION = "executor-start-up-reconciliation"
RUNBOOK_BLOCKED = "executor-entries-blocked-at-submit-time"
RUNBOOK_REJECTED = "executor-rejected-orders"


def stream_for(msg: Message) -> str:
    if isinstance(msg, OrderEvent):
        return ORDERS
    if isinstance(msg, Rejection):
        return REJECTIONS
    if isinstance(msg, Alert):
        return ALERTS
    return BROKER


ORDER_ALERTS = {  # order event -> (alert kind, severity, runbook anchor)
    "accepted": ("order_submitted", "info", ""), "replaced": ("order_submitted", "info", ""),
    "filled": ("order_filled", "info", ""), "partially_filled": ("order_filled", "info", ""),
    "rejected": ("order_rejected", "warning", RUNBOOK_REJECTED), "cancelled": ("order_cancelled", "info", ""),
}


def alerts_for(events: list[Message]) -> list[Alert]:
    """One alert per execution decision: submitted, filled, rejected, cancelled, blocked (an entry's
    Rejection). The alert id is a stable hash of the decision's id, so a re-derived decision (a
    redelivery, a restart) raises the same alert and the notifier sends it once."""
    out = []
    for e in events:
        if isinstance(e, OrderEvent):
            kind, sev, runbook = ORDER_ALERTS[e.event]
            title = f"{e.mode} {e.kind} {e.side} {e.qty} {e.symbol}: {e.event}"
            if e.fill_price is not None:
                title += f" {e.fill_qty}@{e.fill_price}"
            out.append(make_alert("executor", kind, title, severity=sev, text=e.reason, trade_date=e.trade_date,
                                  ts=e.ts, fields={"client_order_id": e.client_order_id, "intent_id": e.intent_id},
                                  dedup=e.event_id, runbook=runbook))
        elif isinstance(e, Rejection):
            routine = e.reasons == [core.R_NOT_CONFIRMED]  # the entry level was simply never confirmed
            out.append(make_alert("executor", "entry_blocked", f"entry {e.symbol} blocked: {', '.join(e.reasons)}",
                                  severity="info" if routine else "warning", text=e.detail, trade_date=e.trade_date,
                                  ts=e.ts, fields={"intent_id": e.intent_id}, dedup=e.rejection_id,
                                  runbook="" if routine else RUNBOOK_BLOCKED))
    return out
