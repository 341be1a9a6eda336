"""A consumer's intake: the message a stream entry holds, or why the DLQ takes it (docs/bus.md, "Dead letters").

``admit`` turns an entry's fields into its message, refusing (``SchemaError``, its ``code`` the DLQ
reason) an entry with no ``data``, a ``data`` longer than ``BUS_MAX_PAYLOAD_BYTES``
(``PAYLOAD_TOO_LARGE``: not decoded; the DLQ keeps its first ``DLQ_KEEP_BYTES`` and its size and
sha256), one that does not decode, and a message the consumer's ``check`` refuses (by default
``session_problem``). ``dead_letter_record`` is what the DLQ keeps of a refused entry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from shared.bus import as_str
from shared.schemas import (
    BarBatch,
    CandidateBatch,
    EntryIntent,
    Message,
    PortfolioDecisionBatch,
    PortfolioSnapshot,
    SchemaError,
    SessionEvent,
    decode,
    type_name_of,
)

DEFAULT_MAX_PAYLOAD = 4 * 1024 * 1024  # bytes of one entry's ``data`` (BUS_MAX_PAYLOAD_BYTES)
DLQ_KEEP_BYTES = 4096  # of an oversized payload, the DLQ keeps this much (and its size and sha256)
NS_PER_DAY = 86_400 * 1_000_000_000

Check = Callable[[Message], str | None]

# The session date of each message that drives a session (consumers check it is an NYSE session).
_SESSION_DATE: dict[type, str] = {SessionEvent: "trade_date", BarBatch: "trade_date", CandidateBatch: "scan_date",
                                  PortfolioDecisionBatch: "date", PortfolioSnapshot: "date", EntryIntent: "trade_date"}


def session_problem(msg: Message, now_ns: int | None = None, horizon_days: int = 0) -> str | None:
    """Why the session date of ``msg`` is not acceptable, as ``CODE: detail``, or None.

    ``NOT_A_SESSION``: not a real date, or not an NYSE session; ``DATE_OUT_OF_HORIZON``: with
    ``horizon_days`` > 0, more than that many days from ``now_ns`` (live services; replays set 0).
    Messages without a session date (alerts, order events...) pass: their dates are checked for
    form at decode (``shared.schemas.types.TradeDate``).
    """
    attr = _SESSION_DATE.get(type(msg))
    if attr is None:
        return None
    d = getattr(msg, attr)
    from shared.clock import calendar, dt_to_ns, ny_datetime

    if not calendar().is_session(d):
        return f"NOT_A_SESSION: {type_name_of(msg)}.{attr}={d!r} is not an NYSE session"
    if horizon_days > 0 and now_ns is not None:
        off = abs(dt_to_ns(ny_datetime(d, "12:00")) - now_ns)
        if off > horizon_days * NS_PER_DAY:
            return (f"DATE_OUT_OF_HORIZON: {type_name_of(msg)}.{attr}={d} is more than {horizon_days} days "
                    "from now (MESSAGE_DATE_HORIZON_DAYS)")
    return None


class TooLarge(SchemaError):
    """A ``data`` field over the limit; ``fields``: the entry as the DLQ keeps it (``data`` cut short)."""

    code = "PAYLOAD_TOO_LARGE"

    def __init__(self, detail: str, fields: dict) -> None:
        super().__init__(detail)
        self.fields = fields


class Refused(SchemaError):
    """A decoded message that a consumer-side check refused (``code`` from the check)."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        super().__init__(detail)


def admit(fields: dict, max_payload_bytes: int, check: Check | None) -> Message:
    """The message of an entry's ``fields``; raises ``SchemaError`` (``TooLarge``, ``Refused``...) for one
    the DLQ takes."""
    raw = fields.get(b"data", fields.get("data"))
    if raw is None:
        raise SchemaError("entry has no 'data' field")
    if len(raw) > max_payload_bytes:
        size = len(raw)
        data = raw.encode() if isinstance(raw, str) else raw
        kept = {**{k: v for k, v in fields.items() if as_str(k) != "data"}, "data": data[:DLQ_KEEP_BYTES],
                "dlq_data_bytes": size, "dlq_data_sha256": hashlib.sha256(data).hexdigest()}
        raise TooLarge(f"{size} bytes > BUS_MAX_PAYLOAD_BYTES={max_payload_bytes} (not decoded; "
                       f"the DLQ keeps the first {DLQ_KEEP_BYTES})", kept)
    msg = decode(raw)
    problem = check(msg) if check is not None else None
    if problem:
        code, _, detail = problem.partition(": ")
        raise Refused(code, detail)
    return msg


def dead_letter_record(fields: dict, reason: str, *, stream: str, entry_id: str, group: str, consumer: str,
                       deliveries: int) -> dict[str, bytes | str | int]:
    """The DLQ entry of a refused or failed entry: its original fields, why, and where it came from."""
    record: dict[str, bytes | str | int] = {as_str(k): v for k, v in fields.items()}
    record.update(
        {
            "dlq_reason": reason,
            "dlq_source_stream": stream,
            "dlq_source_id": entry_id,
            "dlq_group": group,
            "dlq_consumer": consumer,
            "dlq_deliveries": deliveries,
        }
    )
    return record
