"""Risk modulation by the regime (REGIME_MODULATION): the table and the drawdown curve, risk's sizing
and analytics' decisions, reason codes on every decision it changes, fail closed on an unknown or
missing regime, nothing changed with the modulation off; signals and exits never touched."""

from __future__ import annotations

import pytest

from services.analytics.decisions import Guardrails, decide
from services.risk.core import DecisionRecord, Limits, RiskState
from shared.artifacts import canonical_json
from shared.ids import stable_id
from shared.regime import Table, drawdown_multiplier, effect
from shared.schemas import PortfolioSnapshot, Regime
from shared.settings import load_settings
from tests.test_risk_support import D, batch, cand, intents, rejections, run, session, snapshot

TABLE = Table.from_settings(load_settings().regime)
PREV = "2018-11-30"


def regime(label: str, session_date: str = D) -> Regime:
    return Regime(regime_id=stable_id("rg", label, session_date), date=PREV, session=session_date, label=label,  # type: ignore[arg-type]
                  rule=label, reason="crafted")


def portfolio(drawdown: float, date: str = PREV) -> PortfolioSnapshot:
    return PortfolioSnapshot(snapshot_id=f"ps-{date}", date=date, capital=100_000.0, cash=100_000.0, equity=100_000.0,
                             gross_exposure=0.0, net_exposure=0.0, positions=[], realized_pnl=0.0, unrealized_pnl=0.0,
                             drawdown=drawdown)


MOD = Limits(modulation=TABLE)


def records(st: RiskState) -> dict[str, DecisionRecord]:
    return {r.symbol: r for r in st.decided[D].values()}


# -- the table and the curve ---------------------------------------------------------------------------
def test_the_drawdown_curve_is_the_documented_one() -> None:
    f = lambda dd: drawdown_multiplier(dd, 3.0, 10.0, 0.25)  # noqa: E731
    assert [f(0.0), f(3.0), f(6.5), f(10.0), f(25.0)] == [1.0, 1.0, 0.625, 0.25, 0.25]
    assert f(None) == 0.25 and f(float("nan")) == 0.25  # unknown drawdown: the floor (fail closed)


def test_each_regime_has_its_row_and_unknown_takes_the_most_conservative_value_of_each_column() -> None:
    assert effect(TABLE, regime("RISK_ON"), 0.0).risk_mult == 1.0
    off = effect(TABLE, regime("RISK_OFF"), 0.0)
    assert (off.risk_mult, off.gross_mult, off.max_entries, off.unknown) == (0.5, 0.5, 2, False)
    for unknown in (None, regime("REGIME_UNKNOWN")):
        e = effect(TABLE, unknown, 0.0)
        assert (e.label, e.risk_mult, e.gross_mult, e.max_entries, e.unknown) == ("REGIME_UNKNOWN", 0.25, 0.25, 1, True)
    assert effect(TABLE, regime("NEUTRAL"), 6.5).risk_mult == pytest.approx(0.75 * 0.625)


# -- risk ----------------------------------------------------------------------------------------------
def test_risk_waits_for_the_sessions_regime_then_sizes_with_its_multiplier() -> None:
    msgs = [session(), snapshot(), batch([cand()])]
    st, emits = run(msgs, limits=MOD)
    assert emits == [] and st.held  # held: D's Regime has not arrived
    st, emits = run([regime("RISK_OFF")], limits=MOD, state=st)
    (intent,) = intents(emits)
    assert intent.qty == 125  # risk budget 500 x 0.5 / (100 - 98); off: 250
    assert records(st)["AAPL"].reasons == ["REGIME_THROTTLED"]
    assert records(st)["AAPL"].provenance["input:regime"] == regime("RISK_OFF").regime_id


def test_a_regime_that_never_arrives_fails_closed_at_open_with_the_most_conservative_row() -> None:
    st, emits = run([session(), snapshot(), batch([cand()]), session(phase="OPEN")], limits=MOD)
    (intent,) = intents(emits)
    assert intent.qty == 62  # 500 x 0.25 / 2
    assert records(st)["AAPL"].reasons == ["REGIME_UNKNOWN", "REGIME_THROTTLED"]
    assert records(st)["AAPL"].provenance["input:regime"] == "unknown"


def test_the_regime_cap_on_new_entries_blocks_with_its_own_code() -> None:
    cands = [cand("AAA", score=90), cand("BBB", score=80), cand("CCC", score=70)]
    st, emits = run([session(), snapshot(), regime("RISK_OFF"), batch(cands)], limits=MOD)
    assert [i.symbol for i in intents(emits)] == ["AAA", "BBB"]  # RISK_OFF: 2 new entries a day (base: 3)
    (rej,) = rejections(emits)
    assert rej.symbol == "CCC" and rej.reasons == ["REGIME_ENTRY_CAP"]
    assert "regime: RISK_OFF" in rej.detail


def test_a_decision_the_base_limits_already_refuse_gets_no_regime_code() -> None:
    cands = [cand(s, score=90 - i) for i, s in enumerate(("AAA", "BBB", "CCC", "DDD"))]
    _, emits = run([session(), snapshot(), regime("STRESSED"), batch(cands)], limits=Limits(modulation=TABLE, max_new_entries_per_day=1))
    assert [r.reasons for r in rejections(emits)] == [["MAX_NEW_ENTRIES_PER_DAY"]] * 3


def test_risk_on_without_drawdown_changes_nothing() -> None:
    msgs = [session(), snapshot(), batch([cand()])]
    _, base = run(msgs)
    st, emits = run([*msgs, regime("RISK_ON")], limits=MOD)
    assert [i.qty for i in intents(emits)] == [i.qty for i in intents(base)] == [200]  # the per-symbol notional binds
    assert records(st)["AAPL"].reasons == []


