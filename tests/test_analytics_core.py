"""Analytics pure core: trades, excursions, snapshot metrics (vs empyrical), reconciliation, decisions."""

from __future__ import annotations

import math

import empyrical
import numpy as np
import pytest

from services.analytics.decisions import Guardrails, decide
from services.analytics.portfolio import build_snapshot, initial_snapshot
from services.analytics.recon import InternalPosition, reconcile
from services.analytics.trades import BarSource, build_trades, fills_from_orders
from shared.ids import stable_id
from shared.schemas import (
    DECISION_REASON_ORDER,
    BrokerOrder,
    BrokerPosition,
    BrokerSnapshot,
    Candidate,
    CandidateBatch,
    ExitEvent,
)
from tests.test_analytics_helpers import at, close_ns, fill, real_store

D1, D2, D3 = "2018-10-01", "2018-10-02", "2018-10-03"


def scaled_trade_orders():
    """Two partial entry fills, a scale-out exit and a stop fill for the rest (plus a duplicate)."""
    return [
        fill("XYZ", "buy", 60, 10.0, at(D1, "10:00"), D1, fees=0.5, stop=9.5, tid="f1", event="partially_filled", cum=60),
        fill("XYZ", "buy", 40, 10.5, at(D1, "10:01"), D1, fees=0.5, stop=9.5, tid="f2", cum=100),
        fill("XYZ", "sell", 50, 11.0, at(D2, "11:00"), D2, kind="exit", intent="x1", fees=0.5, tid="f3"),
        fill("XYZ", "sell", 50, 9.8, at(D3, "09:40"), D3, kind="stop", intent="s1", fees=0.5, tid="f4"),
        fill("XYZ", "buy", 60, 10.0, at(D1, "10:00"), D1, fees=0.5, stop=9.5, tid="f1", event="partially_filled", cum=60),
    ]


def test_trade_reconstruction_partial_fills_and_scale_outs() -> None:
    orders = scaled_trade_orders()
    fills = fills_from_orders(orders)
    assert [f.fill_id for f in fills] == ["f1", "f2", "f3", "f4"]  # duplicate dropped, time order
    ev = ExitEvent(event_id="ex1", kind="STOP_RATCHET", symbol="XYZ", position_id="exits-pos-1", trade_date=D2,
                   ts=at(D2, "12:00"), stop_price=9.8)
    other = ExitEvent(event_id="ex2", kind="STOP_RATCHET", symbol="ABC", position_id="p", trade_date=D2, ts=at(D2, "12:00"))
    (t,) = build_trades(fills, [ev, other])
    assert t.status == "closed" and t.entry_qty == 100 and t.exit_qty == 100 and t.qty_open == 0
    assert t.avg_entry_price == pytest.approx(10.2)
    assert t.avg_exit_price == pytest.approx(10.4)
    assert t.gross_pnl == pytest.approx(50 * 0.8 - 50 * 0.4)  # average cost 10.2
    assert t.fees == pytest.approx(2.0)
    assert t.realized_pnl == pytest.approx(18.0)
    assert t.risk_per_share == pytest.approx(0.7)
    assert t.r_multiple == pytest.approx(18.0 / 70.0)
    assert t.holding_seconds == pytest.approx((at(D3, "09:40") - at(D1, "10:00")) / 1e9)
    assert t.holding_sessions == 2
    assert t.scale_outs == 1 and t.exit_kinds == ["exit", "stop"]
    assert t.exit_event_ids == ["ex1"] and t.exit_position_id == "exits-pos-1"
    assert t.exit_vs_initial_stop == pytest.approx(10.4 - 9.5)
    # stable ids: same fills in any order -> same trade
    (again,) = build_trades(fills_from_orders(list(reversed(orders))), [other, ev])
    assert again == t
    assert t.position_id == stable_id("pos", "XYZ", "f1") and t.trade_id == stable_id("tr", t.position_id)


