"""Benchmark: replay all real symbols 2016-01-04..2018-12-31 through the services in PAPER_SIM.

Targets on the 2-core reference machine (docs/performance.md): <= 60 s wall for the 754 sessions,
no service above 25 ms CPU per session, peak RSS of any service <= 1 GB.

Reference measured in the same run: the pure cores' own time over the same inputs (``core_s``: the
scanner's ``scan`` and the regime's classification re-run, after the replay, on the panels each
session saw — the work that cannot be avoided; the other services' cores are microseconds a message,
see docs/performance.md) and the overhead ratio wall / core_s. CPU per session is each service's
CPU from ready to the end of the last session divided by the sessions (start-up is printed apart).

    make bench-replay                           # or: python bench/bench_replay.py [--from D] [--to D]
    python bench/bench_replay.py --growth 1,2,3 # the same bench over 1, 2 and 3 years ending --to
    python bench/bench_replay.py --from 2018-01-02 --profile /tmp/prof   # py-spy stacks per service

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avwap.replay import ReplayConfig  # noqa: E402
from avwap.replay_run import ReplayInput, _proc_stats, prepare, run_replay  # noqa: E402
from shared.clock import calendar  # noqa: E402
from shared.redis_conn import connect, start_redis_server  # noqa: E402

DAILY = ROOT / "data" / "reference" / "sp500_daily_2015_2018.csv.gz"
ENV = {"SCAN_MARKET_GATE": "universe_proxy", "LOG_LEVEL": "WARNING"}
TARGET_WALL_S, TARGET_SESSIONS, TARGET_CPU_MS, TARGET_RSS_MB = 60.0, 754, 25.0, 1024.0


def core_seconds(bars: Path, sessions: list[str]) -> float:
    """CPU seconds of the scanner's and the regime's pure cores over the replay's own inputs (the
    panel of bars before each session, from the replay's bar store, built outside the timing)."""
    os.environ.update(ENV)
    from services.regime.worker import regime_for
    from services.scanner.core import scan
    from services.scanner.session import store_panel
    from shared.bars import BarStore
    from shared.settings import get_settings

    settings = get_settings()
    p = settings.scanner
    store = BarStore(bars)
    cal = calendar()
    total = 0.0
    for d in sessions:
        panel = store_panel(store, d, settings)
        rpanel = store.daily_panel(before=d, lookback=settings.regime.regime_history_bars)
        t0 = time.process_time()
        scan(panel, None, {}, d, cal.previous_session(d), p)
        regime_for(rpanel, d, settings)
        total += time.process_time() - t0
    return total


