"""Heartbeat watchdog and the system-alive summary (pure; the notifier is the shell).

Every bus consumer keeps ``avwap:hb:<group>:<consumer>`` alive (TTL ``HEARTBEAT_TTL_S``). The
notifier reads which groups have a live key and passes the counts here with the time it read
them (an injected clock: this module never reads one):

- ``observe``: a watched service whose heartbeats have all been gone for ``grace_s`` raises one
  ``heartbeat_missing`` alert (critical); when a heartbeat is back, one ``heartbeat_recovered``
  (info). A service never seen alive counts as missing from the first check on. Alert ids are
  stable hashes of (service, the time it went missing), so a replica recomputing the same
  transition raises the same alert and the notifier posts it once.
- ``summary``: the ``heartbeat`` alert posted at each session's PRE_MARKET: every watched
  service with its live consumers, the DLQ size and the Slack backlog (info, or warning when a
  service is down or the DLQ is not empty).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from shared.alerts import make_alert
from shared.schemas import Alert
from shared.settings.base import comma_list

SOURCE = "notifier"
RUNBOOK = "service-heartbeat-missing"
NS = 1_000_000_000


class ServiceHealth(msgspec.Struct, frozen=True, kw_only=True):
    status: str  # up | missing
    since_ns: int  # when it was first seen in this status
    consumers: int = 0  # live consumers at the last check (up) or the last time it was up (missing)
    alerted: bool = False  # missing: the heartbeat_missing alert was raised


class WatchState(msgspec.Struct, frozen=True, kw_only=True):
    services: dict[str, ServiceHealth] = {}


def watched(services: str | Iterable[str]) -> list[str]:
    """The service list of ``HEARTBEAT_WATCH_SERVICES`` (sorted, de-duplicated)."""
    return sorted(set(comma_list(services)))


def _utc(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / NS, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def observe(state: WatchState, live: Mapping[str, int], expected: Sequence[str], now_ns: int,
            grace_s: float) -> tuple[WatchState, list[Alert]]:
    """The next state and the alerts of one check (``live``: service -> live consumers)."""
    out: dict[str, ServiceHealth] = {}
    alerts: list[Alert] = []
    for svc in expected:
        n = int(live.get(svc, 0))
        cur = state.services.get(svc)
        if n > 0:
            if cur is not None and cur.status == "missing" and cur.alerted:
                alerts.append(make_alert(SOURCE, "heartbeat_recovered", f"{svc} is alive again", severity="info",
                                         text=f"{svc}: {n} live consumer(s) after {(now_ns - cur.since_ns) / NS:.0f}s without a heartbeat",
                                         fields={"service": svc, "consumers": str(n), "missing_since": _utc(cur.since_ns)},
                                         ts=now_ns, dedup=f"recovered:{svc}:{cur.since_ns}"))
            since = cur.since_ns if cur is not None and cur.status == "up" else now_ns
            out[svc] = ServiceHealth(status="up", since_ns=since, consumers=n)
            continue
        if cur is None or cur.status == "up":
            cur = ServiceHealth(status="missing", since_ns=now_ns, consumers=cur.consumers if cur else 0)
        if not cur.alerted and now_ns - cur.since_ns >= grace_s * NS:
            alerts.append(make_alert(SOURCE, "heartbeat_missing", f"{svc}: no heartbeat", severity="critical",
                                     text=(f"no live heartbeat of {svc} for {(now_ns - cur.since_ns) / NS:.0f}s "
                                           f"(avwap:hb:{svc}:* expired); the service is down or cannot reach Redis"),
                                     fields={"service": svc, "missing_since": _utc(cur.since_ns),
                                             "last_consumers": str(cur.consumers)},
                                     ts=now_ns, dedup=f"missing:{svc}:{cur.since_ns}", runbook=RUNBOOK))
            cur = msgspec.structs.replace(cur, alerted=True)
        out[svc] = cur
    return WatchState(services=out), alerts


def summary(date: str, ts: int, live: Mapping[str, int], expected: Sequence[str], dlq: int, backlog: int) -> Alert:
    """The system-alive ``heartbeat`` alert of session ``date`` (one per date: its id is the date's)."""
    down = [s for s in expected if live.get(s, 0) <= 0]
    fields = {s: (f"up ({live[s]} consumer{'s' if live[s] != 1 else ''})" if live.get(s, 0) > 0 else "NO HEARTBEAT")
              for s in expected}
    fields["dlq"] = str(dlq)
    fields["slack_backlog"] = str(backlog)
    if down:
        title, sev = f"System check {date}: {len(down)} service(s) down ({', '.join(down)})", "warning"
    elif dlq:
        title, sev = f"System alive {date} ({dlq} message(s) in the DLQ)", "warning"
    else:
        title, sev = f"System alive {date}", "info"
    return make_alert(SOURCE, "heartbeat", title, severity=sev, text="pre-market check of every service's heartbeat",
                      fields=fields, trade_date=date, ts=ts, dedup=f"heartbeat:{date}",
                      runbook=RUNBOOK if down else ("dead-letter-queue" if dlq else ""))
