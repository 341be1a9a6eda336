"""Schema round-trips, upcasting, and typed decode errors."""

from __future__ import annotations

import msgspec
import pytest

from shared import schemas as S
from shared.schemas.base import Message, register, register_legacy


def _samples() -> list[Message]:
    c = S.Candidate(candidate_id="cd-1", scan_date="2018-06-01", symbol="AAPL", price=190.1, anchor="YTD",
                    anchor_date="2018-01-02", avwap=180.0, entry_level=180.0, entry_dist_pct=1.2, stop_loss=178.0,
                    target_r1=195.0, target_r2=199.0, trend_score=10.0, avwap_slope=0.5, score=120.0)
    fill = S.Fill(fill_id="t1", symbol="AAPL", side="buy", kind="entry", qty=10, price=180.1, fees=0.1, ts=5,
                  trade_date="2018-06-01", intent_id="in-1", client_order_id="av-1", stop_price=178.0)
    trade = S.Trade(trade_id="tr", position_id="pos", symbol="AAPL", status="closed", entry_intent_id="in-1", opened_ts=5,
                    opened_date="2018-06-01", stop_efficiency=0.5, hindsight_stop=179.0, hindsight_stop_source="1d")
    return [
        S.CandidateBatch(batch_id="cb", scan_date="2018-06-01", market_gate_ok=True, candidates=[c]),
        S.BarBatch(tf="1d", trade_date="2018-06-01", bars=[S.BarRow(symbol="A", ts=1, open=1, high=2, low=0.5, close=1.5, volume=10)]),
        S.EntryIntent(intent_id="in-1", candidate_id="cd-1", symbol="AAPL", trade_date="2018-06-01", qty=10,
                      entry_level=180.0, stop_price=178.0, risk_per_share=2.0, notional=1800.0),
        S.StopIntent(intent_id="st-1", symbol="AAPL", trade_date="2018-06-01", action="place", qty=10, stop_price=177.9),
        S.ExitIntent(intent_id="ex-1", symbol="AAPL", trade_date="2018-06-01", qty=10),
        S.Rejection(rejection_id="rj", source="risk", symbol="AAPL", trade_date="2018-06-01", reasons=["KILL_SWITCH_ON"]),
        S.OrderEvent(event_id="ev", event="filled", mode="PAPER_SIM", intent_id="in-1", client_order_id="av-1",
                     symbol="AAPL", side="buy", kind="entry", qty=10, filled_qty=10, fill_qty=10, fill_price=180.1,
                     trade_date="2018-06-01", ts=5),
        S.BrokerSnapshot(snapshot_id="bs", mode="PAPER_SIM", trade_date="2018-06-01", ts=5, equity=1e5, cash=1e5,
                         buying_power=2e5, positions=[S.BrokerPosition(symbol="AAPL", qty=10, avg_entry_price=180.1)]),
        S.ExitEvent(event_id="xe", kind="STOP_RATCHET", symbol="AAPL", position_id="p", trade_date="2018-06-01", ts=5),
        S.PortfolioSnapshot(snapshot_id="ps", date="2018-06-01", capital=1e5, cash=1e5, equity=1e5, gross_exposure=0,
                            net_exposure=0, positions=[], realized_pnl=0, unrealized_pnl=0),
        S.PortfolioDecisionBatch(batch_id="pd", date="2018-06-01", decisions=[S.PortfolioDecision(
            decision_id="d", symbol="AAPL", candidate_id="cd-1", decision="ALLOW", reason_codes=["ALLOW_WITHIN_LIMITS"])]),
        S.Alert(alert_id="al", severity="info", kind="k", source="test", title="hello"),
        S.SessionEvent(trade_date="2018-06-01", phase="OPEN", ts=1),
        fill,
        trade,
        S.DailyTrades(date="2018-06-01", trades=[trade], fills=[fill], provenance={"settings_hash": "h"}),
        S.DailyRejections(date="2018-06-01", rejections=[S.Rejection(rejection_id="rj", source="risk", symbol="AAPL",
                                                                      trade_date="2018-06-01", reasons=["INSUFFICIENT_CASH"])]),
        S.Reconciliation(recon_id="rc", date="2018-06-01", snapshot_id="bs", status="mismatch",
                         mismatches=[S.Mismatch(type="QUANTITY", symbol="AAPL", expected="10", actual="8")],
                         positions_internal=1, positions_broker=1, open_orders=0),
        S.Regime(regime_id="rg-1", date="2018-06-01", session="2018-06-04", label="RISK_OFF", rule="RISK_OFF_DRAWDOWN",
                 reason="drawdown -10.4% ≤ -10%", confidence=0.6, features=S.RegimeFeatures(drawdown=-0.104, breadth=0.4),
                 market="universe_proxy", universe_size=30, previous_label="NEUTRAL",
                 change="RISK_OFF since 2018-06-01: drawdown -10.4% ≤ -10%"),
        S.TradingStateChange(change_id="tc", state="HALTED", previous="UNREADABLE", who="breaker:drawdown", source="breaker",
                             reason="dd", ts=5, breaker="drawdown", figures={"drawdown_pct": 5.1}),
        S.FlattenRequest(request_id="fl", symbols=["AAPL"], who="slack:U1", source="slack", reason="x", ts=5),
        S.BreakerRearm(rearm_id="ra", breaker="daily_loss", who="cli:op", source="cli", reason="ok", ts=5),
    ]


