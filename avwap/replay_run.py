"""Run a replay end to end: load bars, start the services, drive the sessions, summarize.

``run_replay`` is what ``avwap replay``, ``avwap demo``, the end-to-end tests and
``bench/bench_replay.py`` call. The services are the real ones, in separate processes, on
the Redis it is given; the replay only plays the live scheduler and feed (avwap.replay).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis
import typer

from avwap.common import fail, job_redis
from avwap.procs import ServiceProcs
from avwap.replay import Driver, ReplayConfig, StepHook, session_steps, start_services
from shared.artifacts import fsync_off
from shared.bars import BarStore, LoadResult, frame_to_rows, load_bars
from shared.clock import calendar
from shared.redis_conn import connect
from shared.schemas import BarRow
from shared.streams import DLQ

OUTPUT_DIRS = ("artifacts", "ledger", "bars", "logs")


@dataclass
class ReplayInput:
    daily: LoadResult
    intraday: LoadResult | None
    sessions: list[str]


@dataclass
class ReplayResult:
    out: Path
    sessions: int
    steps: int
    replay_s: float
    wait_s: float
    services: dict[str, dict[str, float]] = field(default_factory=dict)  # key -> cpu_s, max_rss_mb
    summary: dict[str, object] = field(default_factory=dict)
    dlq: int = 0


def prepare(bars: Path, intraday: Path | None, start: str, end: str) -> ReplayInput:
    """Load and validate the input files; the sessions are NYSE sessions in range that have daily bars."""
    daily = load_bars(bars)
    if daily.tf != "1d":
        raise ValueError(f"{bars} is not a daily bar file")
    minutes = load_bars(intraday) if intraday else None
    if minutes is not None and minutes.tf != "1m":
        raise ValueError(f"{intraday} is not a 1-minute bar file")
    have = set(daily.frame["trade_date"].unique())
    sessions = [d for d in calendar().sessions_in_range(start, end) if d in have]
    return ReplayInput(daily=daily, intraday=minutes, sessions=sessions)


def _minute_groups(minutes: LoadResult | None, d: str) -> list[tuple[int, list[BarRow]]]:
    if minutes is None:
        return []
    part = minutes.frame[minutes.frame["trade_date"] == d]
    return [(int(ts), frame_to_rows(g)) for ts, g in part.groupby("ts", sort=True)]


def iter_sessions(inp: ReplayInput, window_start: str = "09:35") -> Iterator[tuple[str, list]]:
    """(session, steps) for every session of the replay, in order."""
    frame = inp.daily.frame
    by_date = {d: g for d, g in frame[frame["trade_date"] >= (inp.sessions[0] if inp.sessions else "")]
               .groupby("trade_date", sort=True)}
    for d in inp.sessions:
        yield d, session_steps(d, frame_to_rows(by_date[d]), _minute_groups(inp.intraday, d), window_start)


def _proc_stats(pid: int) -> tuple[float, float]:
    """(cpu seconds, peak RSS MB) of a live process from /proc (0, 0 when unavailable)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        import os

        tick = os.sysconf("SC_CLK_TCK")
        cpu = (int(stat[11]) + int(stat[12])) / tick
        rss = 0.0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) / 1024
        return cpu, rss
    except (OSError, IndexError, ValueError):
        return 0.0, 0.0


def clean_output(out: Path) -> None:
    for sub in OUTPUT_DIRS:
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def run_replay(inp: ReplayInput, cfg: ReplayConfig, redis_url: str, after_publish: StepHook | None = None,
               progress: bool = False, flush: bool = False, tearsheet: bool = True,
               on_started: Callable[[ServiceProcs], None] | None = None) -> ReplayResult:
    """Replay ``inp`` through the five services on ``redis_url``; outputs go under ``cfg.out``
    (with the run's tear sheet in ``artifacts/tearsheet/`` unless ``tearsheet`` is False).
    ``on_started(procs)`` runs once the services are ready (the bench attaches its profiler there)."""
    r = connect(redis_url)
    if flush:
        r.flushdb()
    elif r.dbsize():
        raise RuntimeError(f"a replay needs an empty Redis database; {redis_url} holds {r.dbsize()} keys "
                           "(use a spare database or --flush)")
    clean_output(cfg.out)
    store = BarStore(cfg.out / "bars")
    first = inp.sessions[0] if inp.sessions else "9999-12-31"
    history = inp.daily.frame[inp.daily.frame["trade_date"] < first]
    with _durability(cfg):
        store.import_result(LoadResult(tf="1d", frame=history))
    t0 = time.monotonic()
    procs = start_services(redis_url, cfg)
    if on_started is not None:
        on_started(procs)
    driver = Driver(r, procs, store.append, after_publish=after_publish)
    stats: dict[str, dict[str, float]] = {}
    try:
        bar = _progress(len(inp.sessions)) if progress else None
        with _durability(cfg):  # the driver's bar store, as the services' files (ARTIFACTS_FSYNC)
            for d, steps in iter_sessions(inp, cfg.window_start):
                for step in steps:
                    driver.play(step)
                if bar is not None:
                    bar[0].update(bar[1], advance=1, description=d)
        if bar is not None:
            bar[0].stop()
        for key, proc in procs.procs.items():
            cpu, rss = _proc_stats(proc.pid)
            stats[key] = {"cpu_s": round(cpu, 3), "max_rss_mb": round(rss, 1)}
    finally:
        codes = procs.stop_all()
    bad = {k: c for k, c in codes.items() if c not in (0, -15)}
    if bad:
        raise RuntimeError(f"services did not stop cleanly: {bad} (see {cfg.out / 'logs'})")
    if tearsheet and inp.sessions:  # first: the last daily report links to it
        from services.analytics.tearsheet import write_tearsheet

        write_tearsheet(cfg.out, market_symbol=market_symbol(cfg.env), fsync=False)
    final_report(cfg.out / "artifacts")
    elapsed = time.monotonic() - t0
    return ReplayResult(out=cfg.out, sessions=len(inp.sessions), steps=driver.steps_done, replay_s=elapsed,
                        wait_s=driver.wait_s, services=stats, summary=summarize(cfg.out), dlq=int(r.xlen(DLQ)))


