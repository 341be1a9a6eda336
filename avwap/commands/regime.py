"""``avwap regime``: label sessions from a bar file, and the offline validation (docs/regime.md)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from avwap.common import fail, load_bars_or_fail
from shared.settings import get_settings

app = typer.Typer()
regime_app = typer.Typer(help="The market regime: labels and offline validation (docs/regime.md).", no_args_is_help=True)
app.add_typer(regime_app, name="regime")


@regime_app.command("label")
def label(
    bars: Path = typer.Option(..., exists=True, dir_okay=False, help="Daily bars (CSV/CSV.gz/Parquet)."),
    start: str = typer.Option(..., "--from", help="First NY date, YYYY-MM-DD."),
    end: str = typer.Option(..., "--to", help="Last NY date, YYYY-MM-DD."),
    as_json: bool = typer.Option(False, "--json", help="One Regime JSON per line instead of a table."),
) -> None:
    """Label every session in range from the bars on or before it (the worker's classifier)."""
    from avwap.regime_run import label_sessions, regime_summary
    from shared.artifacts import canonical_line

    if start > end:
        fail(f"--from {start} is after --to {end}")
    lr = load_bars_or_fail(bars, tf="1d")
    labels = label_sessions(lr.frame, start, end, get_settings())
    for r in labels:
        if as_json:
            typer.echo(canonical_line(r).decode().rstrip("\n"))
        else:
            typer.echo(f"{r.date} {r.label:<14} {r.rule:<18} {r.reason}")
    if not as_json:
        s = regime_summary(labels)
        typer.echo(json.dumps({"time_in_regime": s["time_in_regime"], "transitions": len(s["transitions"])}, sort_keys=True))


@regime_app.command("validate")
def validate(
    bars: Path = typer.Option(..., exists=True, dir_okay=False, help="Daily bars (CSV/CSV.gz/Parquet)."),
    start: str = typer.Option(..., "--from", help="First session, YYYY-MM-DD."),
    end: str = typer.Option(..., "--to", help="Last session, YYYY-MM-DD."),
    out: Path = typer.Option(Path("out/regime"), help="Output directory (off/, on/, regime_validate.{json,md,html})."),
    equity: float = typer.Option(100_000.0, help="Starting equity of both replays."),
    parallel: bool = typer.Option(False, help="Run the two replays at the same time (the second on a private "
                                  "redis-server); the outputs are the same bytes."),
) -> None:
    """Label every session, replay the bars with the modulation off and on, print them side by side."""
    from avwap.common import job_redis
    from avwap.regime_run import side_by_side_md
    from avwap.regime_run import validate as run_validate

    if start > end:
        fail(f"--from {start} is after --to {end}")
    with job_redis() as url:
        try:
            res = run_validate(bars, start, end, out, get_settings(), url, equity=equity, progress=True,
                               parallel=parallel)
        except (OSError, ValueError, RuntimeError, TimeoutError) as exc:
            fail(str(exc))
    typer.echo(side_by_side_md(res), nl=False)
    typer.echo(f"report: {out / 'regime_validate.html'}")
