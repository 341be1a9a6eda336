"""``avwap report``: a session's daily report, or a finished run's tear sheet, from artifacts (no Redis)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from avwap.common import date_or_fail, fail
from shared.settings import get_settings

app = typer.Typer()


@app.command("report")
def report(
    date: str | None = typer.Option(None, "--date", help="NY trade date YYYY-MM-DD of a daily report."),
    run: Path | None = typer.Option(None, "--run", help="Output directory of a finished replay (OUT of `avwap replay --out OUT`): write its tear sheet."),
    artifacts: Path | None = typer.Option(None, "--artifacts", help="Artifacts directory of --date (default: ARTIFACTS_DIR)."),
    summary: bool = typer.Option(False, "--summary", help="With --date: also print the run summary (JSON) over every artifact."),
) -> None:
    """Write artifacts/reports/<date>/ (daily report), or with --run OUT the run's tear sheet
    (OUT/artifacts/tearsheet/index.html with its charts and run_report.json)."""
    if (date is None) == (run is None):
        fail("give exactly one of --date D (a daily report) or --run OUT (a run's tear sheet)")
    if run is not None:
        from avwap.replay_run import print_headline
        from services.analytics.tearsheet import write_tearsheet

        if not (run / "artifacts" / "portfolio_snapshots").is_dir():
            fail(f"{run} holds no finished run (no artifacts/portfolio_snapshots/); give the --out of a replay")
        try:
            page = write_tearsheet(run, market_symbol=get_settings().scanner.scan_market_symbol)
        except (OSError, ValueError) as exc:
            fail(str(exc))
        print_headline(run)
        typer.echo(f"tear sheet: {page}")
        return
    from services.analytics.report import build_report, summarize

    date_or_fail(date)
    root = artifacts or Path(get_settings().core.artifacts_dir)
    if not (root / "portfolio_snapshots" / f"{date}.json").exists():
        fail(f"no portfolio snapshot for {date} under {root}/portfolio_snapshots (has that session closed?)")
    out = build_report(root, str(date))
    typer.echo(f"report: {out / 'report.html'}")
    typer.echo(f"report: {out / 'report.md'}")
    if summary:
        typer.echo(json.dumps(summarize(root), indent=2, sort_keys=True))
