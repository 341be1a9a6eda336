"""A real message with an older version: Alert v1 (free-text severity) is upcast to v2 on decode."""

from __future__ import annotations

import json

import pytest
import redis

from shared.alerts import make_alert
from shared.bus import Bus
from shared.consumer import Consumer
from shared.schemas import (
    Alert,
    AlertV1,
    InvalidPayload,
    Message,
    SchemaError,
    UnknownType,
    UnknownVersion,
    decode,
    encode,
    registered_types,
)

# exactly what a v1 producer wrote (no runbook; severity free text)
V1_PAYLOAD = (b'{"type":"alert","v":1,"alert_id":"al-1","severity":"warn","kind":"entry_blocked",'
              b'"source":"risk","title":"blocked","text":"","fields":{"symbol":"AAPL"},"trade_date":"2018-12-03","ts":7}')


def test_alert_is_at_version_2_with_v1_registered() -> None:
    assert registered_types()["alert"] == 2
    assert Alert.VERSION == 2 and AlertV1.VERSION == 1


def test_v1_payload_decodes_to_current_alert() -> None:
    msg = decode(V1_PAYLOAD)
    assert type(msg) is Alert and msg.v == 2
    assert msg == Alert(alert_id="al-1", severity="warning", kind="entry_blocked", source="risk", title="blocked",
                        fields={"symbol": "AAPL"}, trade_date="2018-12-03", ts=7, runbook="")


@pytest.mark.parametrize(("old", "new"), [("info", "info"), ("WARN", "warning"), ("error", "critical"),
                                          ("fatal", "critical"), ("no-idea", "critical")])
def test_v1_severities_are_normalized_fail_loud(old: str, new: str) -> None:
    raw = encode(AlertV1(alert_id="a", severity=old, kind="k", source="s", title="t"))
    assert json.loads(raw)["v"] == 1
    assert decode(raw).severity == new  # type: ignore[attr-defined]


def test_v2_payload_round_trips_and_is_strict() -> None:
    a = Alert(alert_id="a2", severity="critical", kind="recon_mismatch", source="analytics", title="t",
              runbook="reconciliation-mismatch")
    raw = encode(a)
    assert json.loads(raw)["v"] == 2 and json.loads(raw)["runbook"] == "reconciliation-mismatch"
    assert decode(raw) == a
    bad = raw.replace(b'"severity":"critical"', b'"severity":"warn"')  # v2 only takes the three severities
    with pytest.raises(InvalidPayload) as exc:
        decode(bad)
    assert exc.value.code == "INVALID_PAYLOAD" and "v=2" in exc.value.detail


@pytest.mark.parametrize(
    ("raw", "error", "code"),
    [
        (b'{"type":"alarm","v":1,"alert_id":"a"}', UnknownType, "UNKNOWN_TYPE"),
        (b'{"type":"alert","v":3,"alert_id":"a"}', UnknownVersion, "UNKNOWN_VERSION"),
        (b'{"type":"alert","v":0,"alert_id":"a"}', UnknownVersion, "UNKNOWN_VERSION"),
        (b'{"type":"alert","v":1,"alert_id":"a"}', InvalidPayload, "INVALID_PAYLOAD"),  # v1 missing fields
        (b'{"type":"alert","v":"2"}', InvalidPayload, "INVALID_PAYLOAD"),  # version not an int
        (b'{"type":"alert"', InvalidPayload, "INVALID_PAYLOAD"),  # truncated JSON
    ],
)
def test_decode_errors_are_typed_with_codes(raw: bytes, error: type[SchemaError], code: str) -> None:
    with pytest.raises(error) as exc:
        decode(raw)
    assert isinstance(exc.value, SchemaError) and exc.value.code == code
    assert str(exc.value).startswith(f"{code}: ")


def test_make_alert_normalizes_severity() -> None:
    assert make_alert("risk", "k", "t", severity="warn").severity == "warning"
    assert make_alert("risk", "k", "t", severity="error", runbook="x").runbook == "x"


def test_v1_entry_on_a_stream_reaches_the_handler_as_v2(real_redis: redis.Redis) -> None:
    r = real_redis
    got: list[Message] = []
    c = Consumer(r, "g", ["test:alerts"], lambda m, d: got.append(m), name="c1", block_ms=20)
    c.ensure_groups()
    r.xadd("test:alerts", {"type": "alert", "v": 1, "data": V1_PAYLOAD})  # left by an old producer
    Bus(r).publish("test:alerts", make_alert("risk", "entry_blocked", "blocked", severity="critical"))
    c.run(install_signals=False, until_idle=True)
    assert [type(m) for m in got] == [Alert, Alert]
    assert [m.severity for m in got] == ["warning", "critical"]  # type: ignore[attr-defined]
    assert r.xlen("avwap:dlq") == 0 and r.xpending("test:alerts", "g")["pending"] == 0


