"""``avwap report``: the daily report of a session from its artifacts (no Redis needed)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from avwap.common import date_or_fail, fail
from shared.settings import get_settings

app = typer.Typer()


@app.command("report")
def report(
    date: str = typer.Option(..., "--date", help="NY trade date YYYY-MM-DD of the report."),
    artifacts: Path | None = typer.Option(None, "--artifacts", help="Artifacts directory (default: ARTIFACTS_DIR)."),
    summary: bool = typer.Option(False, "--summary", help="Also print the run summary (JSON) over every artifact."),
) -> None:
    """Write artifacts/reports/<date>/ (report.html, report.md, equity/drawdown/exposure PNGs)."""
    from services.analytics.report import build_report, summarize

    date_or_fail(date)
    root = artifacts or Path(get_settings().core.artifacts_dir)
    if not (root / "portfolio_snapshots" / f"{date}.json").exists():
        fail(f"no portfolio snapshot for {date} under {root}/portfolio_snapshots (has that session closed?)")
    out = build_report(root, date)
    typer.echo(f"report: {out / 'report.html'}")
    typer.echo(f"report: {out / 'report.md'}")
    if summary:
        typer.echo(json.dumps(summarize(root), indent=2, sort_keys=True))
