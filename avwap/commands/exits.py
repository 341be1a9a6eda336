"""``avwap exits status``: every position the exits service holds, its stops and why they are what they are."""

from __future__ import annotations

import json

import typer

from avwap.common import operator_redis
from shared.clock import NY, ns_to_dt

app = typer.Typer()
exits_app = typer.Typer(help="Positions and protective stops of the exits service.", no_args_is_help=True)


def _when(ts: int) -> str:
    return ns_to_dt(ts, NY).strftime("%Y-%m-%d %H:%M") if ts else "-"


@exits_app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
           closed: bool = typer.Option(False, "--closed", help="Also list positions closed but not yet forgotten.")) -> None:
    """Open positions with their desired / sent / live stop, the bar the stop comes from, what it waits
    for, orphan stops to cancel, and the counted reasons of ignored bars and events."""
    from services.exits.core import status_row
    from services.exits.worker import INDEX_KEY, STATS_KEY, decode_index, load_positions

    with operator_redis() as r:
        index = decode_index(r.get(INDEX_KEY))
        positions = load_positions(r, include_closed=closed)
        stats = {k.decode(): int(v) for k, v in r.hgetall(STATS_KEY).items()}
    rows = [status_row(p) for _, p in sorted(positions.items())]
    info = {
        "session": index.session or "-",
        "open": index.open,
        "last_1m_bar": _when(index.last_minute_ts),
        "last_1d_bar": _when(index.last_daily_ts),
        "last_snapshot": _when(index.last_snapshot_ts),
        "orphan_stops": {c: f"{o.symbol} ({o.reason}){' cancel sent' if o.sent else ''}" for c, o in sorted(index.orphans.items())},
        "positions": rows,
        "counts": dict(sorted(stats.items())),
    }
    if as_json:
        typer.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    typer.echo(f"session {info['session']}  last 1m bar {info['last_1m_bar']}  last 1d bar {info['last_1d_bar']}  "
               f"last snapshot {info['last_snapshot']}")
    if not rows:
        typer.echo("no positions")
    else:
        head = f"{'symbol':<7} {'qty':>6} {'entry':>9} {'initial':>9} {'desired':>9} {'sent':>9} {'live':>9} {'source':<20} {'from bar':<17} waiting"
        typer.echo(head)
        for x in rows:
            live = f"{x['live_stop']:.2f}" if x["live_stop"] else "-"
            wait = x["pending"] or x["blocked"] or ("closed" if x["closed"] else "")
            typer.echo(f"{x['symbol']:<7} {x['qty']:>6} {x['avg_entry_price']:>9.2f} {x['initial_stop']:>9.2f} "
                       f"{x['desired_stop']:>9.2f} {x['current_stop']:>9.2f} {live:>9} {x['source']:<20} "
                       f"{_when(x['ref_bar_ts']):<17} {wait}")
    for c, why in info["orphan_stops"].items():
        typer.echo(f"orphan stop {c}: {why}")
    for k, v in info["counts"].items():
        if not k.startswith("handled:"):
            typer.echo(f"{k:<48} {v}")


@exits_app.command("rebase")
def rebase(symbol: str = typer.Argument(..., help="Symbol of the open position."),
           factor: float = typer.Option(..., "--factor", help="Split ratio the backfill reported (2 for a 2:1 split)."),
           yes: bool = typer.Option(False, "--yes", help="Write it (without: show what would change).")) -> None:
    """Re-base SYMBOL's exit state after a split: prices / FACTOR, shares x FACTOR. Only while the exits
    service is stopped (`docker compose stop exits`): it refuses when exits has a live heartbeat."""
    from avwap.common import fail
    from services.exits.rebase import rebase_position
    from services.exits.worker import GROUP, decode_position, pos_key
    from shared.bus import live_consumers
    from shared.schemas import encode

    sym = symbol.strip().upper()
    with operator_redis() as r:
        raw = r.get(pos_key(sym))
        if not raw:
            fail(f"no exits state for {sym}")
        pos = decode_position(raw)
        if pos.closed:
            fail(f"{sym}: the position is closed; nothing to re-base")
        try:
            new = rebase_position(pos, factor)
        except ValueError as exc:
            fail(str(exc))
        typer.echo(f"{sym}: qty {pos.qty} -> {new.qty}, entry {pos.avg_entry_price:.4f} -> {new.avg_entry_price:.4f}, "
                   f"stop {pos.current_stop:.4f} -> {new.current_stop:.4f}, desired {pos.desired_stop:.4f} -> "
                   f"{new.desired_stop:.4f}, live {pos.live_stop_price:.4f} x {pos.live_stop_qty} -> "
                   f"{new.live_stop_price:.4f} x {new.live_stop_qty}")
        if not yes:
            typer.echo("dry run: add --yes to write it")
            return
        if live_consumers(r, GROUP):
            fail("the exits service is running: `docker compose stop exits` first, then re-run, then start it")
        pipe = r.pipeline(transaction=True)
        pipe.set(pos_key(sym), encode(new))
        pipe.execute()
    typer.echo(f"{sym}: exit state re-based by {factor:g}; start exits and check `avwap exits status` against the broker")


app.add_typer(exits_app, name="exits")
