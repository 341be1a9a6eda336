"""``avwap risk gates|status``: the entry gates in their documented order, and risk's live state."""

from __future__ import annotations

import json

import typer

from avwap.common import operator_redis
from shared.clock import dt_to_ns, ny_datetime
from shared.ids import stable_id
from shared.schemas import BrokerSnapshot, Message, SessionEvent
from shared.streams import BROKER, CLOCK

app = typer.Typer()
risk_app = typer.Typer(help="Entry gates and risk state.", no_args_is_help=True)


def session_prelude(trade_date: str, equity: float = 100_000.0, mode: str = "DRY_RUN") -> list[tuple[str, Message]]:
    """What risk needs before it decides session D: PRE_MARKET(D) and a fresh BrokerSnapshot of D.

    Demos and tests that publish candidates by hand publish these first (live: the scheduler and
    the executor do; replay: the driver and the executor).
    """
    ts = dt_to_ns(ny_datetime(trade_date, "08:30"))
    snap = BrokerSnapshot(snapshot_id=stable_id("bs", trade_date, ts, "prelude"), mode=mode, trade_date=trade_date, ts=ts,
                          equity=equity, cash=equity, buying_power=equity, reason="pre_market")
    return [(CLOCK, SessionEvent(trade_date=trade_date, phase="PRE_MARKET", ts=ts)), (BROKER, snap)]


@risk_app.command("gates")
def gates(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Every entry gate with its reason code, in the order Rejection.reasons lists them."""
    from services.risk.gates import GATES

    if as_json:
        typer.echo(json.dumps([g._asdict() for g in GATES], indent=2))
        return
    for i, g in enumerate(GATES, start=1):
        typer.echo(f"{i:>2}. {g.code:<40} {g.gate:<26} {g.blocks_when}")


@risk_app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text.")) -> None:
    """Current session, snapshot, held batches, entries today, pending entries, trading state, gate settings,
    and the codes that refuse every entry right now (`every_entry_blocked_by`: the global gates, and
    SESSION_NOT_STARTED / SNAPSHOT_MISSING / SNAPSHOT_UNRECONCILED while the session's prerequisites are
    missing; empty when none does)."""
    from avwap.commands.state import plain
    from services.risk.core import Limits, global_codes
    from services.risk.gates import ordered
    from services.risk.store import load_state
    from services.risk.worker import controls_for, live_token_status
    from shared.controls import read_kill_switch
    from shared.settings import get_settings

    settings = get_settings()
    with operator_redis() as r:
        _, st = load_state(r)
        ks = read_kill_switch(r)
        controls = controls_for(r, settings, None)

    limits = Limits.from_settings(settings.risk)
    snap = st.broker
    # what a batch of the current session would wait for or be refused by now (the decision step's prerequisites)
    waits = set() if st.session and "PRE_MARKET" in st.clock.get(st.session, {}) else {"SESSION_NOT_STARTED"}
    if snap is None or snap.trade_date != st.session:
        waits.add("SNAPSHOT_MISSING")
    elif not snap.reconciled:
        waits.add("SNAPSHOT_UNRECONCILED")
    info = {
        "session": st.session or "-",
        "phases_seen": sorted(k for k in st.clock.get(st.session, {}) if not k.endswith("_ms")),
        "broker_snapshot": None if snap is None else {"id": snap.snapshot_id, "trade_date": snap.trade_date, "ts": snap.ts,
                                                      "equity": snap.equity, "cash": snap.cash, "reconciled": snap.reconciled,
                                                      "positions": len(snap.positions)},
        "held_batches": sorted(f"{b.scan_date}:{b.batch_id}" for b in st.held.values()),
        "entries_by_ny_day": st.entries_by_day,
        "pending_entries": sorted(f"{p.symbol}:{p.qty}:{p.status}" for p in st.pending.values()),
        "decided_today": len(st.decided.get(st.session, {})),
        "trading_state": controls.trading_state,
        "kill_switch": {"redis": ks, "env": settings.core.kill_switch},
        "execution_mode": settings.core.execution_mode,
        "execution_mode_known": settings.core.mode_known,
        "every_entry_blocked_by": ordered(global_codes(controls, limits, st.session) | waits),
        "live_gate": live_token_status(settings),
        "enforce_portfolio_decisions": limits.enforce,
        "phase_c": {"enabled": limits.phase_c_enabled, "date": limits.phase_c_enable_date, "allowlist": list(limits.phase_c_allowlist)},
        "allowlist": list(limits.allowlist) or "all",
    }
    if as_json:
        typer.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    for k, v in info.items():
        typer.echo(f"{k:<28} {plain(v)}")
    if not info["every_entry_blocked_by"]:
        typer.echo("no gate refuses every entry right now (each candidate is still gated on its own)")


app.add_typer(risk_app, name="risk")
