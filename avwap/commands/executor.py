"""Executor commands: start-gate check, state, ledgers, the live feed."""

from __future__ import annotations

import json

import msgspec
import typer

from avwap.common import fail, operator_redis
from shared.artifacts import read_jsonl
from shared.settings import get_settings
from shared.streams import state_key

app = typer.Typer(no_args_is_help=True)
ex_app = typer.Typer(help="Executor: start gates, state, ledgers, live feed.", no_args_is_help=True)
app.add_typer(ex_app, name="executor")


def _mode(mode: str | None) -> str:
    return mode or get_settings().core.execution_mode


@ex_app.command("check")
def check() -> None:
    """Would the executor start with this environment? (mode, endpoint, live gate, keys)"""
    from services.executor.settings import BrokerSettings
    from services.executor.worker import refusal

    settings = get_settings()
    reason = refusal(settings, BrokerSettings())
    if reason:
        fail(f"{settings.core.execution_mode} would refuse to start: {reason}", code=2)
    typer.echo(f"{settings.core.execution_mode}: start gates pass")
    if protection_report(settings.core.execution_mode, settings.core.redis_url):
        raise typer.Exit(3)


def protection_report(mode: str, redis_url: str | None) -> int:
    """Print, from the mode's latest broker snapshot, whether each position's live sell stops cover it
    exactly (``core.coverage``); returns the number of gaps. No Redis or no snapshot: says so, 0."""
    from services.executor.core import coverage
    from shared.redis_conn import connect
    from shared.schemas import BrokerSnapshot, decode
    from shared.streams import BROKER

    if not redis_url:
        typer.echo("protection: not checked (REDIS_URL not set)")
        return 0
    try:
        r = connect(redis_url)
        rows = r.xrevrange(BROKER, count=200)
    except (OSError, Exception) as exc:  # noqa: BLE001 - the gates answer stands; the check is informative
        typer.echo(f"protection: not checked (Redis: {type(exc).__name__})")
        return 0
    snap = next((m for _, f in rows if isinstance(m := decode(f[b"data"]), BrokerSnapshot) and m.mode == mode), None)
    if snap is None:
        typer.echo(f"protection: no {mode} broker snapshot yet")
        return 0
    gaps = coverage(snap)
    held = {p.symbol: p.qty for p in snap.positions}
    typer.echo(f"protection at snapshot {snap.reason} {snap.trade_date} ({len(held)} positions):")
    bad = {g.symbol: g for g in gaps}
    for sym in sorted(set(held) | set(bad)):
        g = bad.get(sym)
        if g is None:
            typer.echo(f"  {sym}: {held[sym]} shares, stops cover {held[sym]}: ok")
        else:
            what = "UNDER-COVERED" if g.stop_qty < g.position_qty else "OVER-COVERED (a stop would open a short)"
            typer.echo(f"  {sym}: {g.position_qty} shares, stops cover {g.stop_qty}: {what}")
    return len(gaps)


@ex_app.command("status")
def status(mode: str = typer.Option(None, help="Mode whose state to show (default: EXECUTION_MODE)."),
           as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Reconciliation flag, entries awaiting confirmation, open orders, simulator account."""
    from services.executor.core import DONE, ExecState

    m = _mode(mode)
    with operator_redis() as r:
        raw = r.get(state_key("executor", m, "state"))
        queued = r.llen(state_key("executor", m, "ledger"))
    if not raw:
        fail(f"no executor state for mode {m}")
    st = msgspec.json.decode(raw, type=ExecState)
    out = {
        "mode": m, "reconciled": st.reconciled, "ledger_queue": queued,
        "pending_entries": [{"intent_id": p.intent.intent_id, "symbol": p.intent.symbol, "trade_date": p.intent.trade_date,
                             "entry_level": p.intent.entry_level} for p in st.pending.values()],
        "open_orders": [{"client_order_id": o.client_order_id, "kind": o.kind, "symbol": o.symbol, "side": o.side,
                         "qty": o.qty, "status": o.status, "stop_price": o.stop_price, "broker_order_id": o.broker_order_id}
                        for o in st.orders.values() if o.status not in DONE],
    }
    if st.sim is not None:
        out["sim"] = {"cash": round(st.sim.cash, 2),
                      "positions": {s: {"qty": p.qty, "avg_price": round(p.avg_price, 4)} for s, p in st.sim.positions.items()}}
    if as_json:
        typer.echo(json.dumps(out, indent=2, sort_keys=True))
        return
    typer.echo(f"executor {m}: reconciled={st.reconciled} ledger_queue={queued}")
    for p in out["pending_entries"]:  # type: ignore[union-attr]
        typer.echo(f"  pending entry {p['symbol']} {p['trade_date']} level={p['entry_level']} ({p['intent_id']})")
    for o in out["open_orders"]:  # type: ignore[union-attr]
        typer.echo(f"  order {o['kind']} {o['side']} {o['qty']} {o['symbol']} {o['status']} stop={o['stop_price']} {o['client_order_id']}")
    if "sim" in out:
        typer.echo(f"  sim cash={out['sim']['cash']} positions={out['sim']['positions']}")  # type: ignore[index]


@ex_app.command("ledger")
def ledger(date: str = typer.Argument(..., help="NY trade date YYYY-MM-DD."),
           mode: str = typer.Option(None, help="Mode (default: EXECUTION_MODE).")) -> None:
    """Print one day's execution ledger (torn lines are skipped with a warning)."""
    from pathlib import Path

    m = _mode(mode)
    path = Path(get_settings().core.ledger_dir) / m / f"{date}.jsonl"
    if not path.exists():
        fail(f"no ledger at {path}")
    for rec in read_jsonl(path):
        if rec.get("record") == "rejection":
            typer.echo(f"{rec['ts']} REJECT {rec['symbol']} {','.join(rec['reasons'])} {rec['intent_id']}")
        else:
            price = f" {rec['fill_qty']}@{rec['fill_price']}" if rec.get("fill_price") is not None else ""
            typer.echo(f"{rec['ts']} {rec['event']:<16} {rec['kind']:<5} {rec['side']:<4} {rec['qty']:>6} {rec['symbol']:<6}"
                       f"{price} coid={rec['client_order_id']} broker={rec.get('broker_order_id', '')}")


@ex_app.command("feed")
def feed(once: bool = typer.Option(False, "--once", help="One tick, then exit.")) -> None:
    """Run the live market-data feed and session scheduler (same as `python -m services.executor.feed`)."""
    from services.executor.feed import main as feed_main

    raise typer.Exit(feed_main(["--once"] if once else []))
