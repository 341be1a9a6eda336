"""``/avwap`` over Socket Mode with the real slack-sdk ``SocketModeClient`` against the local Socket Mode and
Web API stand-ins, on real Redis: connection with the app token, envelope acks, the confirmation button with
a one-time expiring nonce, refusals (user not on the allowlist, another user's button, a used or expired
nonce), reconnect after a disconnect message and after a dropped connection, and the audit trail."""

from __future__ import annotations

import json
import time

import pytest
import redis

from services.analytics.slack_commands import CANCEL, CONFIRM, Command, parse
from services.analytics.slack_control import start_socket_mode
from shared import audit
from shared.breakers import BreakerBook, Trip, encode_book
from shared.bus import fields_of
from shared.controls import read_state
from shared.schemas import (
    BrokerOrder,
    BrokerPosition,
    BrokerSnapshot,
    FlattenRequest,
    OrderEvent,
    Rejection,
    decode,
)
from shared.streams import AUDIT_KEY, BREAKERS_KEY, BROKER, CONTROL, ORDERS, REJECTIONS
from standins.slack_api import SlackStandIn
from standins.slack_socket import SocketModeStandIn

BOT, APP = "xoxb-test-token", "xapp-test-token"
OP, OTHER_OP, STRANGER = "U0OPERATOR", "U0SECOND", "U0STRANGER"
TTL = 1.0


@pytest.fixture
def slack(real_redis: redis.Redis):
    with SocketModeStandIn() as sm, SlackStandIn(token=BOT, app_token=APP, socket=sm) as api:
        client = start_socket_mode(real_redis, APP, BOT, api.base_url, "#avwap", f"{OP},{OTHER_OP}", TTL)
        try:
            sm.wait_connected(1)
            yield sm, api
        finally:
            client.close()


def command(sm: SocketModeStandIn, user: str, text: str) -> dict:
    ack = sm.wait_ack(sm.slash_command(user, text))
    return ack.get("payload") or {}


