"""``avwap replay``: history through the real services, session by session."""

from __future__ import annotations

from pathlib import Path

import typer

from avwap.common import fail

app = typer.Typer()


@app.command("replay")
def replay(
    bars: Path = typer.Option(..., exists=True, dir_okay=False, help="Daily bars (CSV/CSV.gz/Parquet)."),
    intraday: Path = typer.Option(None, exists=True, dir_okay=False, help="1-minute bars (optional)."),
    start: str = typer.Option(..., "--from", help="First session, YYYY-MM-DD."),
    end: str = typer.Option(..., "--to", help="Last session, YYYY-MM-DD."),
    mode: str = typer.Option("PAPER_SIM", help="PAPER_SIM or DRY_RUN."),
    out: Path = typer.Option(Path("out/replay"), help="Output directory (artifacts, ledgers, logs, report)."),
    equity: float = typer.Option(100_000.0, help="Starting equity."),
    replicas: int = typer.Option(1, help="Replicas of risk, exits and analytics."),
    flush: bool = typer.Option(False, help="Empty the Redis database first (a replay needs an empty one)."),
) -> None:
    """Replay history through the five services and print a summary and the report path."""
    if mode not in ("PAPER_SIM", "DRY_RUN"):
        fail(f"--mode must be PAPER_SIM or DRY_RUN, not {mode!r}")
    if start > end:
        fail(f"--from {start} is after --to {end}")
    from avwap.replay_run import run_replay_cli

    run_replay_cli(bars=bars, intraday=intraday, start=start, end=end, mode=mode, out=out, equity=equity,
                   replicas=replicas, flush=flush)
