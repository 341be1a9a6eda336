"""Slack notifier: ``python -m services.analytics.notifier`` (consumer group ``notifier`` on avwap:alerts).

Every alert (execution decisions, blocked entries, reconciliation mismatches, heartbeats, the
daily report alert of analytics) goes first into a Redis outbox (atomically, de-duplicated on
``alert_id``), then the message is acked; the outbox is drained in order with the real
slack-sdk ``WebClient`` (``base_url`` = ``SLACK_BASE_URL``). A 429 sleeps ``Retry-After`` and
retries; a 5xx or a connection error backs off and leaves the message at the head of the
outbox, so a Slack outage loses nothing: the backlog is posted when Slack answers again.
Client-side rate limit: ``SLACK_RATE_PER_MIN``. No ``SLACK_BOT_TOKEN``: alerts are logged only.
The token is never logged (slack_sdk's own logger is kept at WARNING).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import redis

from shared.bus import Delivery, Emit
from shared.schemas import Alert, Message, decode, encode
from shared.service import ServiceContext, ServiceSpec, run_service
from shared.streams import ALERTS, state_key

log = logging.getLogger(__name__)
logging.getLogger("slack_sdk").setLevel(logging.WARNING)

SVC = "notifier"
OUTBOX = state_key(SVC, "outbox")  # list of alert ids, oldest first
OUTBOX_DATA = state_key(SVC, "outbox_data")  # hash alert id -> alert JSON
SENT = state_key(SVC, "sent")  # set of alert ids posted
FAILED = state_key(SVC, "failed")  # hash alert id -> reason (permanent Slack errors)

_ENQUEUE = """
if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then return 0 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 1 then
  redis.call('RPUSH', KEYS[1], ARGV[1])
  return 1
end
return 0
"""
_DONE = """
redis.call('LREM', KEYS[1], 1, ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
"""

SEVERITY_ICON = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}
PERMANENT = ("invalid_auth", "not_authed", "account_inactive", "channel_not_found", "not_in_channel",
             "is_archived", "invalid_blocks", "msg_too_long", "token_revoked")


def blocks_for(a: Alert) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, Block Kit blocks) of an alert."""
    icon = SEVERITY_ICON.get(a.severity, ":grey_question:")
    text = f"[{a.severity}] {a.title}"
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": f"{a.title}"[:150]}}]
    if a.text:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} {a.text}"[:3000]}})
    if a.fields:
        blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"[:2000]}
                                                     for k, v in sorted(a.fields.items())][:10]})
    ctx = f"{a.source} · {a.kind}" + (f" · {a.trade_date}" if a.trade_date else "") + f" · {a.alert_id}"
    if a.runbook:
        ctx += f" · runbook: docs/runbook.md#{a.runbook}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": ctx}]})
    return text, blocks


