"""``avwap scan``: the daily AVWAP scan from a bar file, "why not X?", and the rq cron scheduler."""

from __future__ import annotations

from pathlib import Path

import typer

from avwap.common import date_or_fail, fail, load_bars_or_fail, need_redis_url
from shared.settings import get_settings

app = typer.Typer()
scan_app = typer.Typer(help="The daily AVWAP scan (watchlist for session D from daily bars before D).",
                       invoke_without_command=True)
app.add_typer(scan_app, name="scan")

def _check_date(date: str) -> None:
    date_or_fail(date)  # the scan for session D runs on sessions only


@scan_app.callback()
def scan(
    ctx: typer.Context,
    bars: Path | None = typer.Option(None, "--bars", exists=True, dir_okay=False, help="Daily bars (CSV, CSV.gz or Parquet)."),
    date: str | None = typer.Option(None, "--date", help="Session D (YYYY-MM-DD): the scan reads only bars dated before D."),
    universe: Path | None = typer.Option(None, "--universe", exists=True, dir_okay=False,
                                         help="Universe file (SYMBOL[,SECTOR] per line); default SCAN_UNIVERSE_FILE, else every symbol."),
    out: Path | None = typer.Option(None, "--out", help="Artifacts directory (default ARTIFACTS_DIR); files go to OUT/candidates/."),
    publish: bool = typer.Option(False, "--publish", help="Also publish the batch on avwap:candidates (REDIS_URL; once per session)."),
    shards: int = typer.Option(1, "--shards", min=1, help="Split the universe into N rq jobs (REDIS_URL and `rq worker avwap-scan`)."),
    top: int = typer.Option(10, "--top", min=0, help="Candidates shown in the summary table."),
) -> None:
    """Scan FILE for session --date, write the artifacts and print a summary (subcommands: why, cron)."""
    if ctx.invoked_subcommand:
        return
    if bars is None or date is None:
        fail("usage: avwap scan --bars FILE --date YYYY-MM-DD [--universe FILE] [--out DIR] [--publish] [--shards N]")
    _check_date(date)
    from services.scanner.artifacts import write_artifacts
    from services.scanner.session import publish_once, scan_for
    from shared.bars import Panel

    settings = get_settings()
    loaded = load_bars_or_fail(bars, tf="1d")
    r = None
    if shards > 1 or publish:
        from shared.redis_conn import connect

        r = connect(need_redis_url(settings))
    panel = Panel.from_frame(loaded.frame, before=date, lookback=settings.scanner.scan_history_bars)
    if not panel.dates:
        f = loaded.frame
        span = f"{f['trade_date'].min()} .. {f['trade_date'].max()}" if len(f) else "no good rows"
        fail(f"no daily bars before {date} in {bars.name} (it covers {span}); the scan for D reads the bars before D")
    result = scan_for(panel, date, settings, r=r, universe_file=str(universe) if universe else None, shards=shards)
    root = out if out is not None else Path(settings.core.artifacts_dir)
    files = write_artifacts(root, result)
    counts = loaded.counts()
    typer.echo(f"bars: {len(loaded.frame)} rows from {bars.name}; rejected {sum(counts.values())} {counts or ''}".rstrip())
    print_summary(result, top)
    for f in files.values():
        typer.echo(f"wrote {f}")
    if publish:
        assert r is not None
        if publish_once(r, result, owner="cli", maxlen=settings.core.bus_maxlen):
            typer.echo(f"published batch {result.batch.batch_id} on avwap:candidates")
        else:
            typer.echo(f"not published: a batch for {date} is already on avwap:candidates (one batch per session)")


def print_summary(result, top: int) -> None:  # noqa: ANN001 - ScanResult
    from rich.console import Console
    from rich.table import Table

    b = result.batch
    con = Console(width=140)
    gate = "[green]open[/]" if b.market_gate_ok else "[red]CLOSED[/]"
    con.print(f"scan for session [bold]{b.scan_date}[/] (bars through {b.bars_through or '-'}): universe "
              f"{b.universe_size}, candidates {len(b.candidates)}, market gate {gate} ({b.market_gate_reason})")
    counts = Table(title="symbols per outcome (first failing filter)")
    counts.add_column("outcome")
    counts.add_column("symbols", justify="right")
    for k, v in b.counts.items():
        counts.add_row(k, str(v))
    con.print(counts)
    if b.candidates and top:
        t = Table(title=f"top {min(top, len(b.candidates))} candidates")
        for col in ("#", "symbol", "anchor", "anchor date", "close", "entry", "dist %", "stop", "R1", "R2",
                    "trend", "tier", "score", "setups"):
            t.add_column(col, justify="left" if col in ("symbol", "anchor", "anchor date", "tier", "setups") else "right")
        for c in b.candidates[:top]:
            t.add_row(str(c.rank), c.symbol, c.anchor, c.anchor_date, f"{c.price:.2f}", f"{c.entry_level:.2f}",
                      f"{c.entry_dist_pct:.2f}", f"{c.stop_loss:.2f}", f"{c.target_r1:.2f}", f"{c.target_r2:.2f}",
                      f"{c.trend_score:.1f}", c.trend_tier, f"{c.score:.1f}", ",".join(c.setups))
        con.print(t)


@scan_app.command("why")
def why(
    symbol: str = typer.Argument(..., help="Symbol to explain."),
    date: str = typer.Option(..., "--date", help="Session D of the scan."),
    artifacts: Path | None = typer.Option(None, "--artifacts", help="Artifacts directory (default ARTIFACTS_DIR)."),
) -> None:
    """Why was SYMBOL (not) a candidate for session D? Reads candidates/D.json and D.rejects.json."""
    from services.scanner.artifacts import explain

    _check_date(date)
    root = artifacts if artifacts is not None else Path(get_settings().core.artifacts_dir)
    found, text = explain(root, symbol, date)
    typer.echo(text)
    if not found:
        raise typer.Exit(1)


@scan_app.command("cron")
def cron() -> None:
    """Run rq's cron scheduler: the pre-market scan at SCAN_CRON (New York time) on NYSE sessions."""
    from services.scanner.schedule import build_scheduler
    from shared.redis_conn import connect

    settings = get_settings()
    sched = build_scheduler(connect(need_redis_url(settings)), settings)
    job = sched.get_jobs()[0]
    typer.echo(f"scan cron {settings.scanner.scan_cron!r} (America/New_York) on queue {settings.scanner.scan_rq_queue}; "
               f"next {job.next_enqueue_time}")
    sched.start()
