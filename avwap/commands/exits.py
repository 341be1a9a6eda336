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


app.add_typer(exits_app, name="exits")