def _durability(cfg: ReplayConfig) -> contextlib.AbstractContextManager[None]:
    """The driver writes its bar store as the replay's services write their files: without fsync unless
    the replay's env sets ARTIFACTS_FSYNC (``start_services`` sets 0)."""
    on = cfg.env.get("ARTIFACTS_FSYNC", "0").strip().lower() not in ("0", "false", "no", "off", "")
    return contextlib.nullcontext() if on else fsync_off()


def _progress(total: int):  # noqa: ANN202 - rich types
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    p = Progress(TextColumn("[bold]replay[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                 TimeElapsedColumn(), transient=False)
    p.start()
    return p, p.add_task("", total=total)


def market_symbol(env: dict[str, str]) -> str:
    """The benchmark's market symbol: the replay's SCAN_MARKET_SYMBOL, else the settings' value."""
    from shared.settings import get_settings

    return env.get("SCAN_MARKET_SYMBOL") or get_settings().scanner.scan_market_symbol


def final_report(artifacts: Path) -> Path | None:
    """The daily report of the last closed session (charts over the whole run), from the artifacts."""
    from services.analytics.report import build_report

    snaps = sorted((artifacts / "portfolio_snapshots").glob("*.json"))
    return build_report(artifacts, snaps[-1].stem) if snaps else None


def summarize(out: Path) -> dict[str, object]:
    """The end-of-replay summary from the artifacts (analytics' run summary)."""
    from services.analytics.report import summarize as analytics_summary

    return dict(analytics_summary(out / "artifacts"))


def print_headline(out: Path) -> None:
    """The run's headline figures (services.analytics.runreport.headline), for a person: those of its
    tear sheet (``run_report.json``) when there is one, else computed from the artifacts."""
    import json

    from services.analytics.runreport import headline, load_run, run_report

    try:
        rep = json.loads((out / "artifacts" / "tearsheet" / "run_report.json").read_bytes())
    except (OSError, ValueError):
        inp = load_run(out, market_symbol({}))
        rep = run_report(inp) if inp.dates else None
    for line in headline(rep) if rep else []:
        typer.echo(f"  {line}")


def _counts(d: object) -> str:
    items = sorted(d.items(), key=lambda kv: (-kv[1], kv[0])) if isinstance(d, dict) else []
    return ", ".join(f"{k} {v}" for k, v in items) or "none"


def print_result(res: ReplayResult) -> None:
    s = res.summary
    typer.echo("")
    typer.echo(f"replay: {res.sessions} sessions, {res.steps} steps in {res.replay_s:.1f}s; DLQ {res.dlq}")
    print_headline(res.out)
    typer.echo(f"  decisions   {_counts(s.get('decisions'))}")
    typer.echo(f"  blocks      {_counts(s.get('blocks_by_reason'))}")
    typer.echo(f"  rejections  {_counts(s.get('rejections_by_reason'))}")
    bad = s.get("reconciliation_mismatch_days") or []
    typer.echo(f"  reconciliation {'ok every session' if not bad else f'mismatches on {len(bad)} sessions'}")
    report = s.get("report") or _latest_report(res.out)
    if report:
        typer.echo(f"daily report (last session): {report}")
    sheet = res.out / "artifacts" / "tearsheet" / "index.html"
    if sheet.exists():
        typer.echo(f"tear sheet: {sheet}")


def _latest_report(out: Path) -> str:
    reports = sorted((out / "artifacts" / "reports").glob("*/report.html"))
    return str(reports[-1]) if reports else ""


def run_replay_cli(bars: Path, intraday: Path | None, start: str, end: str, mode: str, out: Path, equity: float,
                   replicas: int, env: dict[str, str] | None = None, flush: bool = False,
                   then: Callable[[str, ReplayResult], None] | None = None) -> ReplayResult:
    """``avwap replay``/``avwap demo``; ``then(redis_url, result)`` runs before the job's Redis stops
    (``avwap demo --serve`` serves the dashboard there)."""
    try:
        inp = prepare(bars, intraday, start, end)
    except (OSError, ValueError) as exc:
        fail(str(exc))
    if not inp.sessions:
        fail(f"no sessions with daily bars between {start} and {end} in {bars}")
    counts = inp.daily.counts()
    typer.echo(f"bars: {len(inp.daily.frame)} daily rows, {len(inp.daily.symbols())} symbols; "
               f"rejected {sum(counts.values())} {counts or ''}".rstrip())
    cfg = ReplayConfig(start=start, end=end, out=out, mode=mode, equity=equity, replicas=replicas, env=env or {})
    with job_redis() as url:
        try:
            res = run_replay(inp, cfg, url, progress=True, flush=flush)
        except (RuntimeError, TimeoutError, redis.RedisError) as exc:
            fail(str(exc))
        print_result(res)
        if then is not None:
            then(url, res)
    return res


def artifact_files(out: Path, subdirs: Sequence[str] = ("artifacts", "ledger")) -> dict[str, bytes]:
    """Every artifact file under ``out`` (relative path -> bytes), for determinism checks."""
    files: dict[str, bytes] = {}
    for sub in subdirs:
        root = out / sub
        if root.is_dir():
            for p in sorted(root.rglob("*")):
                if p.is_file():
                    files[str(p.relative_to(out))] = p.read_bytes()
    return files
