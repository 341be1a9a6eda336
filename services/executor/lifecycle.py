"""The order state machine: one explicit table, executor record status x broker status -> record status.

Pure data and one lookup. The broker side is Alpaca's full status set (docs "Orders at Alpaca", "Order
Lifecycle"; OpenAPI ``oas/trading/openapi.yaml`` ``OrderStatus``), pending and rare states included.
The record side is the executor's closed set (``RECORD_STATUSES``):

- local, never seen by the broker: ``new`` (in the outbox), ``unknown`` (sent, answer lost), ``waiting``
  (held back until other orders are done), ``blocked`` (a resend refused by the gates);
- live at the broker: ``accepted``, ``partially_filled``, ``pending_cancel``, ``pending_replace``,
  ``done_for_day`` (Alpaca: "will not receive further updates until the next trading day": NOT final);
- final: ``filled``, ``cancelled``, ``expired``, ``rejected``, ``replaced``.

A pair the table does not allow raises ``ImpossibleTransition`` (the core turns it into a critical alert
and keeps the record as it was, never a silent drop). Fills are not statuses: they come from the
cumulative ``filled_qty`` and are booked whatever the status (a fill is never lost).
"""

from __future__ import annotations

# Alpaca's statuses (OpenAPI OrderStatus enum, plus ``held`` from the Orders page).
BROKER_STATUSES: tuple[str, ...] = (
    "new", "partially_filled", "filled", "done_for_day", "canceled", "expired", "replaced", "pending_cancel",
    "pending_replace", "accepted", "pending_new", "accepted_for_bidding", "stopped", "rejected", "suspended",
    "calculated", "held")

LOCAL = ("new", "unknown", "waiting", "blocked")
LIVE = ("accepted", "partially_filled", "pending_cancel", "pending_replace", "done_for_day")
FINAL = ("filled", "cancelled", "expired", "rejected", "replaced")
RECORD_STATUSES: tuple[str, ...] = (*LOCAL, *LIVE, *FINAL)

# What a broker status means for a record the broker has (before history is taken into account).
_MEANS: dict[str, str] = {
    "new": "accepted", "accepted": "accepted", "pending_new": "accepted", "accepted_for_bidding": "accepted",
    "held": "accepted", "stopped": "accepted", "suspended": "accepted",
    "partially_filled": "partially_filled", "filled": "filled", "done_for_day": "done_for_day",
    "calculated": "done_for_day", "canceled": "cancelled", "expired": "expired", "rejected": "rejected",
    "replaced": "replaced", "pending_cancel": "pending_cancel", "pending_replace": "pending_replace",
}
_LIVE_MEANING = {"accepted", "partially_filled", "pending_cancel", "pending_replace", "done_for_day"}


class ImpossibleTransition(Exception):
    """The broker reports a status the record cannot reach from where it is."""

    code = "IMPOSSIBLE_TRANSITION"

    def __init__(self, record: str, broker: str) -> None:
        super().__init__(f"{self.code}: record {record!r} cannot become broker status {broker!r}")
        self.record, self.broker = record, broker


def _row(record: str) -> dict[str, str | None]:
    """One row of the table; None marks an impossible pair."""
    row: dict[str, str | None] = {}
    for b in BROKER_STATUSES:
        means = _MEANS[b]
        if record == "waiting":
            row[b] = None  # never sent: the broker cannot know it
        elif record in LOCAL or record in ("accepted", "pending_cancel", "pending_replace", "done_for_day"):
            row[b] = means
        elif record == "partially_filled":
            row[b] = "partially_filled" if means == "accepted" else means  # fills never go back
        elif record == means:
            row[b] = record  # the same final state seen again
        elif {record, means} == {"cancelled", "expired"}:
            row[b] = record  # done without a fill either way
        else:
            row[b] = None  # a final record cannot change (e.g. replaced then filled: a fill the executor lost)
    return row


TABLE: dict[str, dict[str, str | None]] = {r: _row(r) for r in RECORD_STATUSES}


def transition(record: str, broker: str) -> str:
    """The record's status once the broker reports ``broker``; raises ``ImpossibleTransition``."""
    nxt = TABLE.get(record, {}).get(broker)
    if nxt is None:
        raise ImpossibleTransition(record, broker)
    return nxt


def is_live(status: str) -> bool:
    return status in _LIVE_MEANING
