"""``avwap sweep``: a grid of settings, each point one replay, as rq jobs; ``avwap sweep-worker`` runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import typer

from avwap.common import fail, job_redis

app = typer.Typer()


def start_local_workers(url: str, queue: str, n: int, log_dir: Path) -> list[subprocess.Popen]:
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(n):
        log = open(log_dir / f"worker-{i}.log", "ab")  # noqa: SIM115 - lives as long as the worker
        procs.append(subprocess.Popen([sys.executable, "-m", "avwap", "sweep-worker", "--queue", queue],
                                      env={**os.environ, "REDIS_URL": url}, stdout=log, stderr=subprocess.STDOUT))
    return procs


def stop_workers(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@app.command("sweep")
def sweep(
    bars: Path = typer.Option(..., exists=True, dir_okay=False, help="Daily bars (CSV/CSV.gz/Parquet)."),
    start: str = typer.Option(..., "--from", help="First session, YYYY-MM-DD."),
    end: str = typer.Option(..., "--to", help="Last session, YYYY-MM-DD."),
    grid: Path = typer.Option(..., exists=True, dir_okay=False, help="Grid file (YAML; docs/research.md)."),
    walk_forward: str | None = typer.Option(None, "--walk-forward", help="TRAIN:TEST months, e.g. 12:3: rolling windows, the best train point replayed on the next test window."),
    out: Path = typer.Option(Path("sweep"), help="Output directory (results.parquet/.csv, ranked.csv, heatmap.png, ...)."),
    queue: str | None = typer.Option(None, help="rq queue the points are enqueued on (default: SWEEP_QUEUE)."),
    workers: int | None = typer.Option(None, help="rq workers to start here (default: 0 with REDIS_URL, where workers anywhere take the jobs; 1 with the embedded Redis)."),
    equity: float = typer.Option(100_000.0, help="Starting equity of every replay."),
    top: int = typer.Option(10, help="Rows of the ranking printed."),
) -> None:
    """Run every point of the grid (or a seeded sample) as one replay each, on rq workers; resumable."""
    from avwap.sweep.grid import load_grid, parse_walk_forward
    from avwap.sweep.runner import Sweep, SweepConfig
    from avwap.sweep.settings import SweepSettings
    from shared.bars import load_bars
    from shared.clock import calendar
    from shared.redis_conn import connect
    from shared.settings import get_settings

    queue = queue or SweepSettings().sweep_queue
    if start > end:
        fail(f"--from {start} is after --to {end}")
    try:
        g = load_grid(grid)
        wf = parse_walk_forward(walk_forward) if walk_forward else None
        frame = load_bars(bars).frame
    except (OSError, ValueError) as exc:
        fail(str(exc))
    have = set(frame["trade_date"].unique())
    sessions = [d for d in calendar().sessions_in_range(start, end) if d in have]
    if not sessions:
        fail(f"no sessions with daily bars between {start} and {end} in {bars}")
    market = dict(g.fixed).get("SCAN_MARKET_SYMBOL") or get_settings().scanner.scan_market_symbol
    cfg = SweepConfig(bars=bars, start=start, end=end, grid=g, out=out, queue=queue, equity=equity, walk_forward=wf,
                      market_symbol=str(market))
    external = bool(get_settings().core.redis_url)
    n = workers if workers is not None else (0 if external else 1)
    with job_redis() as url:
        r = connect(url)
        procs = start_local_workers(url, queue, n, out / "logs") if n else []
        if not n:
            typer.echo(f"sweep: waiting for rq workers on queue {queue!r} (start them with `avwap sweep-worker --queue {queue}`)")
        try:
            sw = Sweep(r, cfg, sessions)
            res = sw.run()
        except ValueError as exc:
            fail(str(exc))
        finally:
            stop_workers(procs)
    print_outcome(res, cfg, top)
    if res.failed:
        fail(f"{len(res.failed)} point(s) failed: " + "; ".join(f"{k}: {v}" for k, v in sorted(res.failed.items())))


def print_outcome(res, cfg, top: int) -> None:  # noqa: ANN001 - runner.Outcome, runner.SweepConfig
    from services.analytics.runreport import num, pct

    m = cfg.grid.metric
    typer.echo(f"sweep: {len(res.rows)} results ({res.skipped} from an earlier run) -> {cfg.out / 'results.parquet'}")
    params = list(cfg.grid.params)
    typer.echo(f"ranked by {m}:")
    typer.echo("  " + "  ".join(["point", *params, m, "return", "max DD", "trades"]))
    for row in res.ranked[:top]:
        cells = [str(row["point"]), *[str(row[f"param:{p}"]) for p in params], num(row.get(m), 3),
                 pct(row.get("total_return"), sign=True), pct(row.get("max_drawdown")), str(row.get("trades"))]
        typer.echo("  " + "  ".join(cells))
    for name in ("ranked.csv", "heatmap.png", "walkforward.csv", "oos_equity.csv", "is_equity.csv", "walkforward.png"):
        if (cfg.out / name).exists():
            typer.echo(f"  {name}: {cfg.out / name}")
    for w in res.walk_forward:
        typer.echo(f"  window {w['window']}: train {w['train_from']}..{w['train_to']} best point {w['best_point']} "
                   f"{m} {num(w[f'in_sample_{m}'], 3)} -> test {w['test_from']}..{w['test_to']} "
                   f"{m} {num(w[f'out_of_sample_{m}'], 3)}, return {pct(w['out_of_sample_total_return'], sign=True)}")


@app.command("sweep-worker")
def sweep_worker(
    queue: str | None = typer.Option(None, help="rq queue to take sweep points from (default: SWEEP_QUEUE)."),
    burst: bool = typer.Option(False, help="Stop when the queue is empty."),
    name: str | None = typer.Option(None, help="Worker name (default: rq's)."),
) -> None:
    """An rq worker for sweep points (REDIS_URL: the sweep's Redis). One per core, on any machine."""
    from avwap.common import need_redis_url
    from avwap.sweep.settings import SweepSettings
    from avwap.sweep.worker import run_worker
    from shared.settings import get_settings

    run_worker(need_redis_url(get_settings()), queue or SweepSettings().sweep_queue, burst=burst, name=name)