def test_second_cycle_is_a_new_trade_and_open_trade_keeps_scale_out() -> None:
    orders = scaled_trade_orders()[:4] + [
        fill("XYZ", "buy", 10, 12.0, at(D3, "10:00"), D3, intent="i2", stop=11.0, tid="g1"),
        fill("XYZ", "sell", 4, 13.0, at(D3, "11:00"), D3, kind="exit", intent="x2", tid="g2"),
    ]
    t1, t2 = build_trades(fills_from_orders(orders), as_of_ts=close_ns(D3))
    assert t1.status == "closed" and t2.status == "open"
    assert t1.position_id != t2.position_id
    assert t2.qty_open == 6 and t2.realized_pnl == pytest.approx(4.0) and t2.r_multiple is None
    assert t2.entry_intent_id == "i2"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return real_store(tmp_path_factory.mktemp("bars"))


def _src(store) -> BarSource:
    def daily(sym: str, a: str, b: str):
        return [r for d in store.dates("1d") if a <= d <= b for r in store.daily(sym, through=d, lookback=1)]
    return BarSource(daily=daily, intraday=lambda s, a, b: store.intraday(s, a, b))


def test_mae_mfe_on_real_daily_bars(store) -> None:
    # AAPL 2018-10-01..05 (hand-checked from the vendor file): open Oct 1 227.95, highest high 233.47
    # (Oct 3), lowest low 220.58 (Oct 5).
    orders = [fill("AAPL", "buy", 100, 227.95, close_ns("2018-10-01"), "2018-10-01", stop=224.0, tid="a1"),
              fill("AAPL", "sell", 100, 224.0, close_ns("2018-10-05"), "2018-10-05", kind="stop", intent="s", tid="a2")]
    (t,) = build_trades(fills_from_orders(orders), bars=_src(store))
    assert t.excursion_source == "1d"
    assert t.max_high == pytest.approx(233.47) and t.min_low == pytest.approx(220.58)
    assert t.mae == pytest.approx(227.95 - 220.58)
    assert t.mfe == pytest.approx(233.47 - 227.95)
    assert t.mae_r == pytest.approx((227.95 - 220.58) / 3.95)
    assert t.r_multiple == pytest.approx(-1.0)
    # lows after the entry session: Oct 2 226.63, Oct 3 229.78, Oct 4 226.73, Oct 5 (exit) 220.58:
    # no pivot low formed before the exit bar, so the best stop in hindsight is the initial one
    assert (t.hindsight_stop, t.hindsight_stop_source) == (224.0, "initial")
    assert t.stop_efficiency is None and t.exit_vs_hindsight_stop == pytest.approx(0.0)
    assert t.exit_vs_initial_stop == pytest.approx(0.0) and t.exit_vs_initial_stop_r == pytest.approx(0.0)


def test_stop_efficiency_against_the_hindsight_stop_on_real_daily_bars(store) -> None:
    """AAPL, entry Oct 1 2018 at 227.95, exit Oct 17 (lows from the vendor file, checked by hand):
    Oct 2 226.63, 3 229.78, 4 226.73, 5 220.58, 8 220.20, 9 222.25, 10 216.05, 11 212.32, 12 216.84,
    15 217.27, 16 216.76, 17 219.34. Pivot lows formed before the exit bar: Oct 8 (220.20; its stop
    220.10 is hit on Oct 10) and Oct 11 (212.32; stop 212.22, never traded through before Oct 17).
    Oct 16 is a pivot too but only formed by the exit bar itself."""
    def trade(stop: float, exit_px: float):
        orders = [fill("AAPL", "buy", 100, 227.95, at("2018-10-01", "09:31"), "2018-10-01", stop=stop, tid="h1"),
                  fill("AAPL", "sell", 100, exit_px, at("2018-10-17", "15:00"), "2018-10-17", kind="exit", intent="x",
                       tid="h2")]
        (t,) = build_trades(fills_from_orders(orders), bars=_src(store), stop_buffer=0.10)
        return t

    t = trade(210.0, 219.0)
    assert (t.hindsight_stop, t.hindsight_stop_source) == (pytest.approx(212.22), "1d")
    assert t.stop_efficiency == pytest.approx(9.0 / 2.22)  # (219 - 210) / (212.22 - 210): beat the best stop
    assert t.exit_vs_hindsight_stop == pytest.approx(6.78)
    assert t.exit_vs_initial_stop == pytest.approx(9.0) and t.exit_vs_initial_stop_r == pytest.approx(9.0 / 17.95)
    at_best = trade(210.0, 212.22)
    assert at_best.stop_efficiency == pytest.approx(1.0) and at_best.exit_vs_hindsight_stop == pytest.approx(0.0)
    # an initial stop above every surviving pivot: the structure never offered a better stop
    tight = trade(215.0, 216.0)
    assert (tight.hindsight_stop, tight.hindsight_stop_source, tight.stop_efficiency) == (215.0, "initial", None)