class Outbox:
    """The Redis outbox: enqueue once per alert id, head, done."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r
        self._enqueue = r.register_script(_ENQUEUE)
        self._done = r.register_script(_DONE)

    def put(self, a: Alert) -> bool:
        return bool(self._enqueue(keys=[OUTBOX, OUTBOX_DATA, SENT], args=[a.alert_id, encode(a)]))

    def head(self) -> Alert | None:
        while True:
            aid = self.r.lindex(OUTBOX, 0)
            if aid is None:
                return None
            raw = self.r.hget(OUTBOX_DATA, aid)
            if raw is None:  # inconsistent leftover: drop the id
                self.r.lrem(OUTBOX, 1, aid)
                continue
            return decode(raw, Alert)  # type: ignore[return-value]

    def done(self, alert_id: str) -> None:
        self._done(keys=[OUTBOX, OUTBOX_DATA, SENT], args=[alert_id])

    def fail(self, alert_id: str, reason: str) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(FAILED, alert_id, reason)
        pipe.lrem(OUTBOX, 1, alert_id)
        pipe.hdel(OUTBOX_DATA, alert_id)
        pipe.execute()

    def size(self) -> int:
        return int(self.r.llen(OUTBOX))


class SlackSender:
    """Posts alerts with slack-sdk; honours 429 Retry-After; backs off on 5xx/connection errors."""

    def __init__(self, client: Any, channel: str, rate_per_min: int = 20, max_attempts: int = 5, backoff_s: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.channel = channel
        self.min_interval = 60.0 / rate_per_min if rate_per_min > 0 else 0.0
        self.max_attempts = max(1, max_attempts)
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.monotonic = monotonic
        self._last_post = -1e18
        self.next_try = 0.0  # monotonic time before which the outbox is not drained (after an outage)
        self._fail_streak = 0

    def post(self, a: Alert) -> str:
        """"ok", "transient" (left in the outbox) or "permanent:<error>"."""
        from slack_sdk.errors import SlackApiError

        text, blocks = blocks_for(a)
        for attempt in range(1, self.max_attempts + 1):
            wait = self._last_post + self.min_interval - self.monotonic()
            if wait > 0:
                self.sleep(wait)
            self._last_post = self.monotonic()
            try:
                self.client.chat_postMessage(channel=self.channel, text=text, blocks=blocks)
                self._fail_streak = 0
                return "ok"
            except SlackApiError as exc:
                status = getattr(exc.response, "status_code", 0)
                err = str((exc.response.data or {}).get("error", "")) if isinstance(getattr(exc.response, "data", None), dict) else ""
                if status == 429:
                    retry_after = float(exc.response.headers.get("Retry-After", exc.response.headers.get("retry-after", 1)))
                    log.warning("slack rate limited; retrying %s after %.0fs", a.alert_id, retry_after)
                    self.sleep(retry_after)
                    continue
                if status >= 500 or status == 0:
                    return self._transient(a, f"http {status}", attempt)
                if err in PERMANENT:
                    return f"permanent:{err}"
                return self._transient(a, f"http {status} {err}", attempt)
            except Exception as exc:  # noqa: BLE001 - connection refused, timeouts: Slack is away
                return self._transient(a, type(exc).__name__, attempt)
        return "transient"

    def _transient(self, a: Alert, why: str, attempt: int) -> str:
        self._fail_streak += 1
        delay = min(self.backoff_s * 2 ** (self._fail_streak - 1), 60.0)
        self.next_try = self.monotonic() + delay
        log.warning("slack unavailable (%s) for %s; %s stays in the outbox, next try in %.1fs", why, a.alert_id,
                    a.alert_id, delay)
        return "transient"


def drain(outbox: Outbox, sender: SlackSender, limit: int = 1000) -> int:
    """Post the outbox in order until it is empty, Slack fails, or ``limit``. Returns posts made."""
    if sender.monotonic() < sender.next_try:
        return 0
    n = 0
    while n < limit:
        a = outbox.head()
        if a is None:
            break
        res = sender.post(a)
        if res == "ok":
            outbox.done(a.alert_id)
            n += 1
        elif res.startswith("permanent:"):
            log.error("slack refused alert %s (%s); kept in %s", a.alert_id, res, FAILED)
            outbox.fail(a.alert_id, res)
        else:
            break
    return n


def make_client(token: str, base_url: str) -> Any:
    from slack_sdk import WebClient

    if not base_url.endswith("/"):
        base_url += "/"
    return WebClient(token=token, base_url=base_url, timeout=10, retry_handlers=[])


def build_parts(ctx: ServiceContext, sleep: Callable[[float], None] = time.sleep) -> tuple[Outbox, SlackSender | None]:
    core, a = ctx.settings.core, ctx.settings.analytics
    outbox = Outbox(ctx.r)
    token = core.slack_bot_token.get_secret_value() if core.slack_bot_token else ""
    if not token:
        return outbox, None
    sender = SlackSender(make_client(token, core.slack_base_url), core.slack_channel, a.slack_rate_per_min,
                         a.slack_max_attempts, a.slack_backoff_s, sleep=sleep)
    return outbox, sender


def build(ctx: ServiceContext):
    outbox, sender = build_parts(ctx)
    ctx.extra["notifier"] = (outbox, sender)

    def handle(msg: Message, d: Delivery) -> list[Emit]:
        if not isinstance(msg, Alert):
            return []
        if sender is None:
            log.info("alert (Slack not configured): %s", json.dumps({"id": msg.alert_id, "severity": msg.severity,
                                                                    "kind": msg.kind, "title": msg.title}))
            return []
        outbox.put(msg)
        drain(outbox, sender)
        return []

    return handle


def on_idle(ctx: ServiceContext) -> list[Emit]:
    outbox, sender = ctx.extra.get("notifier", (None, None))  # type: ignore[misc]
    if outbox is not None and sender is not None and outbox.size():
        drain(outbox, sender)
    return []


SPEC = ServiceSpec(name=SVC, streams=[ALERTS], build=build, on_idle=on_idle)


def main() -> int:
    return run_service(SPEC)


if __name__ == "__main__":
    sys.exit(main())
