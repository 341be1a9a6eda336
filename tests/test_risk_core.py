"""Risk core: every gate and reason code (table-driven), sizing, ordering, determinism, NY-day rollover."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from services.risk.core import Controls, Limits, RiskState, build_book, ny_day, size, step
from services.risk.gates import CODES, GATES, gates_table_md
from services.risk.worker import artifact_bytes
from shared.regime import Row, Table
from shared.schemas import Alert, ExitIntent, Regime, StopIntent
from tests.test_risk_support import (
    D,
    batch,
    cand,
    decisions,
    intents,
    position,
    rejections,
    run,
    session,
    snapshot,
    ts_at,
)

ROOT = Path(__file__).resolve().parent.parent
PREV = "2018-11-30"


def _table(max_entries: int = 1) -> Table:
    row = Row(risk_mult=0.25, gross_mult=0.25, max_entries=max_entries)
    return Table(rows={k: row for k in ("RISK_ON", "NEUTRAL", "RISK_OFF", "STRESSED")})


def _regime(label: str) -> Regime:
    return Regime(regime_id="rg-1", date=PREV, session=D, label=label, rule=label, reason="")  # type: ignore[arg-type]


def happy(c=None, snap=None, extra=()):
    cb = batch([c or cand()])
    return [session(), snap or snapshot(), cb, *extra]


# name -> (messages builder, Controls kwargs, Limits kwargs, expected reasons or [] for an intent)
CASES: dict[str, tuple] = {
    "ok": (lambda: happy(), {}, {}, []),
    "KILL_SWITCH_ON redis": (lambda: happy(), {"kill_switch": "on"}, {}, ["KILL_SWITCH_ON"]),
    "KILL_SWITCH_ON env": (lambda: happy(), {"kill_switch_env": True}, {}, ["KILL_SWITCH_ON"]),
    "KILL_SWITCH_UNREADABLE": (lambda: happy(), {"kill_switch": "unreadable"}, {}, ["KILL_SWITCH_UNREADABLE"]),
    "TRADING_HALTED": (lambda: happy(), {"kill_switch": "on", "trading_state": "HALTED"}, {}, ["TRADING_HALTED"]),
    "REDUCING": (lambda: happy(), {"kill_switch": "on", "trading_state": "REDUCING"}, {}, ["KILL_SWITCH_ON"]),
    "MODE_UNKNOWN": (lambda: happy(), {"mode": "YOLO"}, {}, ["MODE_UNKNOWN"]),
    "LIVE ok": (lambda: happy(), {"mode": "LIVE", "live_trading": True, "live_token": "ok"}, {}, []),
    "LIVE_TRADING_DISABLED": (lambda: happy(), {"mode": "LIVE", "live_token": "ok"}, {}, ["LIVE_TRADING_DISABLED"]),
    "LIVE_TOKEN_MISSING": (lambda: happy(), {"mode": "LIVE", "live_trading": True, "live_token": "missing"}, {},
                           ["LIVE_TOKEN_MISSING"]),
    "LIVE_TOKEN_FILE_MISSING": (lambda: happy(), {"mode": "LIVE", "live_trading": True, "live_token": "file_missing"}, {},
                                ["LIVE_TOKEN_FILE_MISSING"]),
    "LIVE_TOKEN_MISMATCH": (lambda: happy(), {"mode": "LIVE", "live_trading": True, "live_token": "mismatch"}, {},
                            ["LIVE_TOKEN_MISMATCH"]),
    "phase C ok": (lambda: happy(), {}, {"phase_c_enabled": True, "phase_c_enable_date": D, "phase_c_allowlist": ("AAPL",)}, []),
    "PHASE_C_LIVE_DATE_NOT_PERMITTED": (lambda: happy(), {}, {"phase_c_enabled": True, "phase_c_enable_date": "2018-12-04",
                                                              "phase_c_allowlist": ("AAPL",)}, ["PHASE_C_LIVE_DATE_NOT_PERMITTED"]),
    "PHASE_C_ALLOWLIST_MUST_BE_SINGLE_SYMBOL": (lambda: happy(), {}, {"phase_c_enabled": True, "phase_c_enable_date": D,
                                                                      "phase_c_allowlist": ("AAPL", "MSFT")},
                                                ["PHASE_C_ALLOWLIST_MUST_BE_SINGLE_SYMBOL"]),
    "phase_c empty allowlist": (lambda: happy(), {}, {"phase_c_enabled": True, "phase_c_enable_date": D},
                                ["PHASE_C_ALLOWLIST_MUST_BE_SINGLE_SYMBOL", "PHASE_C_SYMBOL_NOT_PERMITTED"]),
    "PHASE_C_SYMBOL_NOT_PERMITTED": (lambda: happy(), {}, {"phase_c_enabled": True, "phase_c_enable_date": D,
                                                           "phase_c_allowlist": ("MSFT",)}, ["PHASE_C_SYMBOL_NOT_PERMITTED"]),
    "phase C off ignores its settings": (lambda: happy(), {}, {"phase_c_enable_date": "1999-01-01", "phase_c_allowlist": ("X",)}, []),
    "SYMBOL_NOT_ALLOWLISTED": (lambda: happy(), {}, {"allowlist": ("MSFT",)}, ["SYMBOL_NOT_ALLOWLISTED"]),
    "allowlisted": (lambda: happy(), {}, {"allowlist": ("MSFT", "AAPL")}, []),
    "SESSION_NOT_STARTED": (lambda: [snapshot(hhmm="09:30"), batch([cand()]), session(phase="OPEN")], {}, {},
                            ["SESSION_NOT_STARTED"]),
    "WATCHLIST_STALE": (lambda: [session(), snapshot(), batch([cand(d=PREV)], d=PREV)], {}, {}, ["WATCHLIST_STALE"]),
    "WATCHLIST_STALE held then stale": (lambda: [batch([cand(d=PREV)], d=PREV), session(), snapshot()], {}, {}, ["WATCHLIST_STALE"]),
    "SNAPSHOT_MISSING": (lambda: [session(), batch([cand()]), session(phase="OPEN")], {}, {}, ["SNAPSHOT_MISSING"]),
    "SNAPSHOT_MISSING (yesterday's)": (lambda: [snapshot(d=PREV, hhmm="16:00"), session(), batch([cand()]), session(phase="OPEN")],
                                       {}, {}, ["SNAPSHOT_MISSING"]),
    "SNAPSHOT_STALE": (lambda: [session(), snapshot(hhmm="08:00"), batch([cand()]), session(phase="OPEN")], {}, {},
                       ["SNAPSHOT_STALE"]),
    "SNAPSHOT_UNRECONCILED": (lambda: happy(snap=snapshot(reconciled=False)), {}, {}, ["SNAPSHOT_UNRECONCILED"]),
    "enforced ALLOW": (lambda: (lambda cb: [session(), snapshot(), cb, decisions(cb)])(batch([cand()])), {}, {"enforce": True}, []),
    "DECISION_FILE_MISSING": (lambda: [*happy(), session(phase="OPEN")], {}, {"enforce": True}, ["DECISION_FILE_MISSING"]),
    "DECISION_JSON_INVALID": (lambda: [*happy(), session(phase="OPEN")], {"decision_dlq": ((5000, "", "DECISION_JSON_INVALID"),)},
                              {"enforce": True}, ["DECISION_JSON_INVALID"]),
    "DECISION_SCHEMA_INVALID (dlq)": (lambda: [*happy(), session(phase="OPEN")],
                                      {"decision_dlq": ((5000, D, "DECISION_SCHEMA_INVALID"),)}, {"enforce": True},
                                      ["DECISION_SCHEMA_INVALID"]),
    "DECISION_SCHEMA_INVALID": (lambda: (lambda cb: [session(), snapshot(), cb, decisions(cb, {"AAPL": "MAYBE"})])(batch([cand()])),
                                {}, {"enforce": True}, ["DECISION_SCHEMA_INVALID"]),
    "DECISION_DATE_MISMATCH": (lambda: (lambda cb: [session(), snapshot(), cb, decisions(cb, d="2018-12-04")])(batch([cand()])),
                               {}, {"enforce": True}, ["DECISION_DATE_MISMATCH"]),
    "DECISION_SYMBOL_NOT_FOUND": (lambda: [session(), snapshot(), batch([cand()]), decisions(batch([cand("MSFT")]), link=False)],
                                  {}, {"enforce": True}, ["DECISION_SYMBOL_NOT_FOUND"]),
    "DECISION_BLOCK": (lambda: (lambda cb: [session(), snapshot(), cb, decisions(cb, {"AAPL": "BLOCK"})])(batch([cand()])),
                       {}, {"enforce": True}, ["DECISION_BLOCK"]),
    "BLOCK is shadow only when not enforced": (lambda: (lambda cb: [session(), snapshot(), cb, decisions(cb, {"AAPL": "BLOCK"})])(
        batch([cand()])), {}, {}, []),
    "INVALID_CANDIDATE": (lambda: happy(cand(direction="SHORT")), {}, {}, ["INVALID_CANDIDATE"]),
    "INVALID_CANDIDATE nan": (lambda: happy(cand(entry=float("nan"))), {}, {}, ["INVALID_CANDIDATE"]),
    "STOP_NOT_BELOW_ENTRY": (lambda: happy(cand(stop=100.5)), {}, {}, ["STOP_NOT_BELOW_ENTRY"]),
    "RISK_PER_SHARE_TOO_HIGH": (lambda: happy(cand(stop=96.99)), {}, {}, ["RISK_PER_SHARE_TOO_HIGH"]),
    "risk per share exactly 3.00": (lambda: happy(cand(stop=97.0)), {}, {}, []),
    "POSITION_ALREADY_OPEN": (lambda: happy(snap=snapshot(positions=[position("AAPL", 10, 100.0)])), {}, {},
                              ["POSITION_ALREADY_OPEN"]),
    "MAX_CONCURRENT_POSITIONS": (lambda: happy(snap=snapshot(positions=[position("MSFT", 10, 100.0)])), {},
                                 {"max_concurrent_positions": 1}, ["MAX_CONCURRENT_POSITIONS"]),
    "MAX_NEW_ENTRIES_PER_DAY": (lambda: happy(), {}, {"max_new_entries_per_day": 0}, ["MAX_NEW_ENTRIES_PER_DAY"]),
    "EQUITY_INVALID": (lambda: happy(snap=snapshot(equity=0.0, cash=1000.0)), {}, {}, ["EQUITY_INVALID"]),
    "MAX_RISK_PER_TRADE abs": (lambda: happy(), {}, {"max_risk_per_trade": 1.5}, ["MAX_RISK_PER_TRADE"]),
    "MAX_RISK_PER_TRADE pct": (lambda: happy(), {}, {"max_risk_per_trade_pct": 0.001}, ["MAX_RISK_PER_TRADE"]),
    "MAX_NOTIONAL_PER_SYMBOL": (lambda: happy(), {}, {"max_notional_per_symbol": 99.0}, ["MAX_NOTIONAL_PER_SYMBOL"]),
    "MAX_GROSS_EXPOSURE abs": (lambda: happy(snap=snapshot(positions=[position("MSFT", 100, 999.5)])), {}, {},
                               ["MAX_GROSS_EXPOSURE"]),
    "MAX_GROSS_EXPOSURE pct": (lambda: happy(), {}, {"max_gross_exposure_pct": 0.05}, ["MAX_GROSS_EXPOSURE"]),
    "INSUFFICIENT_CASH": (lambda: happy(snap=snapshot(cash=99.0)), {}, {}, ["INSUFFICIENT_CASH"]),
    # regime modulation (tests/test_regime_modulation.py has the rest)
    "REGIME_ENTRY_CAP": (lambda: happy(extra=[_regime("STRESSED")]), {}, {"modulation": _table(max_entries=0)},
                         ["REGIME_ENTRY_CAP"]),
    "REGIME_THROTTLED": (lambda: happy(extra=[_regime("STRESSED")]), {}, {"modulation": _table(), "max_risk_per_trade": 3.0},
                         ["REGIME_THROTTLED"]),
    "REGIME_UNKNOWN": (lambda: [*happy(), session(phase="OPEN")], {}, {"modulation": _table(), "max_risk_per_trade": 3.0},
                       ["REGIME_UNKNOWN", "REGIME_THROTTLED"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_gate_table(name: str) -> None:
    build, ckw, lkw, expected = CASES[name]
    _, emits = run(build(), Controls(**ckw), Limits(**lkw))
    ins, rejs = intents(emits), rejections(emits)
    if expected:
        assert not ins, name
        assert len(rejs) == 1 and rejs[0].reasons == expected, (name, [r.reasons for r in rejs])
        assert rejs[0].source == "risk" and rejs[0].candidate_id
    else:
        assert len(ins) == 1 and not rejs, (name, [r.reasons for r in rejs])


def test_every_code_is_covered_by_the_table() -> None:
    covered = {c for _, _, _, exp in CASES.values() for c in exp}
    assert covered == set(CODES)


def test_all_failing_codes_in_documented_order() -> None:
    msgs = happy(cand(stop=96.0), snap=snapshot(positions=[position("AAPL", 1, 100.0)]))
    _, emits = run(msgs, Controls(kill_switch="on", mode="LIVE", live_token="mismatch"),
                   Limits(allowlist=("MSFT",), max_new_entries_per_day=0))
    (rej,) = rejections(emits)
    assert rej.reasons == ["KILL_SWITCH_ON", "LIVE_TRADING_DISABLED", "LIVE_TOKEN_MISMATCH", "SYMBOL_NOT_ALLOWLISTED",
                           "RISK_PER_SHARE_TOO_HIGH", "POSITION_ALREADY_OPEN", "MAX_NEW_ENTRIES_PER_DAY"]
    alerts = [m for _, m in emits if isinstance(m, Alert)]
    assert len(alerts) == 1 and alerts[0].severity == "critical" and alerts[0].kind == "entry_blocked"


def test_sizing_takes_the_tightest_limit_and_rounds_down() -> None:
    # budget 500 / rps 2 = 250; symbol 20000/100 = 200 -> 200 shares
    _, emits = run(happy())
    (i,) = intents(emits)
    assert (i.qty, i.notional, i.risk_per_share, i.stop_price, i.trade_date) == (200, 20000.0, 2.0, 98.0, D)
    assert i.ts == ts_at(D, "08:30") and i.intent_id.startswith("in-")
    # 0.5% of 50k = 250 -> 250 / 2.37 = 105.48 -> 105
    _, emits = run(happy(cand(entry=100.0, stop=97.63), snap=snapshot(equity=50_000.0)), limits=Limits(max_notional_per_symbol=1e9))
    assert intents(emits)[0].qty == 105
    book = build_book(RiskState(), snapshot(cash=1000.0), D)
    qty, codes, terms = size(100.0, 98.0, book, Limits(), "AAPL")
    assert (qty, codes) == (10, set()) and terms["INSUFFICIENT_CASH"] == 10


def test_candidates_decided_by_score_then_symbol_and_caps_shared_within_a_batch() -> None:
    cs = [cand("CCC", score=50), cand("BBB", score=90), cand("AAA", score=90), cand("DDD", score=10)]
    _, emits = run([session(), snapshot(), batch(cs)], limits=Limits(max_new_entries_per_day=2))
    order = [m.symbol for _, m in emits if not isinstance(m, Alert)]
    assert order == ["AAA", "BBB", "CCC", "DDD"]
    assert [i.symbol for i in intents(emits)] == ["AAA", "BBB"]
    assert all(r.reasons == ["MAX_NEW_ENTRIES_PER_DAY"] for r in rejections(emits))


def test_gross_exposure_headroom_shrinks_within_a_batch() -> None:
    cs = [cand("AAA", score=3), cand("BBB", score=2), cand("CCC", score=1)]
    st, emits = run([batch(cs)], limits=Limits(max_gross_exposure=45_000.0, max_new_entries_per_day=9),
                    state=run([session(), snapshot()])[0])
    assert [i.qty for i in intents(emits)] == [200, 200, 50]
    assert build_book(st, st.broker, D).gross == pytest.approx(45_000.0)


def test_holds_until_prerequisites_and_decides_once() -> None:
    cb = batch([cand()])
    st, emits = run([cb])
    assert not emits and cb.batch_id in st.held  # no clock yet: held, not dropped
    st, emits = run([session()], state=st)
    assert not emits  # no snapshot yet
    st, emits = run([snapshot()], state=st)
    assert len(intents(emits)) == 1 and not st.held
    st, emits = run([cb, snapshot(), session(), session(phase="OPEN")], state=st)
    assert not emits  # redelivered / replayed inputs change nothing


def test_enforcement_holds_for_decisions_and_fails_closed_at_open() -> None:
    cb = batch([cand(), cand("MSFT")])
    st, emits = run([session(), snapshot(), cb], limits=Limits(enforce=True))
    assert not emits and st.held
    st, emits = run([session(phase="OPEN")], state=st, limits=Limits(enforce=True))
    assert [r.reasons for r in rejections(emits)] == [["DECISION_FILE_MISSING"]] * 2
    assert any(isinstance(m, Alert) for _, m in emits)


@pytest.mark.parametrize("enforce", [False, True])
def test_same_decisions_whatever_the_arrival_order(enforce: bool) -> None:
    cs = [cand("AAPL", score=95), cand("MSFT", entry=50.0, stop=49.0, score=80), cand("XOM", entry=80.0, stop=78.0, score=80)]
    cb = batch(cs)
    msgs = [session(), snapshot(positions=[position("IBM", 50, 120.0)], cash=60_000.0), cb,
            decisions(cb, {"MSFT": "BLOCK"})]
    limits = Limits(enforce=enforce, max_new_entries_per_day=2)
    results = set()
    arts = set()
    for perm in itertools.permutations(msgs):
        st, emits = run([*perm, session(phase="OPEN")], limits=limits)
        results.add(tuple((s, m.intent_id if hasattr(m, "qty") else m.rejection_id) for s, m in emits
                          if not isinstance(m, Alert)))
        arts.add(artifact_bytes(st, D))
    assert len(results) == 1 and len(arts) == 1
    (res,) = results
    assert len(res) == 3


def test_kill_switch_blocks_within_one_message_and_exits_pass_untouched() -> None:
    st, _ = run([session(), snapshot()])
    st, emits = run([batch([cand("AAPL")])], state=st)
    assert len(intents(emits)) == 1
    st, emits = run([batch([cand("MSFT")])], state=st, controls=Controls(kill_switch="on"))
    assert rejections(emits)[0].reasons == ["KILL_SWITCH_ON"]
    for m in (StopIntent(intent_id="s1", symbol="AAPL", trade_date=D, action="place", qty=1, stop_price=1.0),
              ExitIntent(intent_id="x1", symbol="AAPL", trade_date=D, qty=1)):
        res = step(st, m, Controls(kill_switch="on"), Limits())
        assert res.emits == [] and res.state == st


def test_fills_and_cancels_update_exposure() -> None:
    from shared.schemas import OrderEvent

    st, emits = run([session(), snapshot()], limits=Limits(max_concurrent_positions=1))
    st, emits = run([batch([cand("AAPL")])], state=st, limits=Limits(max_concurrent_positions=1))
    (i,) = intents(emits)
    st, emits = run([batch([cand("MSFT")])], state=st, limits=Limits(max_concurrent_positions=1))
    assert rejections(emits)[0].reasons == ["MAX_CONCURRENT_POSITIONS"]  # the pending entry counts
    ev = OrderEvent(event_id="e1", event="cancelled", mode="PAPER_SIM", intent_id=i.intent_id, client_order_id="c",
                    symbol="AAPL", side="buy", kind="entry", qty=i.qty, trade_date=D, ts=ts_at(D, "16:00"))
    st, _ = run([ev], state=st)
    assert i.intent_id not in st.pending
    fill = OrderEvent(event_id="e2", event="filled", mode="PAPER_SIM", intent_id="in-x", client_order_id="c", symbol="X",
                      side="buy", kind="entry", qty=1, filled_qty=1, fill_price=1.0, trade_date=D, ts=1)
    assert run([fill], state=st)[0].pending == st.pending  # unknown intents are ignored


@pytest.mark.parametrize(("utc", "day"), [
    ("2018-03-11T04:59:00+00:00", "2018-03-10"),  # 23:59 EST
    ("2018-03-11T05:01:00+00:00", "2018-03-11"),  # 00:01 EST, the DST-start day
    ("2018-03-12T03:59:00+00:00", "2018-03-11"),  # 23:59 EDT
    ("2018-03-12T04:01:00+00:00", "2018-03-12"),
    ("2018-11-04T03:59:00+00:00", "2018-11-03"),  # 23:59 EDT
    ("2018-11-04T04:01:00+00:00", "2018-11-04"),  # 00:01 EDT, the DST-end day (25 hours long)
    ("2018-11-05T04:59:00+00:00", "2018-11-04"),  # 23:59 EST
    ("2018-11-05T05:01:00+00:00", "2018-11-05"),
])
def test_ny_day_rolls_over_at_ny_midnight(utc: str, day: str) -> None:
    from datetime import datetime

    from shared.clock import dt_to_ns

    assert ny_day(dt_to_ns(datetime.fromisoformat(utc))) == day


@pytest.mark.parametrize(("d1", "d2"), [("2018-03-09", "2018-03-12"), ("2018-11-02", "2018-11-05"), ("2018-12-03", "2018-12-04")])
def test_new_entries_ledger_rolls_over_per_ny_day(d1: str, d2: str) -> None:
    limits = Limits(max_new_entries_per_day=1)
    st, emits = run([session(d1), snapshot(d1), batch([cand("AAA", d=d1), cand("BBB", d=d1)], d=d1)], limits=limits)
    assert len(intents(emits)) == 1 and st.entries_by_day == {d1: 1}
    st, emits = run([session(d2), snapshot(d2), batch([cand("CCC", d=d2), cand("DDD", d=d2)], d=d2)], state=st, limits=limits)
    assert len(intents(emits)) == 1 and st.entries_by_day == {d1: 1, d2: 1}


def test_docs_table_matches_the_gates() -> None:
    text = (ROOT / "docs" / "risk.md").read_text()
    assert gates_table_md() in text
    assert len(GATES) == len(set(CODES))


def test_enforcement_block_raises_one_summary_alert_and_logs_provenance() -> None:
    cb = batch([cand("AAPL"), cand("MSFT", score=10)])
    st, emits = run([session(), snapshot(), cb, decisions(cb, {"MSFT": "BLOCK"})], limits=Limits(enforce=True))
    assert [i.symbol for i in intents(emits)] == ["AAPL"]
    (rej,) = rejections(emits)
    assert rej.reasons == ["DECISION_BLOCK"] and rej.detail.startswith("portfolio: LIMIT_GROSS_EXPOSURE")
    (alert,) = [m for _, m in emits if isinstance(m, Alert)]
    assert alert.severity == "warning" and alert.fields == {"MSFT": "DECISION_BLOCK"}
    lines = artifact_bytes(st, D).decode().splitlines()
    import json

    recs = [json.loads(x) for x in lines]
    assert [r["kind"] for r in recs] == ["decision", "decision", "portfolio_decision", "portfolio_decision"]
    assert recs[1]["portfolio_decision"] == "BLOCK" and recs[1]["portfolio_decision_id"]
    assert recs[1]["provenance"]["decision_artifact"] == f"portfolio_decisions/{D}.json"
    assert recs[1]["provenance"]["decision_id"] == recs[1]["portfolio_decision_id"]
    # shadow mode: the same BLOCK is logged, never enforced
    st, emits = run([session(), snapshot(), cb, decisions(cb, {"MSFT": "BLOCK"})])
    assert len(intents(emits)) == 2
    assert [json.loads(x)["enforcement"] for x in artifact_bytes(st, D).splitlines()] == ["shadow"] * 4


PROV = Limits(settings_hash="h-1", code_version="c0de", run_id="run-x")
DECISION_KEYS = {"code_version", "settings_hash", "input:candidates", "input:broker_snapshot", "input:portfolio_decisions",
                 "decision_artifact", "decision_id", "run_id"}


def _lines(st) -> list[dict]:
    import json

    return [json.loads(x) for x in artifact_bytes(st, D).splitlines()]


def test_every_telemetry_line_carries_provenance_and_the_decision_it_applied() -> None:
    import msgspec

    limits = msgspec.structs.replace(PROV, enforce=True)
    cb = batch([cand("AAPL"), cand("MSFT", score=10)])
    dec = decisions(cb, {"MSFT": "BLOCK"})
    st, _ = run([session(), snapshot(), cb, dec], limits=limits)
    recs = _lines(st)
    by_symbol = {d.symbol: d.decision_id for d in dec.decisions}
    for r in recs:
        p = r["provenance"]
        assert (p["code_version"], p["settings_hash"], p["run_id"]) == ("c0de", "h-1", "run-x"), r
        assert p["decision_artifact"] == f"portfolio_decisions/{D}.json" and p["decision_run_id"] == "run-1"
        assert p["input:portfolio_decisions"] == dec.batch_id and p["decision_id"] == by_symbol[r["symbol"]]
    decided = [r for r in recs if r["kind"] == "decision"]
    assert len(decided) == 2 and all(set(r["provenance"]) >= DECISION_KEYS for r in decided)
    assert {r["provenance"]["input:candidates"] for r in decided} == {cb.batch_id}
    assert {r["provenance"]["input:broker_snapshot"] for r in decided} == {snapshot().snapshot_id}


def test_telemetry_says_unknown_when_the_decision_batch_does_not_name_its_artifact_or_is_missing() -> None:
    import msgspec

    limits = msgspec.structs.replace(PROV, enforce=True)
    cb = batch([cand("AAPL")])
    st, _ = run([session(), snapshot(), cb, decisions(cb, provenance={})], limits=limits)
    (line, shadow) = _lines(st)
    assert line["provenance"]["decision_artifact"] == "unknown" == shadow["provenance"]["decision_artifact"]
    assert line["provenance"]["decision_id"] == shadow["decision_id"] != "unknown"
    st, _ = run([session(), snapshot(), cb, session(phase="OPEN")], limits=limits)  # DECISION_FILE_MISSING
    (line,) = _lines(st)
    assert line["reasons"] == ["DECISION_FILE_MISSING"]
    assert {k: line["provenance"][k] for k in ("decision_artifact", "decision_id", "input:portfolio_decisions")} == {
        "decision_artifact": "unknown", "decision_id": "unknown", "input:portfolio_decisions": "unknown"}
    assert line["provenance"]["run_id"] == "run-x" and line["provenance"]["code_version"] == "c0de"


def test_shadow_mode_decision_lines_do_not_depend_on_when_the_decision_batch_arrived() -> None:
    cb = batch([cand("AAPL")])
    dec = decisions(cb)
    early, _ = run([session(), snapshot(), dec, cb], limits=PROV)
    late, _ = run([session(), snapshot(), cb, dec], limits=PROV)
    assert artifact_bytes(early, D) == artifact_bytes(late, D)
    line, shadow = _lines(early)
    assert line["provenance"]["decision_artifact"] == "unknown" and line["provenance"]["run_id"] == "run-x"
    assert shadow["provenance"]["decision_artifact"] == f"portfolio_decisions/{D}.json"


def test_risk_alerts_name_runbook_sections_that_exist() -> None:
    import re

    from services.risk.worker import mode_unknown_alert
    from tests.test_runbook_anchors import anchors as runbook_anchors

    text = (ROOT / "docs" / "runbook.md").read_text()
    anchors = runbook_anchors(ROOT / "docs" / "runbook.md")
    worker_src = (ROOT / "services" / "risk" / "worker.py").read_text()
    used = set(re.findall(r'runbook="([^"]+)"', worker_src)) | {mode_unknown_alert("X").runbook, "invalid-settings"}
    assert used and used <= anchors, used - anchors
    for heading in ("Risk: gates and enforcement", "Risk: fail closed", "Risk: artifacts"):
        assert f"## {heading}" in text
    assert "risk.md#gates-and-reason-codes" in text  # the gate table is linked, not copied