def _minute_fixture(lows: list[float], start: int) -> list:
    """Five identical 1-minute bars per 5-minute bar (low L, high L + 0.3), from ``start`` on."""
    from shared.schemas import BarRow

    out = []
    for k, lo in enumerate(lows):
        for m in range(1, 6):
            ts = start + (5 * k + m) * 60 * 1_000_000_000
            out.append(BarRow(symbol="XYZ", ts=ts, open=lo + 0.1, high=lo + 0.3, low=lo, close=lo + 0.1, volume=100))
    return out


def test_hindsight_stop_uses_five_minute_structure_when_minutes_exist() -> None:
    # 5-minute lows: pivots at bar 1 (9.8 -> stop 9.7), bar 5 (10.2 -> 10.1), bar 8 (10.25 -> 10.15);
    # each survives every bar after its formation up to the exit bar (bar 11): the best is 10.15
    lows = [10.0, 9.8, 9.9, 10.1, 10.3, 10.2, 10.4, 10.5, 10.25, 10.6, 10.7, 10.1]
    t0 = at(D1, "10:00")
    minutes = _minute_fixture(lows, t0)
    src = BarSource(intraday=lambda s, a, b: [m for m in minutes if a <= m.ts <= b])
    end = minutes[-1].ts

    def trade(exit_px: float):
        orders = [fill("XYZ", "buy", 10, 10.2, t0, D1, stop=9.5, tid="i1"),
                  fill("XYZ", "sell", 10, exit_px, end, D1, kind="stop", intent="s", tid="i2")]
        (t,) = build_trades(fills_from_orders(orders), bars=src, stop_buffer=0.10)
        return t

    t = trade(10.15)
    assert (t.hindsight_stop, t.hindsight_stop_source) == (pytest.approx(10.15), "5m")
    assert t.stop_efficiency == pytest.approx(1.0) and t.excursion_source == "1m"
    low = trade(9.8)
    assert low.stop_efficiency == pytest.approx(0.3 / 0.65)
    assert low.exit_vs_hindsight_stop == pytest.approx(-0.35) and low.exit_vs_initial_stop == pytest.approx(0.3)
    # the bar-8 pivot traded through before the exit: the next best surviving stop counts
    hit = lows[:10] + [10.12, 10.1]
    minutes[:] = _minute_fixture(hit, t0)
    assert trade(10.15).hindsight_stop == pytest.approx(10.1)


def test_mae_mfe_on_real_intraday_bars(store) -> None:
    start, end = at("2019-02-12", "10:00"), at("2019-02-13", "15:00")
    bars = store.intraday("MSFT", start, end)
    entry = bars[0].close
    orders = [fill("MSFT", "buy", 10, entry, start, "2019-02-12", stop=entry - 2, tid="m1"),
              fill("MSFT", "sell", 10, bars[-1].close, end, "2019-02-13", kind="exit", intent="x", tid="m2")]
    (t,) = build_trades(fills_from_orders(orders), bars=_src(store))
    hi = max(b.high for b in bars)
    lo = min(b.low for b in bars)
    assert t.excursion_source == "1m" and len(bars) > 500
    assert t.mfe == pytest.approx(hi - entry) and t.mae == pytest.approx(max(0.0, entry - lo))


