"""Slack notifier: ``python -m services.analytics.notifier`` (consumer group ``notifier`` on avwap:alerts
and avwap:clock).

Every alert (execution decisions, blocked entries, reconciliation mismatches, heartbeats, the
daily report of analytics) goes first into a Redis outbox (atomically, de-duplicated on
``alert_id``), then the message is acked; the outbox is drained in order with the real
slack-sdk ``WebClient`` (``base_url`` = ``SLACK_BASE_URL``). A 429 sleeps ``Retry-After`` and
retries; a 5xx or a connection error backs off and leaves the alert at the head of the outbox,
so a Slack outage loses nothing: the backlog is posted when Slack answers again.
Client-side rate limit: ``SLACK_RATE_PER_MIN`` Slack calls per minute. No ``SLACK_BOT_TOKEN``:
alerts are logged only. The token is never logged (slack_sdk's own logger is kept at WARNING).

An alert with a ``chart`` field (the daily report's ``reports/D/equity.png``, relative to
ARTIFACTS_DIR) is delivered in two steps: the Block Kit message, then the chart with
``files_upload_v2`` into the same channel. The message's channel and ts are recorded in Redis
once it is posted, so a retry after a failed upload (or a restart) uploads the chart without
posting the message twice; the alert leaves the outbox only when both are done.

The notifier also owns the heartbeat watchdog (``watchdog.py``): every ``HEARTBEAT_CHECK_S`` it
reads the live ``avwap:hb:*`` keys and raises ``heartbeat_missing`` / ``heartbeat_recovered``
alerts (state and alerts in one unit of work, so replicas raise each transition once), and at
each session's PRE_MARKET it posts the ``heartbeat`` system-alive summary.

The message of an alert (Block Kit, runbook links) is ``slack_format.py``.

With ``SLACK_APP_TOKEN`` it also serves the ``/avwap`` commands over Socket Mode (``slack_control.py``):
this container is the only one with Slack tokens; the commands reach the services through Redis.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import redis

from shared.bus import Delivery, Emit, live_consumers
from shared.redis_conn import pooled_client
from shared.schemas import Alert, Message, SessionEvent, decode, encode
from shared.service import ServiceContext, ServiceSpec, Worker, run_service
from shared.streams import ALERTS, CLOCK, CONTROL, DLQ, state_key
from shared.unit_of_work import attempts

from .slack_format import blocks_for
from .watchdog import WatchState, observe, summary, watched

log = logging.getLogger(__name__)
logging.getLogger("slack_sdk").setLevel(logging.WARNING)

SVC = "notifier"
OUTBOX = state_key(SVC, "outbox")  # list of alert ids, oldest first
OUTBOX_DATA = state_key(SVC, "outbox_data")  # hash alert id -> alert JSON
SENT = state_key(SVC, "sent")  # set of alert ids posted
FAILED = state_key(SVC, "failed")  # hash alert id -> reason (permanent Slack errors)
POSTED = state_key(SVC, "posted")  # hash alert id -> {"channel", "ts"} of its message while its chart is pending
WATCH = state_key(SVC, "watch")  # the watchdog's WatchState (JSON)
MAX_CHART_BYTES = 20 * 1024 * 1024

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
redis.call('HDEL', KEYS[4], ARGV[1])
return 1
"""

PERMANENT = ("invalid_auth", "not_authed", "account_inactive", "channel_not_found", "not_in_channel",
             "is_archived", "invalid_blocks", "msg_too_long", "token_revoked", "missing_scope",
             "not_allowed_token_type", "file_uploads_disabled")


def chart_file(a: Alert, artifacts_dir: str) -> tuple[Path | None, str]:
    """(the chart to upload, or None; the note shown in the message) of an alert with a ``chart`` field."""
    rel = a.fields.get("chart", "")
    if not rel:
        return None, ""
    root = Path(artifacts_dir).resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        return None, f"refused (outside ARTIFACTS_DIR): {rel}"
    try:
        size = path.stat().st_size
    except OSError:
        return None, f"not available ({rel} not found)"
    if size > MAX_CHART_BYTES:
        return None, f"not attached ({rel} is {size} bytes)"
    return path, "attached below"


class Outbox:
    """The Redis outbox: enqueue once per alert id, head, progress of a two-step delivery, done."""

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

    def posted(self, alert_id: str) -> dict[str, str] | None:
        raw = self.r.hget(POSTED, alert_id)
        return json.loads(raw) if raw else None

    def mark_posted(self, alert_id: str, channel: str, ts: str) -> None:
        self.r.hset(POSTED, alert_id, json.dumps({"channel": channel, "ts": ts}))

    def done(self, alert_id: str) -> None:
        self._done(keys=[OUTBOX, OUTBOX_DATA, SENT, POSTED], args=[alert_id])

    def fail(self, alert_id: str, reason: str) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(FAILED, alert_id, reason)
        pipe.lrem(OUTBOX, 1, alert_id)
        pipe.hdel(OUTBOX_DATA, alert_id)
        pipe.hdel(POSTED, alert_id)
        pipe.execute()

    def size(self) -> int:
        return int(self.r.llen(OUTBOX))