def attach_profilers(out: Path, rate: int, after: int):  # noqa: ANN201 - (list, hook)
    """An ``after_publish`` hook: once ``after`` steps are done (warm-up), one ``py-spy record`` per
    service process, collapsed stacks in ``out/<service>.txt``."""
    spies: list[subprocess.Popen] = []
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out.mkdir(parents=True, exist_ok=True)

    def hook(step: int, _label: str, procs) -> None:  # noqa: ANN001 - avwap.procs.ServiceProcs
        if step != after:
            return
        for key, proc in procs.procs.items():
            spies.append(subprocess.Popen([spy, "record", "--pid", str(proc.pid), "--rate", str(rate), "--nonblocking",
                                           "--format", "raw", "--output", str(out / f"{key}.txt")],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(1.0)  # let every sampler attach before the next step

    return spies, hook


def filesystem_of(path: Path) -> str:
    """The type of the filesystem that holds ``path`` (the longest mount point of /proc/mounts above it)."""
    best, kind = "", "?"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    real = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) > 2 and (real == parts[1] or real.startswith(parts[1].rstrip("/") + "/")) and len(parts[1]) > len(best):
            best, kind = parts[1], parts[2]
    return kind


def atomic_write_us(scratch: Path, n: int = 200) -> float:
    """CPU microseconds of one ``write_atomic`` of 8 KB to a new name under ``scratch`` (what every artifact
    write costs there: on ext4 without a journal, creating an inode scans the recently deleted ones)."""
    from shared.artifacts import fsync_off, write_atomic

    d = Path(tempfile.mkdtemp(prefix="avwap-bench-probe-", dir=scratch))
    try:
        with fsync_off():
            t = time.thread_time()
            for i in range(n):
                write_atomic(d / f"f{i}.json", b"x" * 8192)
            return round(1e6 * (time.thread_time() - t) / n, 1)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def one_run(inp: ReplayInput, start: str, end: str, profile: Path | None, rate: int, warmup: int,
            scratch: Path | None = None) -> dict:
    emb = start_redis_server()
    ready: dict[str, float] = {}
    driver: dict[str, float] = {}  # the driver's CPU (this process) from the services' start to the last step

    def on_started(procs) -> None:  # noqa: ANN001
        for key, proc in procs.procs.items():
            ready[key] = _proc_stats(proc.pid)[0]
        ready["redis"] = _redis_cpu_s(emb.url)
        driver["start"] = driver["last"] = time.process_time()

    try:
        out = Path(tempfile.mkdtemp(prefix="avwap-bench-replay-", dir=scratch))
        cfg = ReplayConfig(start=start, end=end, out=out, mode="PAPER_SIM", env=dict(ENV))
        spies, spy_hook = attach_profilers(profile, rate, warmup * 5) if profile else ([], None)

        def hook(step: int, label: str, procs) -> None:  # noqa: ANN001
            if spy_hook is not None:
                spy_hook(step, label, procs)
            driver["last"] = time.process_time()

        res = run_replay(inp, cfg, emb.url, progress=False, flush=True, on_started=on_started, after_publish=hook)
        redis_cpu_s = _redis_cpu_s(emb.url) - ready.pop("redis")
        for p in spies:
            p.wait(timeout=120)
        stats = connect(emb.url).info("commandstats")
        top = sorted(stats.items(), key=lambda kv: -kv[1]["usec"])[:8]
        mem = connect(emb.url).info("memory")
        used_mb = mem["used_memory"] / 2**20
        keys = connect(emb.url).dbsize()
    finally:
        emb.stop()
    core_s = core_seconds(out / "bars", inp.sessions)
    shutil.rmtree(out, ignore_errors=True)
    n = max(res.sessions, 1)
    cpu_ms = {k: round(1000 * (v["cpu_s"] - ready.get(k, 0.0)) / n, 2) for k, v in sorted(res.services.items())}
    commands = {k.removeprefix("cmdstat_"): {"calls_per_session": round(v["calls"] / n, 1),
                                              "us_per_call": round(v["usec_per_call"], 2)} for k, v in top}
    return {"res": res, "ready": ready, "cpu_ms": cpu_ms, "commands": commands, "core_s": core_s,
            "redis_used_mb": used_mb, "keys": keys, "redis_cpu_ms": round(1000 * redis_cpu_s / n, 2),
            "driver_cpu_ms": round(1000 * (driver["last"] - driver["start"]) / n, 2)}


def _redis_cpu_s(url: str) -> float:
    """The Redis server's CPU so far (user + system), from its own INFO."""
    cpu = connect(url).info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def report(inp: ReplayInput, run: dict, load_s: float) -> dict:
    res = run["res"]
    rss = max((v["max_rss_mb"] for v in res.services.values()), default=0.0)
    core_s = run["core_s"]
    print(f"load+validate {load_s:.1f}s; {len(inp.daily.symbols())} symbols, {res.sessions} sessions, {res.steps} steps")
    print(f"replay {res.replay_s:.1f}s wall ({res.sessions / res.replay_s:.2f} sessions/s), driver waits {res.wait_s:.1f}s")
    print(f"reference (pure cores: scan + regime over the same inputs) {core_s:.2f}s; "
          f"overhead ratio wall/core {res.replay_s / max(core_s, 1e-9):.1f}")
    for k, ms in run["cpu_ms"].items():
        print(f"  {k:14s} cpu {ms:7.2f} ms/session  start-up {run['ready'].get(k, 0.0):5.2f}s  "
              f"peak rss {res.services[k]['max_rss_mb']:7.1f} MB")
    print(f"  (not services) redis cpu {run['redis_cpu_ms']:7.2f} ms/session, driver cpu {run['driver_cpu_ms']:7.2f} "
          "ms/session (publishing, the bar store, the quiescence polls)")
    print("  redis commands by time: " + ", ".join(f"{k} {v['calls_per_session']}/session x {v['us_per_call']} us"
                                                 for k, v in run["commands"].items()))
    print(f"redis used_memory at end {run['redis_used_mb']:.1f} MB, {run['keys']} keys")
    scaled = res.replay_s * TARGET_SESSIONS / max(res.sessions, 1)
    worst = max(run["cpu_ms"].values(), default=0.0)
    print(f"targets: wall <= {TARGET_WALL_S:.0f}s for {TARGET_SESSIONS} sessions (this run scaled: {scaled:.1f}s, "
          f"{'met' if scaled <= TARGET_WALL_S else 'NOT met'}); cpu <= {TARGET_CPU_MS:.0f} ms/session per service "
          f"(worst {worst:.1f}, {'met' if worst <= TARGET_CPU_MS else 'NOT met'}); rss <= {TARGET_RSS_MB:.0f} MB "
          f"({'met' if rss <= TARGET_RSS_MB else 'NOT met'})")
    return {"replay_s": round(res.replay_s, 2), "sessions": res.sessions,
            "sessions_per_s": round(res.sessions / res.replay_s, 2), "max_service_rss_mb": rss,
            "cpu_ms_per_session": run["cpu_ms"], "core_s": round(core_s, 3),
            "overhead_ratio": round(res.replay_s / max(core_s, 1e-9), 2), "wait_s": round(res.wait_s, 2),
            "load_s": round(load_s, 2), "dlq": res.dlq, "redis_used_memory_mb": round(run["redis_used_mb"], 2),
            "redis_keys": run["keys"], "redis_cpu_ms_per_session": run["redis_cpu_ms"],
            "driver_cpu_ms_per_session": run["driver_cpu_ms"], "commands": run["commands"]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--from", dest="start", default="2016-01-04")
    ap.add_argument("--to", dest="end", default="2018-12-31")
    ap.add_argument("--bars", default=str(DAILY))
    ap.add_argument("--growth", default="", help="comma-separated spans in years ending --to, e.g. 1,2,3")
    ap.add_argument("--profile", type=Path, default=None,
                    help="attach py-spy to every service after the warm-up; collapsed stacks per service here")
    ap.add_argument("--profile-rate", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=20, help="sessions before the profilers attach")
    ap.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()),
                    help="where the replay's artifacts, ledgers and bar store go (default: the temp dir)")
    args = ap.parse_args()
    scratch_fs = filesystem_of(args.scratch)
    write_us = atomic_write_us(args.scratch)
    print(f"scratch {args.scratch} ({scratch_fs}): one atomic write of 8 KB costs {write_us} us of CPU there", flush=True)
    if args.growth:
        rows = []
        for years in (int(x) for x in args.growth.split(",")):
            start = f"{int(args.end[:4]) - years + 1}-01-01"
            inp = prepare(Path(args.bars), None, start, args.end)
            run = one_run(inp, inp.sessions[0], args.end, None, args.profile_rate, args.warmup, args.scratch)
            res = run["res"]
            rows.append({"years": years, "sessions": res.sessions, "replay_s": round(res.replay_s, 2),
                         "ms_per_session": round(1000 * res.replay_s / res.sessions, 1),
                         "cpu_ms_per_session": run["cpu_ms"], "redis_used_memory_mb": round(run["redis_used_mb"], 2),
                         "redis_keys": run["keys"], "redis_cpu_ms_per_session": run["redis_cpu_ms"],
                         "commands": run["commands"]})
            print(f"{years}y: {res.sessions} sessions, {rows[-1]['ms_per_session']} ms/session wall, "
                  f"cpu ms/session {run['cpu_ms']}, redis cpu {run['redis_cpu_ms']} ms/session, "
                  f"commands {run['commands']}, redis used_memory {run['redis_used_mb']:.1f} MB, "
                  f"{run['keys']} keys", flush=True)
        print(json.dumps({"growth": rows, "scratch_fs": scratch_fs, "atomic_write_us": write_us}, sort_keys=True))
        return 0
    t0 = time.monotonic()
    inp = prepare(Path(args.bars), None, args.start, args.end)
    load_s = time.monotonic() - t0
    run = one_run(inp, args.start, args.end, args.profile, args.profile_rate, args.warmup, args.scratch)
    print(json.dumps({**report(inp, run, load_s), "scratch_fs": scratch_fs, "atomic_write_us": write_us},
                     sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
