"""Benchmark: replay all real symbols 2016-01-04..2018-12-31 through the five services in PAPER_SIM.

Target on the 2-core reference machine: <= 120 s wall, peak RSS of any service <= 1 GB.
Reference measured in the same run: the driver alone (the same steps published and waited
for, with no services) — the replay's cost over the bare harness is the services' work.
The last line is one JSON object.

    make bench-replay            # or: python bench/bench_replay.py [--from D] [--to D]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avwap.replay import ReplayConfig  # noqa: E402
from avwap.replay_run import iter_sessions, prepare, run_replay  # noqa: E402
from shared.bus import Bus  # noqa: E402
from shared.redis_conn import connect, start_redis_server  # noqa: E402

DAILY = ROOT / "data" / "reference" / "sp500_daily_2015_2018.csv.gz"


def driver_only(inp, url: str) -> float:
    """Publish every step with no consumers (the harness cost)."""
    r = connect(url)
    r.flushdb()
    bus = Bus(r)
    t0 = time.monotonic()
    for _, steps in iter_sessions(inp):
        for s in steps:
            bus.publish(s.stream, s.message)
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--from", dest="start", default="2016-01-04")
    ap.add_argument("--to", dest="end", default="2018-12-31")
    ap.add_argument("--bars", default=str(DAILY))
    args = ap.parse_args()
    t0 = time.monotonic()
    inp = prepare(Path(args.bars), None, args.start, args.end)
    load_s = time.monotonic() - t0
    emb = start_redis_server()
    try:
        ref_s = driver_only(inp, emb.url)
        out = Path(tempfile.mkdtemp(prefix="avwap-bench-replay-"))
        cfg = ReplayConfig(start=args.start, end=args.end, out=out, mode="PAPER_SIM",
                           env={"SCAN_MARKET_GATE": "universe_proxy", "LOG_LEVEL": "WARNING"})
        res = run_replay(inp, cfg, emb.url, progress=False, flush=True)
    finally:
        emb.stop()
    by_service = {k: v["cpu_s"] for k, v in sorted(res.services.items())}
    rss = max((v["max_rss_mb"] for v in res.services.values()), default=0.0)
    print(f"load+validate {load_s:.1f}s; {len(inp.daily.symbols())} symbols, {res.sessions} sessions, {res.steps} steps")
    print(f"replay {res.replay_s:.1f}s wall ({res.sessions / res.replay_s:.1f} sessions/s), driver waits {res.wait_s:.1f}s")
    print(f"reference (driver alone, no services) {ref_s:.2f}s; ratio replay/reference {res.replay_s / ref_s:.1f}")
    for k, cpu in by_service.items():
        print(f"  {k:14s} cpu {cpu:7.2f}s  peak rss {res.services[k]['max_rss_mb']:7.1f} MB")
    print(f"target: <= 120 s ({'met' if res.replay_s <= 120 else 'NOT met'}), rss <= 1024 MB ({'met' if rss <= 1024 else 'NOT met'})")
    print(json.dumps({
        "replay_s": round(res.replay_s, 2), "sessions": res.sessions,
        "sessions_per_s": round(res.sessions / res.replay_s, 2), "max_service_rss_mb": rss,
        "by_service_cpu_s": by_service, "reference_s": round(ref_s, 3),
        "ratio": round(res.replay_s / ref_s, 2), "load_s": round(load_s, 2), "dlq": res.dlq,
    }, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