class SlackSender:
    """Posts alerts (and their charts) with slack-sdk; honours 429 Retry-After; backs off on 5xx/connection errors."""

    def __init__(self, client: Any, channel: str, rate_per_min: int = 20, max_attempts: int = 5, backoff_s: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep, monotonic: Callable[[], float] = time.monotonic,
                 artifacts_dir: str = "artifacts", runbook_base: str = "") -> None:
        self.client = client
        self.channel = channel
        self.min_interval = 60.0 / rate_per_min if rate_per_min > 0 else 0.0
        self.max_attempts = max(1, max_attempts)
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.monotonic = monotonic
        self.artifacts_dir = artifacts_dir
        self.runbook_base = runbook_base
        self._last_call = -1e18
        self.next_try = 0.0  # monotonic time before which the outbox is not drained (after an outage)
        self._fail_streak = 0

    def deliver(self, a: Alert, outbox: Outbox) -> str:
        """"ok", "transient" (left in the outbox) or "permanent:<error>" (the message could not be posted)."""
        chart, note = chart_file(a, self.artifacts_dir)
        progress = outbox.posted(a.alert_id) if chart is not None else None
        if progress is None:
            text, blocks = blocks_for(a, self.runbook_base, note)
            res, resp = self._call(a, lambda: self.client.chat_postMessage(channel=self.channel, text=text, blocks=blocks))
            if res != "ok":
                return res
            if chart is None:
                return "ok"
            progress = {"channel": str(resp.get("channel") or self.channel), "ts": str(resp.get("ts") or "")}
            outbox.mark_posted(a.alert_id, progress["channel"], progress["ts"])
        assert chart is not None
        title = f"{a.title}: {chart.stem}"
        res, _ = self._call(a, lambda: self.client.files_upload_v2(
            file=str(chart), filename=f"{a.trade_date or 'chart'}-{chart.name}", title=title,
            channel=progress["channel"], initial_comment=f"{title} ({a.fields.get('chart', '')})"))
        if res.startswith("permanent:"):  # the message is out; the chart cannot be: say so, do not block the outbox
            log.error("slack refused the chart of %s (%s); the message was posted", a.alert_id, res)
            outbox.r.hset(FAILED, a.alert_id, f"chart {res}")
            return "ok"
        return res

    def _call(self, a: Alert, fn: Callable[[], Any]) -> tuple[str, Any]:
        """Run one Slack call with the rate limit, Retry-After and backoff policy."""
        from slack_sdk.errors import SlackApiError

        for _ in range(self.max_attempts):
            wait = self._last_call + self.min_interval - self.monotonic()
            if wait > 0:
                self.sleep(wait)
            self._last_call = self.monotonic()
            try:
                resp = fn()
                self._fail_streak = 0
                return "ok", resp
            except SlackApiError as exc:
                status = getattr(exc.response, "status_code", 0)
                data = getattr(exc.response, "data", None)
                err = str(data.get("error", "")) if isinstance(data, dict) else ""
                if status == 429:
                    retry_after = float(exc.response.headers.get("Retry-After", exc.response.headers.get("retry-after", 1)))
                    log.warning("slack rate limited; retrying %s after %.0fs", a.alert_id, retry_after)
                    self.sleep(retry_after)
                    continue
                if status >= 500 or status == 0:
                    return self._transient(a, f"http {status}"), None
                if err in PERMANENT:
                    return f"permanent:{err}", None
                return self._transient(a, f"http {status} {err}"), None
            except Exception as exc:  # noqa: BLE001 - connection refused, timeouts, a failed upload POST: Slack is away
                return self._transient(a, type(exc).__name__), None
        return "transient", None

    def _transient(self, a: Alert, why: str) -> str:
        self._fail_streak += 1
        delay = min(self.backoff_s * 2 ** (self._fail_streak - 1), 60.0)
        self.next_try = self.monotonic() + delay
        log.warning("slack unavailable (%s); %s stays in the outbox, next try in %.1fs", why, a.alert_id, delay)
        return "transient"


def drain(outbox: Outbox, sender: SlackSender, limit: int = 1000) -> int:
    """Deliver the outbox in order until it is empty, Slack fails, or ``limit``. Returns deliveries made."""
    if sender.monotonic() < sender.next_try:
        return 0
    n = 0
    while n < limit:
        a = outbox.head()
        if a is None:
            break
        res = sender.deliver(a, outbox)
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
                         a.slack_max_attempts, a.slack_backoff_s, sleep=sleep, artifacts_dir=core.artifacts_dir,
                         runbook_base=a.slack_runbook_base_url)
    return outbox, sender


