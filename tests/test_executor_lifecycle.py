"""The order state machine (one table over Alpaca's full status set), the broker-error mapping on
(HTTP status, Alpaca code, message), and OrderEvent's typed reason codes (v2, v1 upcast)."""

from __future__ import annotations

import json

import pytest
import requests
from alpaca.common.exceptions import APIError

from services.executor import alpaca, broker, core, lifecycle
from services.executor.broker import OrderView
from shared.schemas import REASON_CODES, OrderEvent, OrderEventV1, decode, encode

OAS_STATUSES = {"new", "partially_filled", "filled", "done_for_day", "canceled", "expired", "replaced",
                "pending_cancel", "pending_replace", "accepted", "pending_new", "accepted_for_bidding", "stopped",
                "rejected", "suspended", "calculated"}  # oas/trading/openapi.yaml, OrderStatus enum


def test_the_table_covers_every_record_status_and_alpacas_full_status_set() -> None:
    assert set(lifecycle.BROKER_STATUSES) >= OAS_STATUSES
    assert set(lifecycle.TABLE) == set(lifecycle.RECORD_STATUSES)
    for rec, row in lifecycle.TABLE.items():
        assert set(row) == set(lifecycle.BROKER_STATUSES), rec
        assert all(v is None or v in lifecycle.RECORD_STATUSES for v in row.values()), rec


@pytest.mark.parametrize("rec,broker_status,want", [
    ("accepted", "new", "accepted"), ("accepted", "pending_new", "accepted"), ("accepted", "held", "accepted"),
    ("accepted", "done_for_day", "done_for_day"), ("done_for_day", "new", "accepted"),  # resumes next day
    ("done_for_day", "filled", "filled"), ("pending_replace", "replaced", "replaced"),
    ("pending_replace", "filled", "filled"),  # the old order filled first
    ("pending_replace", "new", "accepted"),  # the replace was refused: the old order is live again
    ("pending_cancel", "new", "accepted"), ("pending_cancel", "canceled", "cancelled"),
    ("partially_filled", "new", "partially_filled"), ("unknown", "partially_filled", "partially_filled"),
    ("cancelled", "expired", "cancelled"), ("filled", "filled", "filled"), ("accepted", "calculated", "done_for_day"),
])
def test_transitions(rec: str, broker_status: str, want: str) -> None:
    assert lifecycle.transition(rec, broker_status) == want


@pytest.mark.parametrize("rec,broker_status", [
    ("replaced", "filled"), ("filled", "new"), ("cancelled", "partially_filled"), ("rejected", "new"),
    ("waiting", "new"), ("expired", "pending_cancel"),
])
def test_impossible_transitions_raise_a_typed_error(rec: str, broker_status: str) -> None:
    with pytest.raises(lifecycle.ImpossibleTransition) as exc:
        lifecycle.transition(rec, broker_status)
    assert exc.value.code == "IMPOSSIBLE_TRANSITION" and exc.value.broker == broker_status


def test_an_impossible_transition_is_an_alert_and_never_a_silent_drop() -> None:
    st = core.ExecState(mode="ALPACA_PAPER")
    rec = core.OrderRec(client_order_id="c1", intent_id="i1", kind="stop", symbol="AAA", side="sell", qty=10,
                        order_type="stop", stop_price=9.0, status="filled", broker_order_id="b1", filled_qty=10,
                        announced=True)
    st.orders["c1"] = rec
    view = OrderView(broker_order_id="b1", client_order_id="c1", symbol="AAA", side="sell", qty=10, order_type="stop",
                     status="new", filled_qty=10, filled_avg_price=9.0)
    out = core.on_view(st, view, core.Ctx(ts=1, trade_date="2018-03-02"))
    assert [(getattr(e, "kind", ""), getattr(e, "severity", "")) for e in out.events] == [
        ("order_transition_impossible", "critical")]
    assert rec.status == "filled"


def test_a_fill_is_booked_even_on_a_record_the_executor_thought_replaced() -> None:
    """A state written by the old executor (old order marked replaced on the 200): its fill still counts."""
    st = core.ExecState(mode="ALPACA_PAPER")
    st.orders["c1"] = core.OrderRec(client_order_id="c1", intent_id="i1", kind="stop", symbol="AAA", side="sell",
                                    qty=10, order_type="stop", status="replaced", broker_order_id="b1", announced=True)
    view = OrderView(broker_order_id="b1", client_order_id="c1", symbol="AAA", side="sell", qty=10, order_type="stop",
                     status="filled", filled_qty=10, filled_avg_price=9.0)
    out = core.on_view(st, view, core.Ctx(ts=1, trade_date="2018-03-02"))
    kinds = [getattr(e, "event", "") or getattr(e, "kind", "") for e in out.events]
    assert kinds == ["filled", "order_transition_impossible"]