def _curve_snapshots(marks_by_day: list[tuple[str, dict[str, float]]], orders, capital: float = 100_000.0, window: int = 5):
    snaps = []
    for d, marks in marks_by_day:
        od = [o for o in orders if o.trade_date <= d]
        fills = fills_from_orders(od)
        trades = build_trades(fills)
        snaps.append(build_snapshot(d, capital, fills, trades, marks, {}, [s.equity for s in snaps], window))
    return snaps


def test_snapshot_accounting_hand_checked() -> None:
    orders = [fill("XYZ", "buy", 100, 10.0, at(D1, "10:00"), D1, fees=1.0, stop=9.0, tid="b"),
              fill("ABC", "buy", 10, 50.0, at(D1, "10:00"), D1, fees=1.0, stop=45.0, tid="c"),
              fill("ABC", "sell", 10, 55.0, at(D2, "10:00"), D2, kind="exit", fees=1.0, tid="d")]
    s1, s2 = _curve_snapshots([(D1, {"XYZ": 11.0, "ABC": 49.0}), (D2, {"XYZ": 9.0})], orders, capital=10_000.0)
    assert s1.cash == pytest.approx(10_000 - 1000 - 500 - 2)
    assert s1.equity == pytest.approx(s1.cash + 1100 + 490)
    assert s1.gross_exposure == pytest.approx(1590) and s1.net_exposure == pytest.approx(1590)
    assert s1.unrealized_pnl == pytest.approx(100 - 10) and s1.realized_pnl == pytest.approx(-2.0)
    assert s1.new_entries_today == 2 and s2.new_entries_today == 0
    assert s2.equity == pytest.approx(10_000 + 50 - 3 - 100)
    assert s2.equity == pytest.approx(s2.capital + s2.realized_pnl + s2.unrealized_pnl)
    assert s2.contribution == pytest.approx({"ABC": 50.0 - 2.0, "XYZ": -101.0})
    assert s2.drawdown == pytest.approx(1 - s2.equity / s1.equity)
    assert s1.positions[0].symbol == "ABC"  # sorted


def test_snapshot_metrics_agree_with_empyrical_on_real_bars(store) -> None:
    days = store.dates("1d")
    days = [d for d in days if "2018-09-04" <= d <= "2018-12-31"]
    orders = [fill("AAPL", "buy", 100, 228.0, close_ns(days[0]), days[0], stop=220.0, tid="r1"),
              fill("JPM", "buy", 200, 113.0, close_ns(days[0]), days[0], stop=105.0, tid="r2"),
              fill("JPM", "sell", 200, 108.0, close_ns(days[40]), days[40], kind="exit", tid="r3")]
    marks = [(d, {s: store.daily(s, through=d, lookback=1)[-1].close for s in ("AAPL", "JPM")}) for d in days]
    window = 20
    snaps = _curve_snapshots(marks, orders, window=window)
    eq = np.array([100_000.0] + [s.equity for s in snaps])
    rets = eq[1:] / eq[:-1] - 1
    for k in (5, 30, len(snaps)):
        s = snaps[k - 1]
        r = rets[:k]
        assert abs(s.max_drawdown - (-empyrical.max_drawdown(np.concatenate([[0.0], r])))) < 1e-9
        assert abs(s.rolling_volatility - empyrical.annual_volatility(r[-window:])) < 1e-9
    assert snaps[-1].max_drawdown > 0.05  # AAPL fell hard in Q4 2018: the metric is exercised


def test_initial_snapshot_is_all_cash() -> None:
    s = initial_snapshot(50_000.0)
    assert s.equity == s.cash == s.capital == 50_000.0 and not s.positions
    assert s.provenance["source"] == "starting_capital"


def _bsnap(positions, orders) -> BrokerSnapshot:
    return BrokerSnapshot(snapshot_id="bs1", mode="PAPER_SIM", trade_date=D2, ts=close_ns(D2), equity=1e5, cash=1e5,
                          buying_power=1e5, positions=positions, open_orders=orders, reason="close")


