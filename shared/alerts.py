"""Raising operator alerts: one ``Alert`` message on ``avwap:alerts`` (the Slack notifier sends it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.ids import stable_id
from shared.logs import redact, secret_values
from shared.schemas import Alert, normalize_severity
from shared.streams import ALERTS

if TYPE_CHECKING:
    from shared.bus import Bus


def make_alert(source: str, kind: str, title: str, *, severity: str = "info", text: str = "",
               fields: dict[str, str] | None = None, trade_date: str = "", ts: int = 0,
               dedup: str | None = None, runbook: str = "") -> Alert:
    """Build an alert; its id is a stable hash of ``dedup`` (default: kind, title, date, fields).

    ``severity`` is normalized onto info | warning | critical ("warn" -> warning, "error" -> critical).
    """
    secrets = secret_values()  # read from the environment once, not once per text
    fields = {k: redact(str(v), secrets) for k, v in sorted((fields or {}).items())}
    key = dedup if dedup is not None else [kind, title, trade_date, fields]
    return Alert(alert_id=stable_id("al", source, key), severity=normalize_severity(severity), kind=kind,
                 source=source, title=redact(title, secrets), text=redact(text, secrets), fields=fields, trade_date=trade_date,
                 ts=ts, runbook=runbook)


class AlertPublisher:
    def __init__(self, bus: Bus, source: str) -> None:
        self.bus = bus
        self.source = source

    def alert(self, kind: str, title: str, **kw: object) -> Alert:
        a = make_alert(self.source, kind, title, **kw)  # type: ignore[arg-type]
        self.bus.publish(ALERTS, a)
        return a