def test_trade_is_at_version_2_and_a_v1_trade_is_upcast() -> None:
    """Trade v1 measured stop efficiency against the highest price held; v2 against the best stop
    in hindsight. A v1 record decodes to v2 with everything kept but that metric (another meaning)."""
    from shared.schemas import Fill, Trade, TradeV1, encode

    assert registered_types()["trade"] == 2 and registered_types()["fill"] == 1
    old = TradeV1(trade_id="tr", position_id="pos", symbol="AAPL", status="closed", entry_intent_id="in", opened_ts=1,
                  opened_date="2018-06-01", closed_ts=2, closed_date="2018-06-04", realized_pnl=12.5,
                  stop_efficiency=0.8, exit_vs_initial_stop=1.25, fill_ids=["f1", "f2"])
    raw = encode(old)
    assert b'"v":1' in raw and b'"type":"trade"' in raw
    new = decode(raw)
    assert isinstance(new, Trade) and new.v == 2
    assert (new.realized_pnl, new.exit_vs_initial_stop, new.fill_ids) == (12.5, 1.25, ["f1", "f2"])
    assert new.stop_efficiency is None and new.hindsight_stop is None
    with pytest.raises(UnknownVersion):
        decode(raw.replace(b'"v":1', b'"v":3'))
    with pytest.raises(InvalidPayload):
        decode(b'{"type":"fill","v":1,"fill_id":"f"}')  # a fill without its fields
    assert isinstance(decode(encode(Fill(fill_id="f", symbol="A", side="buy", kind="entry", qty=1, price=1.0, fees=0.0,
                                         ts=1, trade_date="2018-06-01", intent_id="i", client_order_id="c"))), Fill)


# exactly what a v1 producer wrote: Rejection v1 (free-string codes, Phase C codes in lower case)
REJECTION_V1 = (b'{"type":"rejection","v":1,"rejection_id":"rj-1","source":"risk","symbol":"AAPL","trade_date":"2018-12-03",'
                b'"reasons":["phase_c_allowlist_must_be_single_symbol","phase_c_symbol_not_permitted"],'
                b'"candidate_id":"cd-1","intent_id":"","detail":"","ts":7}')


def test_rejection_is_at_version_2_and_a_v1_lower_case_code_is_upcast() -> None:
    from shared.schemas import Rejection, RejectionV1

    assert registered_types()["rejection"] == 2 and registered_types()["daily_rejections"] == 2
    assert Rejection.VERSION == 2 and RejectionV1.VERSION == 1
    msg = decode(REJECTION_V1)
    assert type(msg) is Rejection and msg.v == 2
    assert msg == Rejection(rejection_id="rj-1", source="risk", symbol="AAPL", trade_date="2018-12-03", candidate_id="cd-1",
                            reasons=["PHASE_C_ALLOWLIST_MUST_BE_SINGLE_SYMBOL", "PHASE_C_SYMBOL_NOT_PERMITTED"], ts=7)
    same = REJECTION_V1.replace(b"phase_c_allowlist_must_be_single_symbol", b"KILL_SWITCH_ON")
    assert decode(same).reasons == ["KILL_SWITCH_ON", "PHASE_C_SYMBOL_NOT_PERMITTED"]  # type: ignore[attr-defined]


def test_rejection_codes_are_a_closed_set_in_v2_and_v1() -> None:
    v2 = encode(decode(REJECTION_V1))
    assert b'"v":2' in v2 and decode(v2) == decode(REJECTION_V1)
    with pytest.raises(InvalidPayload) as exc:  # v2 takes the current spelling only
        decode(v2.replace(b"PHASE_C_SYMBOL_NOT_PERMITTED", b"phase_c_symbol_not_permitted"))
    assert "v=2" in exc.value.detail
    with pytest.raises(InvalidPayload) as exc:  # a v1 code that never was one: refused, not passed on
        decode(REJECTION_V1.replace(b"phase_c_symbol_not_permitted", b"NO_SUCH_CODE"))
    assert "NO_SUCH_CODE" in exc.value.detail


def test_daily_rejections_v1_file_is_upcast_rejection_by_rejection() -> None:
    from shared.schemas import DailyRejections, DailyRejectionsV1, RejectionV1

    old = DailyRejectionsV1(date="2018-12-03", provenance={"settings_hash": "h"}, rejections=[
        RejectionV1(rejection_id="rj-1", source="risk", symbol="AAPL", trade_date="2018-12-03",
                    reasons=["phase_c_live_date_not_permitted"]),
        RejectionV1(rejection_id="rj-2", source="executor", symbol="MSFT", trade_date="2018-12-03",
                    reasons=["ENTRY_NOT_CONFIRMED"])])
    raw = encode(old)
    assert json.loads(raw)["v"] == 1
    new = decode(raw)
    assert isinstance(new, DailyRejections) and new.v == 2 and new.provenance == {"settings_hash": "h"}
    assert [(r.v, r.reasons) for r in new.rejections] == [(2, ["PHASE_C_LIVE_DATE_NOT_PERMITTED"]), (2, ["ENTRY_NOT_CONFIRMED"])]


def _left_by_an_old_producer(r: redis.Redis, stream: str, type_name: str, raw: bytes) -> list[Message]:
    """What a consumer's handler receives for one v1 entry on ``stream`` (nothing dead-lettered or pending)."""
    got: list[Message] = []
    c = Consumer(r, "g", [stream], lambda m, d: got.append(m), name="c1", block_ms=20)
    c.ensure_groups()
    r.xadd(stream, {"type": type_name, "v": 1, "data": raw})
    c.run(install_signals=False, until_idle=True)
    assert r.xlen("avwap:dlq") == 0 and r.xpending(stream, "g")["pending"] == 0
    return got


def test_v1_rejection_on_a_stream_reaches_the_handler_with_the_new_code(real_redis: redis.Redis) -> None:
    from shared.schemas import Rejection

    got = _left_by_an_old_producer(real_redis, "test:rejections", "rejection", REJECTION_V1)
    assert [type(m) for m in got] == [Rejection]
    assert got[0].reasons == ["PHASE_C_ALLOWLIST_MUST_BE_SINGLE_SYMBOL", "PHASE_C_SYMBOL_NOT_PERMITTED"]  # type: ignore[attr-defined]
