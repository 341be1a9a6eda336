"""``avwap data import|check``: load a bar file into the bar store, or report its defects."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from avwap.common import load_bars_or_fail
from shared.settings import get_settings

app = typer.Typer()
data_app = typer.Typer(help="Bar files: import into the bar store, check for defects.", no_args_is_help=True)
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
