"""One Slack alert per execution decision (submitted, filled, rejected, cancelled, blocked), with stable
ids, and every runbook link naming a section that exists in docs/runbook.md. (Refused to start: one
alert, the same id for the same refusal: tests/test_executor_process.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.executor import core
from services.executor.alerts import (
    RUNBOOK_BLOCKED,
    RUNBOOK_RECONCILIATION,
    RUNBOOK_REFUSED,
    RUNBOOK_REJECTED,
    alerts_for,
)
from services.executor.core import Ctx, OrderRec
from shared.ids import stable_id
from shared.schemas import Alert
from tests.executor_helpers import entry, settings_for
from tests.test_runbook_anchors import anchors

ROOT = Path(__file__).resolve().parent.parent
D1 = "2018-03-01"


def runbook_anchors() -> set[str]:
    return anchors(ROOT / "docs" / "runbook.md")


def decisions() -> list:
    it = entry(D1, "AAA", 100, level=50.0, stop=48.0)
    rec = OrderRec(client_order_id="av-1", intent_id=it.intent_id, kind="entry", symbol="AAA", side="buy", qty=100,
                   entry_stop=48.0, trade_date=D1, broker_order_id="b-1")
    ctx = Ctx(ts=1, trade_date=D1)
    ev = [core.order_event(rec, "accepted", ctx, "PAPER_SIM"),
          core.order_event(rec, "replaced", ctx, "PAPER_SIM", reason="replaces av-0"),
          core.order_event(rec, "partially_filled", ctx, "PAPER_SIM", trade_id="t1", fill_qty=40, fill_price=50.1),
          core.order_event(rec, "filled", ctx, "PAPER_SIM", trade_id="t2", fill_qty=60, fill_price=50.2),
          core.order_event(rec, "rejected", ctx, "PAPER_SIM", reason="BROKER_REJECTED: HTTP 422 x"),
          core.order_event(rec, "cancelled", ctx, "PAPER_SIM", reason="exit_intent=x")]
    ev.append(core.reject_entry(it, ["KILL_SWITCH_ON"], 2, detail="blocked at submit time"))
    ev.append(core.reject_entry(entry(D1, "BBB", 10, 20.0, 19.0), ["ENTRY_NOT_CONFIRMED"], 3))
    return ev


def test_one_alert_per_decision_with_the_right_kind_severity_and_runbook() -> None:
    evs = decisions()
    alerts = alerts_for(evs)
    assert len(alerts) == len(evs)
    assert [(a.kind, a.severity, a.runbook) for a in alerts] == [
        ("order_submitted", "info", ""), ("order_submitted", "info", ""), ("order_filled", "info", ""),
        ("order_filled", "info", ""), ("order_rejected", "warning", RUNBOOK_REJECTED), ("order_cancelled", "info", ""),
        ("entry_blocked", "warning", RUNBOOK_BLOCKED), ("entry_blocked", "info", "")]
    assert "40@50.1" in alerts[2].title and "KILL_SWITCH_ON" in alerts[6].title and alerts[6].text == "blocked at submit time"
    assert all(a.source == "executor" and a.trade_date == D1 for a in alerts)


def test_alert_ids_are_stable_and_distinct() -> None:
    evs = decisions()
    first, again = alerts_for(evs), alerts_for(decisions())
    assert [a.alert_id for a in first] == [a.alert_id for a in again]  # a re-derived decision: the same alert
    assert len({a.alert_id for a in first}) == len(first)
    ids = [e.event_id for e in evs[:6]] + [e.rejection_id for e in evs[6:]]
    assert [a.alert_id for a in first] == [stable_id("al", "executor", i) for i in ids]


@pytest.mark.parametrize("anchor", [RUNBOOK_REFUSED, RUNBOOK_RECONCILIATION, RUNBOOK_BLOCKED, RUNBOOK_REJECTED,
                                    "executor-live-feed"])
def test_every_runbook_link_of_the_executor_names_a_runbook_section(anchor: str) -> None:
    from services.analytics.slack_format import blocks_for

    assert anchor in runbook_anchors()
    _, blocks = blocks_for(make_alert_with(anchor))
    assert f"runbook: docs/runbook.md#{anchor}" in blocks[-1]["elements"][0]["text"]


def make_alert_with(anchor: str) -> Alert:
    from shared.alerts import make_alert

    return make_alert("executor", "k", "t", runbook=anchor)


def test_no_runbook_value_in_the_executor_is_a_path() -> None:
    """The old bug: runbook="docs/executor.md#modes" rendered as docs/runbook.md#docs/executor.md#modes."""
    for py in (ROOT / "services" / "executor").rglob("*.py"):
        for value in re.findall(r'runbook=["\']([^"\']*)["\']', py.read_text()):
            assert value == "" or value in runbook_anchors(), (py.name, value)


def test_a_session_raises_exactly_one_alert_per_decision(fake_redis, tmp_path: Path) -> None:
    from services.executor.settings import BrokerSettings
    from services.executor.worker import Executor
    from shared.service import make_context
    from shared.streams import ALERTS
    from tests.executor_helpers import daily, exit_intent, orders, read, rejections, session, stop_place

    ex = Executor(make_context("executor", settings_for("PAPER_SIM", tmp_path), fake_redis), BrokerSettings())
    d2 = "2018-03-02"
    msgs = [session(D1, "PRE_MARKET"), entry(D1, "AAA", 100, 50.0, 48.0), entry(D1, "BBB", 10, 20.0, 19.0),
            session(D1, "OPEN"), daily(D1, ("AAA", 50.5, 52.0, 50.0, 51.0), ("BBB", 19.0, 19.5, 18.5, 19.2)),
            session(D1, "CLOSE"), session(d2, "PRE_MARKET"),
            stop_place(d2, "AAA", 100, 47.0, session(d2, "WINDOW_OPEN").ts),
            exit_intent(d2, "AAA", 100, session(d2, "WINDOW_OPEN").ts + 1), daily(d2, ("AAA", 51.0, 52.0, 50.5, 51.5))]
    for m in msgs + msgs:  # everything twice: a redelivery decides nothing new
        ex.handle(m, None)
    decided = [e.event_id for e in orders(fake_redis)] + [r.rejection_id for r in rejections(fake_redis)]
    alerts = [a for a in read(fake_redis, ALERTS) if isinstance(a, Alert)]
    assert len(decided) == 7 and len(alerts) == len(decided)  # entry acc+fill, stop acc+cancel, exit acc+fill, BBB
    assert sorted(a.alert_id for a in alerts) == sorted(stable_id("al", "executor", i) for i in decided)