class _Resp:
    def __init__(self, status: int) -> None:
        self.status_code = status


def _api_error(status: int, code: int, message: str, **extra: object) -> APIError:
    err = requests.exceptions.HTTPError(response=_Resp(status))  # type: ignore[arg-type]
    return APIError(json.dumps({"code": code, "message": message, **extra}), err)


@pytest.mark.parametrize("status,code,message,replacing,want", [
    (422, 40010001, "client_order_id must be unique", False, broker.DuplicateClientOrderId),
    (403, 40310000, "insufficient qty available for order (requested: 10, available: 0)", False, broker.InsufficientQty),
    (403, 40310000, "insufficient buying power", False, broker.BuyingPower),
    (403, 40310000, "order parameters are not changed", True, broker.Unchanged),
    (403, 40310000, "potential wash trade detected. use complex orders", True, broker.WashTrade),
    (422, 42210000, "invalid stop_price 48.999. sub-penny increment does not fulfill minimum pricing criteria", True,
     broker.SubPenny),
    (422, 42210000, "stop price must not be greater than base price / 1.001 (50.2)", False, broker.StopSide),
    (422, 42210000, "unable to replace order, order isn't sent to exchange yet", True, broker.ReplaceForbidden),
    (422, 42210000, "unable to replace order, order isn't sent to exchange yet", False, broker.BrokerRejected),
    (422, 42210000, 'order is already in "filled" state', True, broker.NotCancelable),
    (422, 42210000, 'order is not cancelable while in "pending_replace" state', False, broker.NotCancelable),
    (422, 40010000, "qty must be > 0", True, broker.BrokerRejected),  # any other 422 on PATCH: a refusal
    (404, 40410000, "order not found", False, broker.NotFound),
    (429, 42910000, "rate limit exceeded", False, broker.UnknownOutcome),
    (503, 50300000, "service unavailable", False, broker.UnknownOutcome),
])
def test_broker_errors_are_mapped_on_status_code_and_message(status: int, code: int, message: str, replacing: bool,
                                                             want: type) -> None:
    got = alpaca.map_error(_api_error(status, code, message), replacing=replacing)
    assert type(got) is want


def test_insufficient_qty_keeps_related_orders_when_present() -> None:
    got = alpaca.map_error(_api_error(403, 40310000, "insufficient qty available for order", related_orders=["b1"]))
    assert isinstance(got, broker.InsufficientQty) and got.related == ["b1"]


def test_order_event_v1_is_upcast_with_a_reason_code() -> None:
    def v1(event: str, reason: str) -> OrderEvent:
        old = OrderEventV1(event_id="e", event=event, mode="ALPACA_PAPER", intent_id="i", client_order_id="c",
                           symbol="S", side="sell", kind="stop", qty=1, reason=reason, trade_date="2018-03-02", ts=1)
        msg = decode(encode(old))
        assert type(msg) is OrderEvent and msg.v == 2
        return msg

    assert v1("rejected", "INSUFFICIENT_QTY: insufficient qty").reason_code == "INSUFFICIENT_QTY"
    assert v1("rejected", "TARGET_NOT_OPEN: manual-1 is unknown").reason_code == "TARGET_UNKNOWN"
    assert v1("rejected", "TARGET_NOT_OPEN: av-1 is cancelled").reason_code == "TARGET_NOT_OPEN"
    assert v1("cancelled", "exit_intent=ex-1").reason_code == "EXIT_INTENT"
    r = v1("replaced", "replaces av-old")
    assert (r.reason_code, r.replaces_client_order_id) == ("REPLACES", "av-old")
    assert v1("filled", "").reason_code == "NONE"


def test_reason_code_is_closed() -> None:
    from shared.schemas import InvalidPayload

    ok = OrderEvent(event_id="e", event="rejected", mode="m", intent_id="i", client_order_id="c", symbol="S",
                    side="sell", kind="stop", qty=1, trade_date="d", ts=1, reason_code="SUB_PENNY")
    raw = encode(ok).replace(b'"SUB_PENNY"', b'"SOMETHING_ELSE"')
    assert "SUB_PENNY" in REASON_CODES
    with pytest.raises(InvalidPayload) as exc:
        decode(raw)
    assert "reason_code" in str(exc.value)
