"""Ledger records (pure): the stable key and NY date of every ingested message, and its file line.

Each message maps to ``(date, "<type>:<stable id>")``; the worker stores it once under that key
(HSETNX), so a redelivered or re-published message changes nothing, and files are written from
the records sorted by key, never in arrival order.
"""

from __future__ import annotations

from shared.artifacts import canonical_json_of, decode_for_canonical
from shared.clock import ny_trade_date
from shared.ids import stable_id
from shared.schemas import (
    Alert,
    BarBatch,
    BrokerSnapshot,
    CandidateBatch,
    EntryIntent,
    ExitEvent,
    ExitIntent,
    Message,
    OrderEvent,
    PortfolioDecisionBatch,
    PortfolioSnapshot,
    Regime,
    Rejection,
    SessionEvent,
    StopIntent,
    type_name_of,
)

# the ledger of record (<D>.jsonl): market and account facts; everything else (intents, clock,
# alerts, bar summaries) goes to the journal (<D>.journal.jsonl)
LEDGER_TYPES = ("candidate_batch", "rejection", "order_event", "broker_snapshot", "exit_event")

# types kept across days (trade reconstruction, reconciliation need their whole history)
HISTORY_TYPES = ("order_event", "exit_event", "entry_intent", "stop_intent", "exit_intent")


def record_key(msg: Message) -> tuple[str, str] | None:
    """(NY date, record key) of a message, or None for messages the ledger does not keep.

    A message without a date is kept under ``undated``.
    """
    rk = _record_key(msg)
    if rk is None:
        return None
    return rk[0] or "undated", rk[1]


def _record_key(msg: Message) -> tuple[str, str] | None:
    t = type_name_of(msg)
    match msg:
        case CandidateBatch():
            return msg.scan_date, f"{t}:{msg.batch_id}"
        case EntryIntent() | StopIntent() | ExitIntent():
            return msg.trade_date, f"{t}:{msg.intent_id}"
        case Rejection():
            return msg.trade_date, f"{t}:{msg.rejection_id}"
        case OrderEvent():
            return msg.trade_date, f"{t}:{msg.event_id}"
        case BrokerSnapshot():
            return msg.trade_date, f"{t}:{msg.snapshot_id}"
        case ExitEvent():
            return msg.trade_date, f"{t}:{msg.event_id}"
        case Alert():
            date = msg.trade_date or (ny_trade_date(msg.ts) if msg.ts else "undated")
            return date, f"{t}:{msg.alert_id}"
        case SessionEvent():
            return msg.trade_date, f"{t}:{msg.phase}"
        case BarBatch():
            if msg.tf != "1d":
                return None
            return msg.trade_date, f"{t}:1d:{stable_id('', [(b.symbol, b.ts) for b in msg.bars])}"
        case Regime():
            return msg.session, f"{t}:{msg.regime_id}"
        case PortfolioSnapshot() | PortfolioDecisionBatch():
            return None
    return None


def ledger_record(msg: Message) -> Message | dict[str, object]:
    """What the ledger stores: the message itself, or a summary for daily bar batches."""
    if isinstance(msg, BarBatch):
        return {"type": "bar_batch_summary", "tf": msg.tf, "trade_date": msg.trade_date, "bars": len(msg.bars),
                "ts": max((b.ts for b in msg.bars), default=0), "final": msg.final}
    return msg


def ledger_file_of(key: str) -> str:
    """``"ledger"`` or ``"journal"``: which per-date file a record key belongs to."""
    return "ledger" if key.split(":", 1)[0] in LEDGER_TYPES else "journal"


def ledger_line(key: str, rec: bytes, prov: bytes) -> bytes:
    """The canonical line of a stored record: its key, the provenance of its first ingest (with
    ``input:message`` = the key) and the record (``canonical_json``'s bytes, from the stored JSON)."""
    p = {**decode_for_canonical(prov), "input:message": key}
    return canonical_json_of({"key": key, "provenance": p, "record": decode_for_canonical(rec)})
