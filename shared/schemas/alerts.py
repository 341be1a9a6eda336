"""Operator alerts on ``avwap:alerts`` (the Slack notifier consumes them)."""

from __future__ import annotations

from .base import Message, register


@register
class Alert(Message, frozen=True, kw_only=True, tag="alert"):
    alert_id: str  # stable: the notifier de-duplicates on it
    severity: str  # info | warning | critical
    kind: str  # e.g. order_submitted, order_filled, entry_blocked, refused_to_start, recon_mismatch
    source: str  # the service that raised it
    title: str
    text: str = ""
    fields: dict[str, str] = {}
    trade_date: str = ""
    ts: int = 0