def test_reconciliation_mismatch_types() -> None:
    w0 = at(D2, "09:35")
    internal = {
        "AAA": InternalPosition(symbol="AAA", qty=10, avg_entry_price=10.0, opened_ts=at(D1, "16:00")),  # ok
        "BBB": InternalPosition(symbol="BBB", qty=10, avg_entry_price=10.0, opened_ts=at(D2, "16:00")),  # not at broker
        "CCC": InternalPosition(symbol="CCC", qty=10, avg_entry_price=10.0, opened_ts=at(D1, "16:00")),  # qty, price, stop
    }
    stop = BrokerOrder(client_order_id="known-stop", broker_order_id="b1", symbol="AAA", side="sell",
                       order_type="stop", qty=10, status="new", stop_price=9.0)
    stray = BrokerOrder(client_order_id="stray", broker_order_id="b2", symbol="AAA", side="buy",
                        order_type="market", qty=1, status="new")
    snap = _bsnap([BrokerPosition(symbol="AAA", qty=10, avg_entry_price=10.0),
                   BrokerPosition(symbol="CCC", qty=8, avg_entry_price=10.5),
                   BrokerPosition(symbol="DDD", qty=5, avg_entry_price=20.0)], [stop, stray])
    rec = reconcile(D2, internal, snap, {"known-stop"}, w0, 0.01)
    got = [(m.type, m.symbol, m.key) for m in rec.mismatches]
    assert got == [("MISSING_POSITION", "BBB", "broker"), ("MISSING_POSITION", "DDD", "internal"),
                   ("QUANTITY", "CCC", ""), ("AVERAGE_PRICE", "CCC", ""), ("UNKNOWN_ORDER", "AAA", "stray"),
                   ("STOP_MISSING", "CCC", "")]
    assert rec.status == "mismatch"
    ok = reconcile(D2, {"AAA": internal["AAA"]}, _bsnap([BrokerPosition(symbol="AAA", qty=10, avg_entry_price=10.004)],
                                                        [stop]), {"known-stop"}, w0, 0.01)
    assert ok.status == "ok" and ok.mismatches == []


G = Guardrails(max_open_positions=3, max_new_entries_per_day=2, max_symbol_pct=20.0, max_gross_pct=100.0,
               drawdown_throttle_pct=10.0)


def cand(sym: str, score: float, **kw) -> Candidate:
    base = dict(candidate_id=stable_id("cd", D2, sym), scan_date=D2, symbol=sym, price=50.0, anchor="YTD",
                anchor_date="2018-01-02", avwap=49.0, entry_level=49.0, entry_dist_pct=2.0, stop_loss=47.0,
                target_r1=52.0, target_r2=55.0, trend_score=5.0, avwap_slope=0.5, score=score)
    base.update(kw)
    return Candidate(**base)


def batch(*cs: Candidate, date: str = D2) -> CandidateBatch:
    return CandidateBatch(batch_id=stable_id("cb", date, [c.candidate_id for c in cs]), scan_date=date,
                          market_gate_ok=True, candidates=list(cs))


def test_decisions_guardrails_and_reason_order() -> None:
    orders = [fill("HELD", "buy", 300, 50.0, at(D1, "10:00"), D1, stop=45.0, tid="h")]
    (snap,) = _curve_snapshots([(D1, {"HELD": 50.0})], orders, capital=100_000.0)  # 15% in HELD
    out = decide(D2, batch(cand("AAA", 90), cand("HELD", 80), cand("BBB", 70), cand("CCC", 60)), snap, G)
    by = {d.symbol: d for d in out.decisions}
    assert [d.symbol for d in out.decisions] == ["AAA", "HELD", "BBB", "CCC"]  # by score
    assert by["AAA"].decision == "ALLOW" and by["AAA"].reason_codes == ["ALLOW_WITHIN_LIMITS"]
    assert by["HELD"].reason_codes == ["LIMIT_SYMBOL_CONCENTRATION"]
    assert by["BBB"].decision == "ALLOW"
    # 1 held + 2 allowed = 3 open; 2 new entries used
    assert by["CCC"].reason_codes == ["LIMIT_MAX_OPEN_POSITIONS", "LIMIT_MAX_NEW_ENTRIES_PER_DAY"]
    for d in out.decisions:
        assert d.reason_codes == sorted(d.reason_codes, key=DECISION_REASON_ORDER.index)
    again = decide(D2, batch(cand("CCC", 60), cand("BBB", 70), cand("HELD", 80), cand("AAA", 90)), snap, G)
    assert [d.decision_id for d in again.decisions] == [d.decision_id for d in out.decisions]


