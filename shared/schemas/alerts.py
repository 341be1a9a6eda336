"""Operator alerts on ``avwap:alerts`` (the Slack notifier consumes them).

Versions
- v1: ``severity`` was free text (producers wrote "warn", "error", ...).
- v2 (current): ``severity`` is one of ``SEVERITIES`` (checked on decode) and ``runbook`` names
  the docs/runbook.md section the operator should follow. v1 entries are upcast on decode:
  the severity is normalized with ``normalize_severity`` and ``runbook`` is empty.
"""

from __future__ import annotations

from typing import Literal

from .base import Message, register, register_legacy
from .types import OptTradeDate

Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
_SEVERITY_ALIASES = {
    "debug": "info", "info": "info", "notice": "info",
    "warn": "warning", "warning": "warning",
    "error": "critical", "err": "critical", "crit": "critical", "critical": "critical", "fatal": "critical",
}


def normalize_severity(value: str) -> Severity:
    """Map a free-text severity onto ``SEVERITIES``; an unknown one is ``critical`` (fail loud)."""
    return _SEVERITY_ALIASES.get(value.strip().lower(), "critical")  # type: ignore[return-value]


@register
class Alert(Message, frozen=True, kw_only=True, tag="alert"):
    VERSION = 2
    v: int = 2
    alert_id: str  # stable: the notifier de-duplicates on it
    severity: Severity
    kind: str  # e.g. order_submitted, order_filled, entry_blocked, refused_to_start, recon_mismatch
    source: str  # the service that raised it
    title: str
    text: str = ""
    fields: dict[str, str] = {}
    trade_date: OptTradeDate = ""
    ts: int = 0
    runbook: str = ""  # docs/runbook.md section (anchor) for the operator; "" if none


class AlertV1(Message, frozen=True, kw_only=True, tag="alert"):
    """Alert as written before v2 (severity was free text). Decoded only to be upcast."""

    VERSION = 1
    v: int = 1
    alert_id: str
    severity: str
    kind: str
    source: str
    title: str
    text: str = ""
    fields: dict[str, str] = {}
    trade_date: str = ""
    ts: int = 0


def upcast_alert_v1(old: AlertV1) -> Alert:
    return Alert(alert_id=old.alert_id, severity=normalize_severity(old.severity), kind=old.kind,
                 source=old.source, title=old.title, text=old.text, fields=dict(old.fields),
                 trade_date=old.trade_date, ts=old.ts)


register_legacy(AlertV1, upcast_alert_v1)