def test_the_portfolio_drawdown_throttles_by_the_curve() -> None:
    msgs = [session(PREV), portfolio(0.065), session(), snapshot(), regime("RISK_ON"), batch([cand()])]
    st, emits = run(msgs, limits=MOD)
    assert intents(emits)[0].qty == 156  # 500 x 0.625 / 2
    assert records(st)["AAPL"].reasons == ["REGIME_THROTTLED"]


def test_no_portfolio_snapshot_after_an_earlier_session_takes_the_floor() -> None:
    msgs = [session(PREV), session(), snapshot(), regime("RISK_ON"), batch([cand()])]
    _, emits = run(msgs, limits=MOD)
    assert intents(emits)[0].qty == 62  # unknown drawdown: 0.25


def test_a_throttle_to_zero_shares_is_a_rejection() -> None:
    msgs = [session(), snapshot(), regime("STRESSED"), batch([cand(entry=100.0, stop=97.0)])]
    assert intents(run(msgs, limits=Limits(max_risk_per_trade=10.0))[1])[0].qty == 3  # off: 10 / 3
    _, emits = run(msgs, limits=Limits(modulation=TABLE, max_risk_per_trade=10.0))
    (rej,) = rejections(emits)
    assert rej.reasons == ["REGIME_THROTTLED"] and not intents(emits)  # on: 10 x 0.25 / 3 < 1 share


def test_with_the_modulation_off_a_regime_changes_nothing() -> None:
    msgs = [session(), snapshot(), batch([cand("AAA"), cand("BBB", score=10)])]
    st0, base = run(msgs)
    st1, emits = run([regime("STRESSED"), *msgs, regime("STRESSED")])
    assert [canonical_json(m) for _, m in emits] == [canonical_json(m) for _, m in base]
    assert {k: v for k, v in st0.decided.items()} == st1.decided


# -- analytics -----------------------------------------------------------------------------------------
G = Guardrails(max_open_positions=10, max_new_entries_per_day=3, max_symbol_pct=20.0, max_gross_pct=100.0,
               drawdown_throttle_pct=10.0)


def analytics_batch(n: int):
    return batch([cand(f"S{i}", score=90 - i) for i in range(n)])


def codes(b) -> list[list[str]]:
    return [d.reason_codes for d in b.decisions]


def test_analytics_caps_entries_by_the_regime_and_marks_only_what_it_changed() -> None:
    snap = portfolio(0.0, D)
    off = decide(D, analytics_batch(4), snap, G)
    on = decide(D, analytics_batch(4), snap, G, modulation=effect(TABLE, regime("RISK_OFF"), 0.0))
    assert codes(off) == [["ALLOW_WITHIN_LIMITS"]] * 3 + [["LIMIT_MAX_NEW_ENTRIES_PER_DAY"]]
    # RISK_OFF: a cap of 2 new entries (gross 100% x 0.5 = 50% fits two 20% entries too)
    assert codes(on) == [["ALLOW_WITHIN_LIMITS"]] * 2 + [["REGIME_ENTRY_CAP"]] * 2


def test_analytics_throttles_gross_exposure_and_fails_closed_on_an_unknown_regime() -> None:
    snap = portfolio(0.0, D)
    neutral = decide(D, analytics_batch(4), snap, G, modulation=effect(TABLE, regime("NEUTRAL"), 0.0))
    assert codes(neutral)[:3] == [["ALLOW_WITHIN_LIMITS"]] * 3  # 80% gross fits three 20% entries
    dd = decide(D, analytics_batch(4), snap, G, modulation=effect(TABLE, regime("NEUTRAL"), 6.5))
    assert codes(dd)[:3] == [["ALLOW_WITHIN_LIMITS"], ["ALLOW_WITHIN_LIMITS"], ["REGIME_THROTTLED"]]  # 80% x 0.625 = 50%
    unknown = decide(D, analytics_batch(2), snap, G, modulation=effect(TABLE, None, 0.0))
    assert codes(unknown) == [["ALLOW_WITHIN_LIMITS"], ["REGIME_UNKNOWN", "REGIME_ENTRY_CAP"]]
    assert decide(D, analytics_batch(4), snap, G, modulation=effect(TABLE, regime("RISK_ON"), 0.0)) == decide(
        D, analytics_batch(4), snap, G)


# -- signals and exits ---------------------------------------------------------------------------------
def test_the_scanner_candidates_are_byte_identical_with_the_modulation_on_and_off() -> None:
    from services.scanner.session import scan_for
    from shared.bars import Panel, load_bars
    from tests.conftest import SAMPLE_DIR

    frame = load_bars(SAMPLE_DIR / "daily_2017_2018.csv.gz").frame
    for day in ("2018-10-10", "2018-12-24"):
        panel = Panel.from_frame(frame, before=day, lookback=260)
        got = [canonical_json(scan_for(panel, day, load_settings(regime_modulation=flag, scan_market_gate="universe_proxy")).batch)
               for flag in (False, True)]
        assert got[0] == got[1]


def test_no_exit_path_reads_the_regime() -> None:
    from services.exits.worker import STREAMS as EXITS
    from services.scanner.worker import SPEC as SCANNER
    from shared.streams import REGIME

    assert REGIME not in EXITS and REGIME not in SCANNER.streams
    from tests.conftest import ROOT

    for pkg in ("exits", "executor", "scanner"):
        for f in (ROOT / "services" / pkg).glob("*.py"):
            assert "regime" not in f.read_text().lower(), f
