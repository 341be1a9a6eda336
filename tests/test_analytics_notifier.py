"""Slack notifier with the real slack-sdk against a local stand-in of the Slack Web API."""

from __future__ import annotations

import logging

import pytest
import redis

from services.analytics.notifier import (
    OUTBOX,
    POSTED,
    SENT,
    SPEC,
    Outbox,
    SlackSender,
    drain,
    make_client,
)
from services.analytics.slack_format import blocks_for
from shared.alerts import make_alert
from shared.bus import Bus
from shared.service import make_consumer, make_context
from shared.settings import load_settings
from shared.streams import ALERTS
from standins.slack_api import SlackStandIn

TOKEN = "xoxb-secret-test-token-123"


class FakeTime:
    """Injected clock: sleeps advance it instantly and are recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s

    def monotonic(self) -> float:
        return self.now


def alert(i: int, kind: str = "entry_blocked"):
    return make_alert("risk", kind, f"Blocked entry {i}", severity="warning", text=f"reason {i}",
                      fields={"symbol": f"S{i}", "reason": "LIMIT_GROSS_EXPOSURE"}, trade_date="2018-10-01")


@pytest.fixture
def slack():
    with SlackStandIn(token=TOKEN) as s:
        yield s


def sender_for(slack: SlackStandIn, t: FakeTime, rate: int = 600) -> SlackSender:
    return SlackSender(make_client(TOKEN, slack.base_url), "#avwap", rate_per_min=rate, max_attempts=5, backoff_s=1.0,
                       sleep=t.sleep, monotonic=t.monotonic)


def test_block_kit_format() -> None:
    text, blocks = blocks_for(alert(1))
    assert text == "[warning] Blocked entry 1"
    assert [b["type"] for b in blocks] == ["header", "section", "section", "context"]
    assert {"type": "mrkdwn", "text": "*symbol*\nS1"} in blocks[2]["fields"]
    from shared.schemas import replace

    _, with_runbook = blocks_for(replace(alert(1), runbook="reconciliation-mismatch"))
    assert "docs/runbook.md#reconciliation-mismatch" in with_runbook[-1]["elements"][0]["text"]


def test_posts_in_order_dedups_and_honours_retry_after(slack: SlackStandIn, real_redis: redis.Redis) -> None:
    t = FakeTime()
    box, sender = Outbox(real_redis), sender_for(slack, t)
    for i in range(3):
        assert box.put(alert(i))
    assert not box.put(alert(1))  # same alert id: queued once
    slack.rate_limit(1, retry_after=7)
    assert drain(box, sender) == 3
    assert 7.0 in t.sleeps  # Retry-After honoured
    assert [m["text"] for m in slack.messages] == [f"[warning] Blocked entry {i}" for i in range(3)]
    assert slack.messages[0]["channel"] == "#avwap" and slack.messages[0]["blocks"][0]["type"] == "header"
    assert box.size() == 0 and real_redis.scard(SENT) == 3
    assert not box.put(alert(0))  # already sent: never posted twice


def test_outage_keeps_everything_and_backlog_is_posted_on_recovery(slack: SlackStandIn, real_redis: redis.Redis) -> None:
    t = FakeTime()
    box, sender = Outbox(real_redis), sender_for(slack, t)
    slack.mode = "down"
    for i in range(4):
        box.put(alert(i))
        drain(box, sender)
    assert box.size() == 4 and slack.messages == []
    assert drain(box, sender) == 0  # backing off: not even tried
    slack.mode = "ok"
    t.now += 120  # the backoff has passed
    assert drain(box, sender) == 4
    assert [m["text"] for m in slack.messages] == [f"[warning] Blocked entry {i}" for i in range(4)]
    assert box.size() == 0


def test_rate_limit_spaces_posts(slack: SlackStandIn, real_redis: redis.Redis) -> None:
    t = FakeTime()
    box, sender = Outbox(real_redis), sender_for(slack, t, rate=20)  # one post per 3 s
    for i in range(3):
        box.put(alert(i))
    assert drain(box, sender) == 3
    assert sum(t.sleeps) == pytest.approx(6.0)


def test_worker_consumes_alerts_through_an_outage_and_never_logs_the_token(
        slack: SlackStandIn, redis_url: str, real_redis: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    settings = load_settings(redis_url=redis_url, slack_bot_token=TOKEN, slack_base_url=slack.base_url,
                             slack_channel="#ops", slack_rate_per_min=6000, slack_backoff_s=0.0, bus_block_ms=50)
    ctx = make_context("notifier", settings, real_redis)
    consumer = make_consumer(SPEC, ctx, consumer_name="n1")
    bus = Bus(real_redis)
    slack.mode = "down"
    for i in range(3):
        bus.publish(ALERTS, alert(i))
    bus.publish(ALERTS, alert(0))  # a duplicate publish
    consumer.run(install_signals=False, until_idle=True)
    assert real_redis.xpending(ALERTS, "notifier")["pending"] == 0  # acked: safe in the outbox
    assert real_redis.llen(OUTBOX) == 3 and slack.messages == []
    slack.mode = "ok"
    consumer.handler.idle()
    assert [m["text"] for m in slack.messages] == [f"[warning] Blocked entry {i}" for i in range(3)]
    assert all(m["channel"] == "#ops" for m in slack.messages)
    text = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    assert TOKEN not in text


def test_no_token_logs_only(redis_url: str, real_redis: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    settings = load_settings(redis_url=redis_url, bus_block_ms=50)
    ctx = make_context("notifier", settings, real_redis)
    consumer = make_consumer(SPEC, ctx, consumer_name="n1")
    Bus(real_redis).publish(ALERTS, alert(5))
    consumer.run(install_signals=False, until_idle=True)
    assert real_redis.llen(OUTBOX) == 0
    assert "Blocked entry 5" in caplog.text


def test_notifier_process_survives_slack_outage_and_sigkill(slack: SlackStandIn, redis_url: str, real_redis: redis.Redis,
                                                            tmp_path) -> None:
    """`python -m services.analytics.notifier`: alerts published while Slack is down and the
    notifier is SIGKILLed are all posted, once, after a restart when Slack is back."""
    import signal
    import time

    from avwap.procs import ServiceProcs

    def until(pred, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.05)
        raise AssertionError("condition not met in time")

    procs = ServiceProcs(redis_url, env={"SLACK_BOT_TOKEN": TOKEN, "SLACK_BASE_URL": slack.base_url,
                                         "SLACK_BACKOFF_S": "0.2", "BUS_BLOCK_MS": "100", "LOG_LEVEL": "DEBUG"},
                         log_dir=tmp_path / "logs")
    try:
        slack.mode = "down"
        procs.start("analytics.notifier")
        procs.wait_ready()
        bus = Bus(real_redis)
        for i in range(3):
            bus.publish(ALERTS, alert(i))
        until(lambda: real_redis.llen(OUTBOX) == 3 and real_redis.xpending(ALERTS, "notifier")["pending"] == 0)
        until(lambda: sum(1 for _, s in slack.calls if s == 503) >= 2)  # it kept trying
        procs.kill("analytics.notifier-0", signal.SIGKILL)
        assert slack.messages == []
        slack.mode = "ok"
        bus.publish(ALERTS, alert(3))
        procs.start("analytics.notifier")
        until(lambda: len(slack.messages) == 4)
        assert [m["text"] for m in slack.messages] == [f"[warning] Blocked entry {i}" for i in range(4)]
    finally:
        codes = procs.stop_all()
    assert codes["analytics.notifier-0"] == 0
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "logs").glob("*.log"))
    assert "slack unavailable" in logs and TOKEN not in logs
    assert len(slack.messages) == 4


# -- the daily report's chart: files_upload_v2 against the stand-in ------------------------------
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8  # the bytes only have to arrive intact


def report_alert(root, date: str = "2018-10-01", with_file: bool = True):
    chart = f"reports/{date}/equity.png"
    if with_file:
        p = root / chart
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(PNG)
    return make_alert("analytics", "daily_report", f"Daily report {date}", severity="info", text="report",
                      fields={"equity": "100000.00", "chart": chart}, trade_date=date, dedup=date)


def chart_sender(slack: SlackStandIn, t: FakeTime, root) -> SlackSender:
    return SlackSender(make_client(TOKEN, slack.base_url), "#avwap", rate_per_min=600, max_attempts=5, backoff_s=1.0,
                       sleep=t.sleep, monotonic=t.monotonic, artifacts_dir=str(root))


def test_daily_report_posts_the_message_then_uploads_the_chart(slack: SlackStandIn, real_redis: redis.Redis,
                                                               tmp_path) -> None:
    from standins.slack_api import channel_id

    t = FakeTime()
    box = Outbox(real_redis)
    box.put(report_alert(tmp_path))
    assert drain(box, chart_sender(slack, t, tmp_path)) == 1
    (msg,) = slack.messages
    assert msg["text"] == "[info] Daily report 2018-10-01"
    fields = {f["text"] for b in msg["blocks"] if b["type"] == "section" and "fields" in b for f in b["fields"]}
    assert "*chart*\nattached below" in fields and "*equity*\n100000.00" in fields
    (f,) = slack.files
    assert f["data"] == PNG and f["channel"] == channel_id("#avwap")  # the channel ID the message answered with
    assert f["filename"] == "2018-10-01-equity.png" and "Daily report 2018-10-01" in f["title"]
    steps = [p.rsplit("/", 1)[-1] for p, s in slack.calls if s == 200]
    assert steps[0] == "chat.postMessage" and steps[1] == "files.getUploadURLExternal"
    assert steps[-1] == "files.completeUploadExternal" and box.size() == 0 and real_redis.hlen(POSTED) == 0


def test_a_failed_upload_is_retried_without_posting_the_message_twice(slack: SlackStandIn, real_redis: redis.Redis,
                                                                      tmp_path) -> None:
    t = FakeTime()
    box = Outbox(real_redis)
    box.put(report_alert(tmp_path))
    box.put(alert(1))
    slack.fail_uploads = 1  # the upload POST answers 500 once
    assert drain(box, chart_sender(slack, t, tmp_path)) == 0
    assert len(slack.messages) == 1 and slack.files == [] and box.size() == 2  # the alert stays at the head
    assert real_redis.hget(POSTED, box.head().alert_id)  # its message is recorded as posted
    # a restart (new objects, same Redis) after the backoff: only the chart goes, then the next alert
    t.now += 120
    assert drain(Outbox(real_redis), chart_sender(slack, t, tmp_path)) == 2
    assert [m["text"] for m in slack.messages] == ["[info] Daily report 2018-10-01", "[warning] Blocked entry 1"]
    assert len(slack.files) == 1 and slack.files[0]["data"] == PNG and box.size() == 0


def test_chart_upload_honours_retry_after_and_outages(slack: SlackStandIn, real_redis: redis.Redis, tmp_path) -> None:
    t = FakeTime()
    box = Outbox(real_redis)
    box.put(report_alert(tmp_path))
    sender = chart_sender(slack, t, tmp_path)
    slack.mode = "down"
    assert drain(box, sender) == 0 and slack.messages == []
    slack.mode = "ok"
    t.now += 120
    slack.rate_limit(2, retry_after=4)  # the message call is limited twice, then passes
    assert drain(box, sender) == 1
    assert t.sleeps.count(4.0) == 2 and len(slack.messages) == 1 and len(slack.files) == 1


def test_missing_chart_or_refused_upload_never_blocks_the_outbox(slack: SlackStandIn, real_redis: redis.Redis,
                                                                 tmp_path) -> None:
    t = FakeTime()
    box = Outbox(real_redis)
    box.put(report_alert(tmp_path, "2018-10-01", with_file=False))
    assert drain(box, chart_sender(slack, t, tmp_path)) == 1
    fields = {f["text"] for b in slack.messages[0]["blocks"] if "fields" in b for f in b["fields"]}
    assert "*chart*\nnot available (reports/2018-10-01/equity.png not found)" in fields and slack.files == []
    slack.refuse_files = "missing_scope"  # a token without files:write
    box.put(report_alert(tmp_path, "2018-10-02"))
    assert drain(box, chart_sender(slack, t, tmp_path)) == 1
    assert len(slack.messages) == 2 and slack.files == [] and box.size() == 0
    from services.analytics.notifier import FAILED

    assert real_redis.hvals(FAILED) == [b"chart permanent:missing_scope"]
    outside = make_alert("analytics", "daily_report", "x", fields={"chart": "../../etc/passwd"})
    box.put(outside)
    assert drain(box, chart_sender(slack, t, tmp_path)) == 1 and len(slack.files) == 0
    assert "refused (outside ARTIFACTS_DIR)" in str(slack.messages[-1]["blocks"])


def test_runbook_links_are_rendered_robustly() -> None:
    from services.analytics.slack_format import runbook_link, runbook_target

    assert runbook_target("reconciliation-mismatch") == "docs/runbook.md#reconciliation-mismatch"
    assert runbook_target("#reconciliation-mismatch") == "docs/runbook.md#reconciliation-mismatch"
    assert runbook_target(" Reconciliation Mismatch ") == "docs/runbook.md#reconciliation-mismatch"
    assert runbook_target("docs/executor.md#modes") == "docs/executor.md#modes"
    assert runbook_target("executor.md#modes") == "docs/executor.md#modes"
    assert runbook_target("https://wiki.example/avwap#x") == "https://wiki.example/avwap#x"
    assert runbook_target("") == "" and runbook_link("") == ""
    assert runbook_link("candidates-missing") == "runbook: docs/runbook.md#candidates-missing"
    assert runbook_link("candidates-missing", "https://github.com/o/avwap/blob/main/") == (
        "<https://github.com/o/avwap/blob/main/docs/runbook.md#candidates-missing|runbook: docs/runbook.md#candidates-missing>")
    from shared.schemas import replace

    _, blocks = blocks_for(replace(alert(1), runbook="docs/executor.md#modes"), "https://h/")
    assert "<https://h/docs/executor.md#modes|runbook: docs/executor.md#modes>" in blocks[-1]["elements"][0]["text"]