def nonce_of(reply: dict) -> str:
    buttons = [e for b in reply["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [b["action_id"] for b in buttons] == [CONFIRM, CANCEL]
    assert buttons[0]["value"] == buttons[1]["value"]
    return buttons[0]["value"]


def click(sm: SocketModeStandIn, api: SlackStandIn, user: str, nonce: str, action: str = CONFIRM) -> str:
    before = len(api.messages)
    ack = sm.wait_ack(sm.block_action(user, action, nonce))
    assert set(ack) == {"envelope_id"}  # an interactive envelope is acked without a payload
    deadline = time.monotonic() + 10
    while len(api.messages) == before:
        assert time.monotonic() < deadline, "no outcome posted"
        time.sleep(0.02)
    return api.messages[-1]["text"]


def audit_kinds(r: redis.Redis) -> list[tuple[str, str]]:
    return [(d["kind"], d["actor"]) for d in (json.loads(x) for x in r.lrange(AUDIT_KEY, 0, -1))]


def test_parse() -> None:
    assert parse("halt  news out") == Command(verb="halt", reason="news out")
    assert parse("flatten aapl,msft gap") == Command(verb="flatten", target="AAPL,MSFT", reason="gap")
    assert parse("flatten all") == Command(verb="flatten", target="ALL", reason="via Slack")
    assert parse("rearm drawdown checked the fills") == Command(verb="rearm", target="drawdown", reason="checked the fills")
    assert isinstance(parse("rearm drawdown"), str) and isinstance(parse("rearm bogus x"), str)
    assert isinstance(parse("flatten"), str) and isinstance(parse("sell everything"), str)
    assert parse("") == Command(verb="help")


def test_slack_flow_end_to_end(slack, real_redis: redis.Redis) -> None:
    sm, api = slack
    r = real_redis
    # connection: apps.connections.open with the app-level token, hello, one open socket
    assert ("/api/apps.connections.open", 200) in api.calls and sm.connects == 1
    snap = BrokerSnapshot(snapshot_id="bs-1", mode="PAPER_SIM", trade_date="2019-02-11", ts=1, equity=100_000.0,
                          cash=90_000.0, buying_power=90_000.0,
                          positions=[BrokerPosition(symbol="AAPL", qty=10, avg_entry_price=170.0)],
                          open_orders=[BrokerOrder(client_order_id="av-1", broker_order_id="b1", symbol="AAPL", side="sell",
                                                   order_type="stop", qty=10, status="accepted", stop_price=165.0)])
    r.xadd(BROKER, fields_of(snap))
    r.xadd(ORDERS, fields_of(OrderEvent(event_id="ev-1", event="filled", mode="PAPER_SIM", intent_id="in-1",
                                        client_order_id="av-0", symbol="AAPL", side="buy", kind="entry", qty=10,
                                        filled_qty=10, fill_qty=10, fill_price=170.0, trade_date="2019-02-11", ts=1)))
    r.xadd(REJECTIONS, fields_of(Rejection(rejection_id="rj-1", source="risk", symbol="MSFT", trade_date="2019-02-11",
                                           reasons=["MAX_CONCURRENT_POSITIONS"])))
    st = command(sm, OP, "status")
    assert "*State:* ACTIVE" in st["text"] and "AAPL 10 @ 170.0 — stop 165.0 x10" in st["text"] and "*DLQ:* 0" in st["text"]
    assert "*Entries today:* AAPL 10@170.0" in st["text"] and "MSFT: MAX_CONCURRENT_POSITIONS" in st["text"]

    # refusal for a user not on the allowlist (the command and the button)
    refused = command(sm, STRANGER, "halt now")
    assert refused["text"].startswith("Refused") and "blocks" not in refused
    assert read_state(r).state == "ACTIVE"

    # a state change asks first; the button's nonce works once, for its user only
    ask = command(sm, OP, "halt broker outage")
    assert "Confirm: HALTED" in ask["text"] and read_state(r).state == "ACTIVE"
    nonce = nonce_of(ask)
    assert click(sm, api, STRANGER, nonce).startswith("Refused: <@U0STRANGER> may not")
    assert click(sm, api, OTHER_OP, nonce) == f"Refused: only <@{OP}> can confirm their command."
    assert read_state(r).state == "ACTIVE"
    out = click(sm, api, OP, nonce)  # wrong users' clicks did not use the nonce up
    assert "trading state HALTED (was ACTIVE)" in out
    view = read_state(r)
    assert view.state == "HALTED" and view.record.who == f"slack:{OP}" and view.record.source == "slack"
    assert click(sm, api, OP, nonce).startswith("Refused: that confirmation has expired or was already used")

    # an expired nonce is refused and changes nothing
    nonce = nonce_of(command(sm, OP, "resume all clear"))
    time.sleep(TTL + 0.3)
    assert "expired" in click(sm, api, OP, nonce) and read_state(r).state == "HALTED"
    # cancel
    nonce = nonce_of(command(sm, OP, "resume all clear"))
    assert click(sm, api, OP, nonce, CANCEL).startswith("Cancelled") and read_state(r).state == "HALTED"

    # reconnect: a disconnect message, then a dropped connection; commands still work afterwards
    sm.disconnect()
    sm.wait_connected(2, timeout_s=20)
    assert "*State:* HALTED" in command(sm, OP, "status")["text"]
    sm.drop()
    sm.wait_connected(3, timeout_s=30)
    assert sm.refused == 0

    # flatten, and a re-arm refused while nothing is tripped, then carried out once it is
    out = click(sm, api, OP, nonce_of(command(sm, OP, "flatten aapl earnings")))
    assert "flatten AAPL requested" in out and read_state(r).state == "REDUCING"
    req = [m for _, f in r.xrange(CONTROL) if isinstance(m := decode(f[b"data"]), FlattenRequest)]
    assert len(req) == 1 and req[0].symbols == ["AAPL"] and req[0].who == f"slack:{OP}"
    assert "not tripped" in click(sm, api, OP, nonce_of(command(sm, OP, "rearm drawdown looked at it")))
    r.set(BREAKERS_KEY, encode_book(BreakerBook(tripped={"drawdown": Trip(breaker="drawdown", ts=1, reason="dd")})))
    assert "re-armed" in click(sm, api, OP, nonce_of(command(sm, OP, "rearm drawdown looked at it")))
    assert command(sm, OP, "rearm drawdown")["text"].startswith("rearm needs a reason")

    kinds = audit_kinds(r)
    assert ("refusal", f"slack:{STRANGER}") in kinds and ("confirmation", f"slack:{OP}") in kinds
    assert ("state_change", f"slack:{OP}") in kinds and ("breaker_rearm", f"slack:{OP}") in kinds
    assert ("flatten", f"slack:{OP}") in kinds
    assert sum(1 for k, _ in kinds if k == "refusal") == 7
    assert audit.verify(audit.read_all(r)).ok
    # the bot token is never used to open the socket, the app token never for chat.postMessage
    assert all(m["channel"] == "C0STANDIN" for m in api.messages)


def test_the_notifier_serves_commands_only_with_the_app_token(redis_url: str, real_redis: redis.Redis) -> None:
    from services.analytics import notifier
    from shared.service import make_context
    from shared.settings import load_settings

    with SocketModeStandIn() as sm, SlackStandIn(token=BOT, app_token=APP, socket=sm) as api:
        base = {"redis_url": redis_url, "slack_bot_token": BOT, "slack_base_url": api.base_url, "slack_allowed_users": OP}
        worker = notifier.Notifier(make_context("notifier", load_settings(**base), real_redis))
        worker.start()
        assert worker.socket_mode is None and sm.connects == 0  # no app token: no commands
        worker = notifier.Notifier(make_context("notifier", load_settings(**base, slack_app_token=APP), real_redis))
        worker.start()
        try:
            sm.wait_connected(1)
            assert command(sm, OP, "status")["text"].startswith("*State:* ACTIVE")
        finally:
            worker.stop()
        assert worker.socket_mode is None