def test_decisions_gross_exposure_and_drawdown_throttle() -> None:
    # 9 positions of $1,000 each: 9% of the $100k equity
    orders = [fill(f"S{i}", "buy", 10, 100.0, at(D1, "10:00"), D1, stop=90.0, tid=f"s{i}") for i in range(9)]
    marks = {f"S{i}": 100.0 for i in range(9)}
    (snap,) = _curve_snapshots([(D1, marks)], orders, capital=100_000.0)
    g = Guardrails(max_open_positions=20, max_new_entries_per_day=5, max_symbol_pct=5.0, max_gross_pct=15.0,
                   drawdown_throttle_pct=10.0)
    out = decide(D2, batch(cand("AAA", 90), cand("BBB", 80)), snap, g)  # gross 9% + 5% ok, + 5% more > 15%
    assert [d.reason_codes for d in out.decisions] == [["ALLOW_WITHIN_LIMITS"], ["LIMIT_GROSS_EXPOSURE"]]
    from shared.schemas import replace

    dd = replace(snap, drawdown=0.12)
    out = decide(D2, batch(cand("AAA", 90)), dd, g)
    assert out.decisions[0].reason_codes == ["LIMIT_DRAWDOWN_THROTTLE"]


def test_decisions_fail_closed_codes() -> None:
    snap = initial_snapshot(100_000.0)
    missing = decide(D2, None, snap, G)
    assert missing.decisions == [] and missing.reason_codes == ["CANDIDATES_MISSING"] and missing.date == D2
    unreadable = decide(D2, None, snap, G, candidates_problem="CANDIDATES_PARSE_ERROR")
    assert unreadable.reason_codes == ["CANDIDATES_PARSE_ERROR"] and unreadable.batch_id != missing.batch_id
    late = decide(D2, batch(cand("AAA", 90), cand("BBB", 80)), snap, G, candidates_problem="CANDIDATES_MISSING")
    assert [(d.decision, d.reason_codes) for d in late.decisions] == [("BLOCK", ["CANDIDATES_MISSING"])] * 2
    nosnap = decide(D2, batch(cand("AAA", 90)), None, G)
    assert nosnap.decisions[0].decision == "BLOCK" and nosnap.decisions[0].reason_codes == ["PORTFOLIO_SNAPSHOT_MISSING"]
    from shared.schemas import replace

    bad = decide(D2, batch(cand("AAA", 90), cand("BBB", 80, price=math.nan)), replace(snap, equity=-1.0), G)
    assert [d.reason_codes for d in bad.decisions] == [["PORTFOLIO_SNAPSHOT_INVALID"],
                                                      ["CANDIDATES_PARSE_ERROR", "PORTFOLIO_SNAPSHOT_INVALID"]]
    forced = decide(D2, batch(cand("AAA", 90)), snap, G, snapshot_problem="PORTFOLIO_SNAPSHOT_MISSING")
    assert forced.decisions[0].reason_codes == ["PORTFOLIO_SNAPSHOT_MISSING"]
    wrong_date = decide(D3, batch(cand("AAA", 90)), snap, G)
    assert wrong_date.decisions[0].reason_codes == ["CANDIDATES_PARSE_ERROR"]
    first_day = decide(D2, batch(cand("AAA", 90)), snap, G)
    assert first_day.decisions[0].decision == "ALLOW"  # the starting-capital snapshot trades from day one


