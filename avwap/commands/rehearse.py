"""``avwap rehearse``: the compose stack trades a real week on a warped clock against the stand-ins."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import typer

from avwap.common import fail

app = typer.Typer()

# The longest a position may go without a stop at the broker while the stop window is open, in warped
# seconds per unit of speed-up, i.e. real seconds (docs/rehearsal.md, "Protection"): the chain from the
# entry fill to the stop's acceptance, plus one restart or outage of the fault plan.
UNPROTECTED_BOUND_WALL_S = 5.0


def _interrupted(signum: int, frame: object) -> None:
    """SIGTERM as Ctrl-C: the rehearsal's ``finally`` stops every process it started (they run in their
    own sessions, so nothing else would)."""
    raise KeyboardInterrupt


@app.command("rehearse")
def rehearse(
    start: str = typer.Option("2019-02-11", "--from", help="First session (the bundled week: 2019-02-11..15)."),
    end: str = typer.Option("2019-02-15", "--to", help="Last session."),
    speed: float = typer.Option(300.0, help="Clock speed-up (warped seconds per real second)."),
    out: Path = typer.Option(Path("out/rehearsal"), help="Output directory (volumes, logs, env files, state)."),
    faults: bool = typer.Option(False, help="Seed the fault plan into the first session (docs/rehearsal.md)."),
    symbols: str = typer.Option("", help="Comma-separated symbols (default: the 12 S&P 500 names of the intraday file)."),
    parity: bool = typer.Option(False, help="Then replay the same sessions (`avwap replay --intraday`) and compare "
                                            "the canonical artifacts (docs/replay.md, Live = replay); about 2 min more."),
) -> None:
    """Run docker-compose.yml's services as local processes on a warped clock through the week; print the
    timeline, the summary and the expectations; exit 1 if any expectation failed."""
    from avwap.procs import ROOT
    from avwap.rehearsal.compose import app_services, load_compose
    from avwap.rehearsal.droplet import rehearsal_symbols
    from avwap.rehearsal.faults import fault_plan
    from avwap.rehearsal.report import expectations, render
    from avwap.rehearsal.run import Rehearsal, RehearsalConfig
    from avwap.rehearsal.warp import WarpError, require_faketime

    try:
        require_faketime()
    except WarpError as exc:
        fail(str(exc))
    if start > end:
        fail(f"--from {start} is after --to {end}")
    svc = app_services(load_compose(ROOT / "docker-compose.yml"))
    plan = fault_plan(start, svc) if faults else []
    cfg = RehearsalConfig(out=out, start=start, end=end, speed=speed, faults=plan,
                          symbols=[s.strip().upper() for s in symbols.split(",") if s.strip()] or None,
                          log=typer.echo)
    t0 = time.monotonic()
    signal.signal(signal.SIGTERM, _interrupted)  # `kill` / a stopped `make`: the stack comes down with us
    typer.echo(f"rehearsal {start}..{end} at x{speed:g} into {out}")
    try:
        res = Rehearsal(cfg).run()
    except (RuntimeError, TimeoutError, OSError) as exc:
        fail(f"rehearsal failed: {exc} (logs: {out / 'logs'})")
    checks = expectations(res, bound_s=UNPROTECTED_BOUND_WALL_S * speed, faults=faults)
    render(res, checks, echo=typer.echo)
    bad = [c for c in checks if not c.ok]
    if parity:
        from avwap.rehearsal.parity import compare, replay_sessions

        typer.echo("\nlive = replay (canonical artifacts; docs/replay.md, Live = replay):")
        root = replay_sessions(out / "replay", start, end, cfg.symbols or rehearsal_symbols())
        for kind, diffs in compare(out / "volumes", root, res.sessions).items():
            typer.echo(f"  {kind}: {'same' if not diffs else f'{len(diffs)} differences; first: {diffs[0][:300]}'}")
    typer.echo(f"\nrehearsal: {len(checks) - len(bad)}/{len(checks)} expectations met in {time.monotonic() - t0:.0f}s wall "
               f"(phases: {', '.join(f'{k} {v:.0f}s' for k, v in res.phases.items())})")
    if bad:
        raise typer.Exit(1)