# -- heartbeats (the shell of watchdog.py) ----------------------------------------------------
def live_heartbeats(r: redis.Redis) -> dict[str, int]:
    """group -> live consumers, from the ``avwap:hb:<group>:<consumer>`` keys."""
    out: dict[str, int] = {}
    for group, _ in live_consumers(r):
        out[group] = out.get(group, 0) + 1
    return out


def check_heartbeats(ctx: ServiceContext, now_ns: int | None = None) -> list[Alert]:
    """One watchdog check: read the heartbeats, advance the state, publish its alerts (one unit of work)."""
    a = ctx.settings.analytics
    expected = watched(a.heartbeat_watch_services)
    if not expected:
        return []
    now = ctx.clock.now_ns() if now_ns is None else now_ns
    live = live_heartbeats(ctx.r)
    for uow in attempts(ctx.r, SVC, None, watch=[WATCH], maxlen=ctx.settings.core.bus_maxlen, retries=50):
        with uow:
            raw = uow.r.get(WATCH)
            state = msgspec.json.decode(raw, type=WatchState) if raw else WatchState()  # type: ignore[arg-type]
            new, alerts = observe(state, live, expected, now, a.heartbeat_grace_s)
            uow.set(WATCH, msgspec.json.encode(new))
            for al in alerts:
                uow.emit(ALERTS, al)
    return alerts


class Notifier(Worker):
    """The notifier: ``handle`` posts alerts (through the outbox) and the PRE_MARKET summary; ``idle`` drains
    the outbox and runs the heartbeat watchdog every HEARTBEAT_CHECK_S; ``start``/``stop`` open and close the
    Socket Mode client of the ``/avwap`` commands (``socket_mode``, None when off)."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.outbox, self.sender = build_parts(ctx)
        self.next_watch = 0.0
        self.socket_mode: Any = None

    def handle(self, msg: Message, d: Delivery) -> list[Emit]:
        ctx, outbox = self.ctx, self.outbox
        if isinstance(msg, SessionEvent):
            if msg.phase != "PRE_MARKET" or not ctx.settings.analytics.heartbeat_summary:
                return []
            expected = watched(ctx.settings.analytics.heartbeat_watch_services)
            live = live_heartbeats(ctx.r)
            return [(ALERTS, summary(msg.trade_date, msg.ts, live, expected, int(ctx.r.xlen(DLQ)), outbox.size()))]
        if not isinstance(msg, Alert):
            return []
        if self.sender is None:
            log.info("alert (Slack not configured): %s", json.dumps({"id": msg.alert_id, "severity": msg.severity,
                                                                    "kind": msg.kind, "title": msg.title}))
            return []
        outbox.put(msg)
        drain(outbox, self.sender)
        return []

    def idle(self) -> list[Emit]:
        if self.sender is not None and self.outbox.size():
            drain(self.outbox, self.sender)
        now = time.monotonic()
        if now >= self.next_watch:
            self.next_watch = now + self.ctx.settings.analytics.heartbeat_check_s
            check_heartbeats(self.ctx)
        return []

    def start(self) -> list[Emit]:
        """With ``SLACK_APP_TOKEN`` (and the bot token): serve ``/avwap`` commands over Socket Mode."""
        core, a = self.ctx.settings.core, self.ctx.settings.analytics
        app = core.slack_app_token.get_secret_value() if core.slack_app_token else ""
        bot = core.slack_bot_token.get_secret_value() if core.slack_bot_token else ""
        if app and bot:
            from .slack_control import start_socket_mode

            base = core.slack_base_url if core.slack_base_url.endswith("/") else core.slack_base_url + "/"
            self.socket_mode = start_socket_mode(pooled_client(self.ctx.r), app, bot, base, core.slack_channel, a.slack_allowed_users,
                                                 a.slack_confirm_ttl_s)
            log.info("slack commands: Socket Mode connected (%d allowed users)", len(a.slack_allowed_users))
        elif app:
            log.warning("slack commands: SLACK_APP_TOKEN is set but SLACK_BOT_TOKEN is not; commands are off")
        return []

    def stop(self) -> None:
        client, self.socket_mode = self.socket_mode, None
        if client is not None:
            client.close()


SPEC = ServiceSpec(name=SVC, streams=[ALERTS, CLOCK], build=Notifier, produces=[ALERTS, CONTROL])


def main() -> int:
    return run_service(SPEC)


if __name__ == "__main__":
    sys.exit(main())