def test_ledger_record_keys() -> None:
    from services.analytics.ledger import ledger_file_of, record_key
    from shared.schemas import Alert, BarBatch, BarRow, Rejection, SessionEvent

    rej = Rejection(rejection_id="r1", source="risk", symbol="A", trade_date="", reasons=["X"])
    assert record_key(rej) == ("undated", "rejection:r1")
    assert record_key(SessionEvent(trade_date=D1, phase="OPEN", ts=1)) == (D1, "session_event:OPEN")
    al = Alert(alert_id="al-1", severity="info", kind="k", source="s", title="t", ts=close_ns(D2))
    assert record_key(al) == (D2, "alert:al-1")
    bb = BarBatch(tf="1m", trade_date=D1, bars=[BarRow(symbol="A", ts=1, open=1, high=1, low=1, close=1, volume=1)])
    assert record_key(bb) is None  # minute bars are not ledgered
    assert ledger_file_of("order_event:x") == "ledger" and ledger_file_of("alert:x") == "journal"


def test_decisions_correlation_guardrail_off_by_default_then_blocks_and_fails_closed() -> None:
    import dataclasses

    rng = np.random.default_rng(7)
    base, other = rng.normal(0, 0.01, 60), rng.normal(0, 0.01, 60)
    returns = {"HELD": base.tolist(), "TWIN": (base * 1.5 + rng.normal(0, 0.001, 60)).tolist(),
               "FREE": other.tolist(), "FREE2": (other + rng.normal(0, 0.001, 60)).tolist(),
               "NEW": [math.nan] * 50 + other[:10].tolist()}  # a late listing: 10 returns only
    orders = [fill("HELD", "buy", 10, 50.0, at(D1, "10:00"), D1, stop=45.0, tid="h")]
    (snap,) = _curve_snapshots([(D1, {"HELD": 50.0})], orders)
    g = Guardrails(max_open_positions=10, max_new_entries_per_day=10, max_symbol_pct=10.0, max_gross_pct=100.0,
                   drawdown_throttle_pct=10.0)
    b = batch(cand("TWIN", 90), cand("FREE", 80), cand("FREE2", 70), cand("NEW", 60))
    assert {d.decision for d in decide(D2, b, snap, g, returns=returns).decisions} == {"ALLOW"}  # off: never consulted
    on = dataclasses.replace(g, max_correlation=0.8, correlation_window=60)
    by = {d.symbol: d.reason_codes for d in decide(D2, b, snap, on, returns=returns).decisions}
    assert by["TWIN"] == ["LIMIT_CORRELATION"]  # moves with the held position
    assert by["FREE"] == ["ALLOW_WITHIN_LIMITS"]
    assert by["FREE2"] == ["LIMIT_CORRELATION"]  # moves with FREE, allowed a moment ago
    assert by["NEW"] == ["LIMIT_CORRELATION"]  # 10 common returns < half the window: fail closed
    empty = decide(D2, batch(cand("FREE", 80)), _curve_snapshots([(D1, {})], [])[0], on, returns={})
    assert empty.decisions[0].reason_codes == ["ALLOW_WITHIN_LIMITS"]  # nothing to be correlated with


def test_correlation_agrees_with_numpy_on_real_returns(store) -> None:
    from services.analytics.decisions import correlation

    closes = {s: np.array([b.close for b in store.daily(s, through="2018-12-31", lookback=61)]) for s in ("AAPL", "MSFT")}
    a, b = (np.diff(c) / c[:-1] for c in closes.values())
    assert correlation(a, b, 30) == pytest.approx(float(np.corrcoef(a, b)[0, 1]), rel=1e-12)
    assert correlation(a, a * 0 + 0.01, 30) is None  # a flat series has no correlation


def test_worker_returns_come_from_bars_before_the_decision_date(store) -> None:
    """The correlation guardrail's inputs: close-to-close returns of the sessions before D only."""
    from services.analytics.bars import Bars

    got = Bars(str(store.root)).returns(["AAPL", "MSFT", "NOPE"], before="2018-11-01", window=20)
    for s in ("AAPL", "MSFT"):
        c = np.array([b.close for b in store.daily(s, before="2018-11-01", lookback=21)])
        assert got[s] == pytest.approx((c[1:] / c[:-1] - 1).tolist(), rel=1e-12)
    assert len(got["NOPE"]) == 20 and all(math.isnan(x) for x in got["NOPE"])  # unknown: NaN, fails closed
