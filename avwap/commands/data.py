"""``avwap data import|check|backfill``: load a bar file into the bar store, report its defects, or fetch
the history from Alpaca's market-data API."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from avwap.common import load_bars_or_fail
from shared.settings import get_settings

app = typer.Typer()
data_app = typer.Typer(help="Bars: import a file into the bar store, check it for defects, backfill from Alpaca.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


def defect_report(res, show: int = 20) -> dict[str, object]:  # noqa: ANN001 - LoadResult
    """What ``avwap data check`` prints: counts per reason, examples, coverage, zero-volume and listings."""
    f = res.frame
    first = f.groupby("symbol")["trade_date"].min() if len(f) else None
    last = f.groupby("symbol")["trade_date"].max() if len(f) else None
    start, end = (str(f["trade_date"].min()), str(f["trade_date"].max())) if len(f) else ("", "")
    return {
        "file": Path(res.source).name, "timeframe": res.tf, "good_rows": len(f), "rejected_rows": len(res.rejects),
        "rejected_by_reason": res.counts(), "zero_volume_rows": res.zero_volume,
        "symbols": len(res.symbols()), "first_date": start, "last_date": end,
        "late_listings": int((first > start).sum()) if first is not None else 0,
        "early_endings": int((last < end).sum()) if last is not None else 0,
        "examples": [{"line": r.line, "symbol": r.symbol, "when": r.when, "reason": r.reason} for r in res.rejects[:show]],
    }


@data_app.command("check")
def check(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV, CSV.gz or Parquet bar file."),
    show: int = typer.Option(20, "--show", help="Rejected rows listed."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when any row is rejected."),
) -> None:
    """Report every defect of FILE (nothing is written): rejected rows by reason, zero-volume days, coverage."""
    rep = defect_report(load_bars_or_fail(file), show)
    if as_json:
        typer.echo(json.dumps(rep, indent=2, sort_keys=True))
    else:
        typer.echo(f"{rep['file']}: {rep['timeframe']} bars, {rep['good_rows']} good rows, {rep['rejected_rows']} rejected, "
                   f"{rep['symbols']} symbols, {rep['first_date']} .. {rep['last_date']}")
        for reason, n in rep["rejected_by_reason"].items():  # type: ignore[union-attr]
            typer.echo(f"  rejected {reason}: {n}")
        typer.echo(f"  zero-volume rows (kept; never anchor or weight an AVWAP): {rep['zero_volume_rows']}")
        typer.echo(f"  symbols starting after the first date: {rep['late_listings']}; ending before the last: {rep['early_endings']}")
        for ex in rep["examples"]:  # type: ignore[union-attr]
            typer.echo(f"  line {ex['line']}: {ex['symbol']} {ex['when']} {ex['reason']}")
    if strict and rep["rejected_rows"]:
        raise typer.Exit(1)


@data_app.command("import")
def import_(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV, CSV.gz or Parquet bar file."),
    bars_dir: Path | None = typer.Option(None, "--bars-dir", help="Bar store root (default BARS_DIR)."),
) -> None:
    """Load FILE's good rows into the bar store (re-importing replaces the same bars); rejects are reported."""
    from shared.bars import BarStore

    res = load_bars_or_fail(file)
    root = bars_dir if bars_dir is not None else Path(get_settings().core.bars_dir)
    n = BarStore(root).import_result(res)
    counts = res.counts()
    typer.echo(f"imported {n} {res.tf} rows ({len(res.symbols())} symbols) into {root}; rejected {len(res.rejects)} "
               f"{counts or ''}; zero-volume rows kept {res.zero_volume}".replace("  ", " "))


@data_app.command("backfill")
def backfill_cmd(
    from_: str | None = typer.Option(None, "--from", help="First session (YYYY-MM-DD); default: enough for "
                                     "SCAN_HISTORY_BARS (+10) sessions before now."),
    symbols: Path | None = typer.Option(None, "--symbols", exists=True, dir_okay=False,
                                        help="Universe file (SYMBOL[,SECTOR] per line); default: what the feed fetches "
                                        "(FEED_SYMBOLS, else SCAN_UNIVERSE_FILE) plus the market-gate symbol."),
    intraday: bool = typer.Option(False, "--intraday", help="Also 1-minute bars (BACKFILL_INTRADAY_SESSIONS per chunk)."),
    bars_dir: Path | None = typer.Option(None, "--bars-dir", help="Bar store root (default BARS_DIR)."),
) -> None:
    """Fetch the missing daily (and 1-minute) bars of the universe through alpaca-py (split-adjusted,
    FEED_DATA_FEED), validate them, write them to the bar store. Idempotent and resumable: a rerun fetches
    only what is missing. Needs the broker keys of .env.broker (on the droplet: `bin/avwap data backfill`)."""
    import datetime as dt
    import sys

    from avwap.common import broker_settings_or_fail, fail
    from services.executor.backfill import backfill, history_start, report_alerts
    from services.executor.feed import data_source, universe
    from shared.bars import BarStore
    from shared.bus import fields_of
    from shared.clock import WallClock, calendar
    from shared.redis_conn import connect
    from shared.streams import ALERTS
    from shared.universe import UniverseError, read_universe

    settings = get_settings()
    bs = broker_settings_or_fail("data backfill")
    store = BarStore(bars_dir if bars_dir is not None else settings.core.bars_dir)
    try:
        syms = sorted(read_universe(symbols)) if symbols else universe(settings, bs, store)
    except UniverseError as exc:
        fail(str(exc))
    if symbols and settings.scanner.scan_market_gate == "symbol":
        syms = sorted({*syms, settings.scanner.scan_market_symbol.upper()})
    if not syms:
        fail("no symbols: pass --symbols FILE or set SCAN_UNIVERSE_FILE (see `avwap universe build`)")
    now = WallClock().now_ns()
    if from_ is not None:
        try:
            dt.date.fromisoformat(from_)
        except ValueError:
            fail(f"--from must be YYYY-MM-DD, not {from_!r}")
    start = from_ or history_start(calendar(), now, settings.scanner.scan_history_bars + 10)
    r = None
    if settings.core.redis_url:  # the shared rate limit and the alerts; without Redis: limited in process
        r = connect(settings.core.redis_url)
    typer.echo(f"backfill {len(syms)} symbols from {start}{' with 1-minute bars' if intraday else ''} "
               f"(feed {bs.feed_data_feed}, adjustment {bs.feed_adjustment}) into {store.root}")
    reports = backfill(data_source(bs, r), store, syms, start, intraday=intraday, bs=bs, progress=sys.stderr.isatty())
    for tf, rep in reports.items():
        typer.echo(f"{tf}: {rep.chunks} chunks, {rep.fetched} bars fetched, {rep.written} new in the store, "
                   f"rejected {len(rep.rejects)} {rep.reasons() or ''}".rstrip())
        for sym, f in sorted(rep.adjusted.items()):
            typer.echo(f"  {sym}: history adjusted by {f:g} (split?): re-fetched; an open position needs "
                       f"`bin/avwap exits rebase {sym} --factor {f:g}` (docs/runbook.md#corporate-actions)")
        if r is not None:
            for a in report_alerts(rep, "backfill", now):
                r.xadd(ALERTS, fields_of(a), maxlen=settings.core.bus_maxlen, approximate=True)  # type: ignore[arg-type]
