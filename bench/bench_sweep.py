"""Benchmark: a 16-point sweep over 2016-2018 on the full universe with 1 and with 2 rq workers.

Prints points/minute for each worker count, the scaling ratio (2 workers over 1: target >= 1.7 on
two cores; the reference is the same sweep with one worker, in the same run) and the peak memory
of one worker (the worker, its work horse and the replay it runs: private redis-server and the
five services, summed over the worker's process session, sampled every 0.5 s). It also prints how many
cores the workers kept busy (the CPU time of each worker's process tree over the wall time): a replay's
services overlap, so one worker already uses more than one core, and ``cores / cores_busy(1 worker)``
bounds the ratio two workers can reach. Each run gets a
fresh private Redis and output directory. The last line is one JSON object.

    make bench-sweep                                   # the full benchmark
    python bench/bench_sweep.py --points 4 --from 2018-01-02 --to 2018-02-28 --symbols 40   # a quick check
    (or BENCH_SWEEP_POINTS / BENCH_SWEEP_FROM / BENCH_SWEEP_TO / BENCH_SWEEP_SYMBOLS)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avwap.sweep.grid import parse_grid  # noqa: E402
from avwap.sweep.runner import Sweep, SweepConfig  # noqa: E402
from shared.clock import calendar  # noqa: E402
from shared.redis_conn import connect, start_redis_server  # noqa: E402

DAILY = ROOT / "data" / "reference" / "sp500_daily_2015_2018.csv.gz"
GRID = {"metric": "sharpe", "fixed": {"SCAN_MARKET_GATE": "universe_proxy", "LOG_LEVEL": "WARNING"},
        "params": {"MAX_CONCURRENT_POSITIONS": [3, 5], "STOP_BUFFER": [0.05, 0.10],
                   "MAX_RISK_PER_TRADE_PCT": [0.5, 1.0], "SCAN_MAX_DIST_PCT": [4.0, 6.0]}}


def _stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or [] when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _sid(pid: int) -> int | None:
    f = _stat(pid)
    return int(f[3]) if len(f) > 3 else None


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and of every descendant it has waited for (utime, stime, cutime, cstime): an rq
    worker's finished jobs, their work horses, and the replay each ran (services, private redis-server)."""
    f = _stat(pid)
    return sum(int(x) for x in f[11:15]) / os.sysconf("SC_CLK_TCK") if len(f) > 14 else 0.0


def session_rss_mb(sid: int) -> float:
    return sum(_rss_mb(int(d.name)) for d in Path("/proc").iterdir() if d.name.isdigit() and _sid(int(d.name)) == sid)


def run(n_workers: int, bars: Path, start: str, end: str, grid_doc: dict, tmp: Path) -> dict[str, float]:
    emb = start_redis_server()
    out = tmp / f"sweep-{n_workers}"
    procs, peak, stop = [], {}, threading.Event()
    try:
        env = {**os.environ, "REDIS_URL": emb.url, "SWEEP_CACHE_DIR": str(tmp / "cache"), "PYTHONPATH": str(ROOT)}
        for i in range(n_workers):
            procs.append(subprocess.Popen([sys.executable, "-m", "avwap", "sweep-worker", "--queue", "bench-sweep",
                                           "--name", f"bench-{n_workers}-{i}"], cwd=ROOT, env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))

        def sample() -> None:
            while not stop.wait(0.5):
                for p in procs:
                    peak[p.pid] = max(peak.get(p.pid, 0.0), session_rss_mb(p.pid))

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        cfg = SweepConfig(bars=bars, start=start, end=end, grid=parse_grid(grid_doc), out=out, queue="bench-sweep")
        sessions = calendar().sessions_in_range(start, end)
        t0 = time.monotonic()
        res = Sweep(connect(emb.url), cfg, sessions, progress=False).run()
        wall = time.monotonic() - t0
        stop.set()
        th.join()
        if res.failed:
            raise SystemExit(f"bench sweep: points failed: {res.failed}")
        cpu = sum(tree_cpu_s(p.pid) for p in procs)  # every job has finished and was waited for
    finally:
        stop.set()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        emb.stop()
    pts = len(res.rows)
    return {"workers": n_workers, "points": pts, "wall_s": round(wall, 2), "points_per_min": round(60 * pts / wall, 3),
            "peak_worker_rss_mb": round(max(peak.values(), default=0.0), 1), "cpu_s": round(cpu, 1),
            "cores_busy": round(cpu / wall, 2)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--from", dest="start", default=os.environ.get("BENCH_SWEEP_FROM", "2016-01-04"))
    ap.add_argument("--to", dest="end", default=os.environ.get("BENCH_SWEEP_TO", "2018-12-31"))
    ap.add_argument("--points", type=int, default=int(os.environ.get("BENCH_SWEEP_POINTS", "16")))
    ap.add_argument("--symbols", type=int, default=int(os.environ.get("BENCH_SWEEP_SYMBOLS", "0")),
                    help="first N symbols only (0: the full universe)")
    ap.add_argument("--bars", default=str(DAILY))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="avwap-bench-sweep-"))
    bars = Path(args.bars)
    if args.symbols:
        import pandas as pd

        f = pd.read_csv(bars)
        keep = sorted(f["symbol"].unique())[: args.symbols]
        bars = tmp / "bars.csv.gz"
        f[f["symbol"].isin(keep)].to_csv(bars, index=False)
    grid = dict(GRID)
    if args.points < 16:
        grid["sample"] = {"n": args.points, "seed": 1}
    one = run(1, bars, args.start, args.end, grid, tmp)
    print(f"1 worker : {one['points']} points in {one['wall_s']:.1f}s = {one['points_per_min']:.2f} points/min, "
          f"peak worker memory {one['peak_worker_rss_mb']:.0f} MB")
    two = run(2, bars, args.start, args.end, grid, tmp)
    print(f"2 workers: {two['points']} points in {two['wall_s']:.1f}s = {two['points_per_min']:.2f} points/min, "
          f"peak worker memory {two['peak_worker_rss_mb']:.0f} MB")
    ratio = two["points_per_min"] / one["points_per_min"] if one["points_per_min"] else 0.0
    cores = os.cpu_count() or 1
    bound = min(2.0, cores / one["cores_busy"]) if one["cores_busy"] else 0.0
    print(f"one worker keeps {one['cores_busy']:.2f} cores busy (its replay's services run side by side), "
          f"two keep {two['cores_busy']:.2f}: on {cores} cores 2 workers can scale at most {bound:.2f}x")
    print(f"scaling 2 workers / 1 worker: {ratio:.2f}x (target >= 1.7x on 2 cores: {'met' if ratio >= 1.7 else 'NOT met'})")
    print(json.dumps({"span": [args.start, args.end], "symbols": args.symbols or "all", "grid_points": args.points,
                      "one_worker": one, "two_workers": two, "scaling_ratio": round(ratio, 3),
                      "target_ratio": 1.7, "cpus": os.cpu_count(), "scaling_bound": round(bound, 3)},
                     sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