@pytest.mark.parametrize("msg", _samples(), ids=lambda m: type(m).__name__)
def test_round_trip_every_message(msg: Message) -> None:
    raw = S.encode(msg)
    assert b'"type":' in raw and b'"v":' in raw  # readable JSON in redis-cli
    assert S.decode(raw) == msg


def test_every_registered_type_has_a_sample() -> None:
    covered = {S.type_name_of(m) for m in _samples()}
    # state records are stored, not streamed; everything that flows has a round-trip test
    assert set(S.registered_types()) - covered <= {"exit_position_state"}


def test_unknown_type_unknown_version_invalid_payload_are_typed() -> None:
    with pytest.raises(S.UnknownType):
        S.decode(b'{"type":"nope","v":1}')
    with pytest.raises(S.UnknownVersion):
        S.decode(b'{"type":"alert","v":99}')
    with pytest.raises(S.InvalidPayload):
        S.decode(b'{"type":"alert","v":1,"alert_id":3}')
    with pytest.raises(S.InvalidPayload):
        S.decode(b"\xff not json")
    with pytest.raises(S.InvalidPayload):
        S.decode(b'["type"]')


def test_messages_are_frozen() -> None:
    msg = _samples()[0]
    with pytest.raises(AttributeError):
        msg.scan_date = "x"  # type: ignore[misc]


def test_upcasting_old_versions_to_current() -> None:
    class WidgetV1(Message, frozen=True, kw_only=True, tag="test_widget"):
        VERSION = 1
        v: int = 1
        name: str

    class WidgetV2(Message, frozen=True, kw_only=True, tag="test_widget"):
        VERSION = 2
        v: int = 2
        name: str
        size: int

    class WidgetV3(Message, frozen=True, kw_only=True, tag="test_widget"):
        VERSION = 3
        v: int = 3
        name: str
        size: int
        unit: str

    register(WidgetV3)
    register_legacy(WidgetV1, lambda m: WidgetV2(name=m.name, size=0))
    register_legacy(WidgetV2, lambda m: WidgetV3(name=m.name, size=m.size, unit="px"))
    assert S.decode(b'{"type":"test_widget","v":1,"name":"a"}') == WidgetV3(name="a", size=0, unit="px")
    assert S.decode(b'{"type":"test_widget","v":2,"name":"a","size":4}') == WidgetV3(name="a", size=4, unit="px")
    assert S.decode(msgspec.json.encode(WidgetV3(name="b", size=1, unit="em"))) == WidgetV3(name="b", size=1, unit="em")
    with pytest.raises(S.UnknownVersion):
        S.decode(b'{"type":"test_widget","v":4,"name":"a"}')


def test_control_messages_have_closed_types() -> None:
    """A state, source or breaker outside its Literal does not decode (the contract is the type, not text)."""
    good = S.encode(S.TradingStateChange(change_id="tc", state="ACTIVE", previous="HALTED", who="cli:op", source="cli",
                                         reason="r", ts=1))
    for field, bad in ((b'"state":"ACTIVE"', b'"state":"PAUSED"'), (b'"source":"cli"', b'"source":"email"')):
        with pytest.raises(S.SchemaError):
            S.decode(good.replace(field, bad))
    with pytest.raises(S.SchemaError):
        S.decode(S.encode(S.BreakerRearm(rearm_id="r", breaker="drawdown", who="w", source="cli", reason="r", ts=1))
                 .replace(b'"drawdown"', b'"vibes"'))
