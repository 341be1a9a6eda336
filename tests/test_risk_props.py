"""Property tests: no sequence of candidates, fills, snapshots, redeliveries and restarts exceeds a cap;
the kill switch blocks every entry; decisions are deterministic."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings, target
from hypothesis import strategies as st

from services.risk.core import Controls, Limits, RiskState, build_book, decode_state, encode_state, step
from shared.schemas import Alert, EntryIntent, ExitEvent, ExitIntent, OrderEvent, Rejection, StopIntent
from tests.test_risk_support import batch, cand, position, session, snapshot

SESSIONS = ["2018-03-08", "2018-03-09", "2018-03-12", "2018-11-02", "2018-11-05"]
SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF"]
LIMITS = Limits(max_risk_per_trade=400.0, max_gross_exposure=30_000.0, max_notional_per_symbol=12_000.0,
                max_concurrent_positions=3, max_new_entries_per_day=2, max_gross_exposure_pct=100.0)

cand_st = st.tuples(st.sampled_from(SYMBOLS), st.floats(20, 300), st.floats(0.05, 3.5), st.integers(0, 100))
action = st.one_of(
    st.tuples(st.just("batch"), st.lists(cand_st, min_size=1, max_size=5)),
    st.tuples(st.just("fill"), st.integers(0, 20)),
    st.tuples(st.just("cancel"), st.integers(0, 20)),
    st.tuples(st.just("sell"), st.integers(0, 20)),
    st.tuples(st.just("snapshot"), st.none()),
    st.tuples(st.just("next_session"), st.none()),
    st.tuples(st.just("redeliver"), st.none()),
    st.tuples(st.just("restart"), st.none()),
)


class Sim:
    """A minimal broker: positions from our fills, cash moves with them."""

    def __init__(self) -> None:
        self.positions: dict[str, tuple[int, float]] = {}
        self.cash = 40_000.0
        self.equity = 40_000.0
        self.i = 0

    def snap(self, d: str, ts: int | None = None):
        return snapshot(d, equity=self.equity, cash=self.cash,
                        positions=[position(s, q, p) for s, (q, p) in sorted(self.positions.items())], ts=ts)


def check_caps(state: RiskState, limits: Limits) -> None:
    for day, n in state.entries_by_day.items():
        assert n <= limits.max_new_entries_per_day, (day, n)
    if state.broker is None:
        return
    book = build_book(state, state.broker, state.session)
    assert len(book.open_symbols) <= limits.max_concurrent_positions
    assert book.gross <= limits.max_gross_exposure + 1e-6
    assert all(v <= limits.max_notional_per_symbol + 1e-6 for v in book.by_symbol.values())
    assert book.cash_free >= -1e-6


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(action, min_size=1, max_size=40), st.booleans())
def test_no_sequence_exceeds_any_cap(actions, kill: bool) -> None:
    sim = Sim()
    controls = Controls(kill_switch="on" if kill else "off")
    state = RiskState()
    si = 0
    d = SESSIONS[si]
    intents: dict[str, EntryIntent] = {}
    seen_ids: list[str] = []
    last = None
    msgs = [session(d), sim.snap(d)]
    per_day: dict[str, int] = {}

    def apply(m):
        nonlocal state, last
        res = step(state, m, controls, LIMITS)
        state = res.state
        last = m
        for _, out in res.emits:
            if isinstance(out, EntryIntent):
                seen_ids.append(out.intent_id)
                intents[out.intent_id] = out
                per_day[out.trade_date] = per_day.get(out.trade_date, 0) + 1
        check_caps(state, LIMITS)

    for m in msgs:
        apply(m)
    for kind, arg in actions:
        if kind == "batch":
            cs = [cand(s, entry=round(e, 2), stop=round(e - r, 2), score=sc, d=d) for s, e, r, sc in arg]
            uniq = {c.symbol: c for c in cs}
            apply(batch(uniq.values(), d=d))
        elif kind in ("fill", "cancel") and state.pending:
            key = sorted(state.pending)[arg % len(state.pending)]
            pe = state.pending[key]
            if pe.status != "open":
                continue
            sim.i += 1
            ev = "filled" if kind == "fill" else "cancelled"
            if kind == "fill":
                q, _ = sim.positions.get(pe.symbol, (0, 0.0))
                sim.positions[pe.symbol] = (q + pe.qty, pe.notional / pe.qty)
                sim.cash -= pe.notional
            apply(OrderEvent(event_id=f"e{sim.i}", event=ev, mode="PAPER_SIM", intent_id=pe.intent_id,
                             client_order_id=pe.client_order_id, symbol=pe.symbol, side="buy", kind="entry", qty=pe.qty,
                             filled_qty=pe.qty if kind == "fill" else 0, fill_price=pe.notional / pe.qty,
                             trade_date=d, ts=state.clock[d]["PRE_MARKET"] + sim.i))
        elif kind == "sell" and sim.positions:
            sym = sorted(sim.positions)[arg % len(sim.positions)]
            q, p = sim.positions.pop(sym)
            sim.cash += q * p
        elif kind == "snapshot":
            apply(sim.snap(d, ts=state.clock[d]["PRE_MARKET"] + 10_000 + sim.i))
        elif kind == "next_session" and si + 1 < len(SESSIONS):
            si += 1
            d = SESSIONS[si]
            # the executor expires unfilled day orders at the close; risk drops them at PRE_MARKET
            apply(session(d))
            apply(sim.snap(d))
        elif kind == "redeliver" and last is not None:
            apply(last)
        elif kind == "restart":
            state = decode_state(encode_state(state))
    assert len(seen_ids) == len(set(seen_ids)), "an intent was published twice"
    assert all(n <= LIMITS.max_new_entries_per_day for n in per_day.values())
    if kill:
        assert not intents


@settings(max_examples=60, deadline=None)
@given(st.lists(cand_st, min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_decisions_are_deterministic_whatever_the_order(cands, rnd) -> None:
    d = SESSIONS[0]
    cs = list({s: cand(s, entry=round(e, 2), stop=round(e - r, 2), score=sc, d=d) for s, e, r, sc in cands}.values())
    msgs = [session(d), snapshot(d, equity=40_000.0), batch(cs, d=d)]
    outs = []
    for _ in range(3):
        order = msgs[:]
        rnd.shuffle(order)
        state = RiskState()
        emitted = []
        for m in order:
            res = step(state, m, Controls(), LIMITS)
            state = res.state
            emitted += [o for _, o in res.emits]
        outs.append([(type(o).__name__, getattr(o, "intent_id", ""), getattr(o, "qty", 0), getattr(o, "reasons", []))
                     for o in emitted])
    assert outs[0] == outs[1] == outs[2]


# -- the kill switch blocks every entry and no exit ---------------------------------------------
SWITCH = st.sampled_from(["off", "on", "unreadable", "env"])


def _controls(switch: str) -> Controls:
    return Controls(kill_switch="off" if switch == "env" else switch, kill_switch_env=switch == "env")


def _exit_message(kind: str, symbol: str, i: int, d: str, ts: int):
    if kind == "stop":
        return StopIntent(intent_id=f"st{i}", symbol=symbol, trade_date=d, action="place", qty=10, stop_price=90.0, ts=ts)
    if kind == "exit":
        return ExitIntent(intent_id=f"ex{i}", symbol=symbol, trade_date=d, qty=10, reason="target", ts=ts)
    if kind == "exit_event":
        return ExitEvent(event_id=f"ee{i}", kind="stop_filled", symbol=symbol, position_id=f"p{i}", trade_date=d, ts=ts,
                         qty=10, exit_price=90.0)
    return OrderEvent(event_id=f"oe{i}", event="filled", mode="PAPER_SIM", intent_id=f"st{i}", client_order_id=f"c{i}",
                      symbol=symbol, side="sell", kind=kind.removeprefix("fill_"), qty=10, filled_qty=10, fill_qty=10,
                      fill_price=90.0, trade_date=d, ts=ts)


kill_action = st.one_of(
    st.tuples(st.just("batch"), st.lists(cand_st, min_size=1, max_size=4)),
    st.tuples(st.just("fill"), st.integers(0, 20)),
    st.tuples(st.just("snapshot"), st.none()),
    st.tuples(st.just("open"), st.none()),
    st.tuples(st.just("next_session"), st.none()),
    st.tuples(st.sampled_from(["stop", "exit", "exit_event", "fill_stop", "fill_exit"]), st.sampled_from(SYMBOLS)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(kill_action, SWITCH), min_size=1, max_size=40), SWITCH)
@example([(("batch", [("AAA", 100.0, 2.0, 5)]), "on"), (("stop", "AAA"), "on"), (("batch", [("BBB", 50.0, 1.0, 1)]), "env"),
          (("fill_exit", "AAA"), "unreadable"), (("batch", [("CCC", 80.0, 1.0, 1)]), "unreadable")], "on")
def test_kill_switch_blocks_every_entry_and_no_exit(steps, first: str) -> None:
    """Whatever the sequence and however the switch flips between messages: every decision taken while
    it blocks (on, env, unreadable) is a rejection carrying its code and no intent; exit-side messages
    are never rejected, never held and never change risk's state, whatever the switch."""
    sim = Sim()
    state = RiskState()
    si = 0
    d = SESSIONS[si]
    blocked_decisions = 0

    def apply(m, switch: str) -> None:
        nonlocal state, blocked_decisions
        res = step(state, m, _controls(switch), LIMITS)
        if switch != "off":
            code = "KILL_SWITCH_UNREADABLE" if switch == "unreadable" else "KILL_SWITCH_ON"
            assert not [o for _, o in res.emits if isinstance(o, EntryIntent)], "an entry passed a blocking switch"
            rejs = [o for _, o in res.emits if isinstance(o, Rejection)]
            assert all(code in r.reasons for r in rejs), [r.reasons for r in rejs]
            if rejs:
                blocked_decisions += len(rejs)
                assert any(isinstance(o, Alert) and o.kind == "entry_blocked" for _, o in res.emits)
        state = res.state

    apply(session(d), first)
    apply(sim.snap(d), first)
    for i, ((kind, arg), switch) in enumerate(steps, start=1):
        ts = state.clock[d]["PRE_MARKET"] + i
        if kind == "batch":
            apply(batch({c.symbol: c for c in (cand(s, entry=round(e, 2), stop=round(e - r, 2), score=sc, d=d)
                                              for s, e, r, sc in arg)}.values(), d=d), switch)
        elif kind == "fill" and state.pending:
            pe = state.pending[sorted(state.pending)[arg % len(state.pending)]]
            apply(OrderEvent(event_id=f"f{i}", event="filled", mode="PAPER_SIM", intent_id=pe.intent_id,
                             client_order_id=pe.client_order_id, symbol=pe.symbol, side="buy", kind="entry", qty=pe.qty,
                             filled_qty=pe.qty, fill_price=pe.notional / pe.qty, trade_date=d, ts=ts), switch)
        elif kind == "snapshot":
            apply(sim.snap(d, ts=ts), switch)
        elif kind == "open":
            apply(session(d, "OPEN"), switch)
        elif kind == "next_session" and si + 1 < len(SESSIONS):
            si += 1
            d = SESSIONS[si]
            apply(session(d), switch)
            apply(sim.snap(d), switch)
        elif kind in ("stop", "exit", "exit_event", "fill_stop", "fill_exit"):
            before = encode_state(state)
            res = step(state, _exit_message(kind, arg, i, d, ts), _controls(switch), LIMITS)
            assert res.emits == [] and encode_state(res.state) == before  # never gated, held or counted
    if all(sw != "off" for _, sw in steps) and first != "off":
        assert not state.pending and all(n == 0 for n in state.entries_by_day.values())
    target(float(blocked_decisions))  # steer the search towards many decisions under a blocking switch
