"""Benchmark: the vectorized scan vs a straightforward per-symbol pandas implementation (bench/scan_reference.py).

Workloads, in one run:
1. the real data (478 S&P 500 symbols, 2015-2018; the data README says 482) for one scan date: first both implementations must
   agree (every symbol's outcome code, the ranked candidates, their anchors and levels), then each is timed;
   the scan is also timed the way the replay runs it (bar store panel read + scan + artifacts);
2. a synthetic universe of 10,000 symbols x 500 sessions (bench/synthetic.py): the scan runs in a fresh
   child process (wall time and that process's peak RSS), the reference in this one; they must agree too.

Targets on the 2-core machine: 10k scan <= 3 s wall and <= 2 GB peak RSS, >= 20x faster than the reference.
The last line is one JSON object.

    make bench-scan        # or: python bench/bench_scan.py [--symbols N] [--sessions N] [--date D]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
from scan_reference import reference_scan  # noqa: E402
from synthetic import panel_frame, synthetic_panel  # noqa: E402

from services.scanner.artifacts import artifact_bytes  # noqa: E402
from services.scanner.core import scan  # noqa: E402
from services.scanner.session import last_session_before  # noqa: E402
from shared.allocator import keep_freed_memory  # noqa: E402
from shared.bars import FIELDS, BarStore, LoadResult, Panel, load_bars  # noqa: E402
from shared.clock import calendar  # noqa: E402
from shared.settings import load_settings  # noqa: E402

DAILY = ROOT / "data" / "reference" / "sp500_daily_2015_2018.csv.gz"
SETTINGS = load_settings(scan_market_gate="off")  # the gate is one SMA: the bench measures the per-symbol work
P = SETTINGS.scanner


def agreement(res, ref, codes) -> list[str]:  # noqa: ANN001
    """Differences between the scan and the reference ([] when they agree)."""
    out = []
    mine = {s: r["code"] for s, r in res.rejects["rejects"].items()} | {c.symbol: "CANDIDATE" for c in res.batch.candidates}
    for s in sorted(set(mine) | set(codes)):
        if mine.get(s) != codes.get(s):
            out.append(f"{s}: scan {mine.get(s)} vs reference {codes.get(s)}")
    a = [(c.symbol, c.anchor, c.anchor_date) for c in res.batch.candidates]
    b = [(c.symbol, c.anchor, c.anchor_date) for c in ref]
    if a != b:
        out.append(f"candidates differ: {a[:5]} vs {b[:5]}")
    for x, y in zip(res.batch.candidates, ref, strict=False):
        for f1, f2 in (("avwap", "avwap"), ("stop_loss", "stop"), ("target_r1", "r1"), ("target_r2", "r2"),
                       ("score", "score"), ("entry_dist_pct", "dist"), ("band_sigma", "sigma")):
            if abs(getattr(x, f1) - getattr(y, f2)) > 6e-5 + 1e-9 * abs(getattr(y, f2)):
                out.append(f"{x.symbol} {f1}: {getattr(x, f1)} vs {getattr(y, f2)}")
    return out


def window(panel: Panel, n: int) -> Panel:
    """The last ``n`` sessions and the symbols with a bar in them (what ``BarStore.daily_panel`` returns)."""
    keep = np.flatnonzero(~np.isnan(panel.close[-n:]).all(axis=0))
    return Panel(dates=panel.dates[-n:], symbols=[panel.symbols[j] for j in keep], ts=panel.ts[-n:],
                 **{f: getattr(panel, f)[-n:, keep] for f in FIELDS})


def child(npz: str, scan_date: str) -> None:
    """Load the synthetic panel and scan it once (what a worker does per session); print time and peak RSS."""
    t0 = time.perf_counter()
    z = np.load(npz, allow_pickle=False)
    panel = Panel(dates=[str(x) for x in z["dates"]], symbols=[str(x) for x in z["symbols"]], ts=z["ts"],
                  **{f: z[f] for f in FIELDS})
    keep_freed_memory()  # as the scanner worker does at start (shared/allocator.py)
    win = window(panel, P.scan_history_bars)  # the bar store hands the worker this window without a copy
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = scan(win, None, {}, scan_date, panel.dates[-1], P)
    files = artifact_bytes(res)
    scan_s = time.perf_counter() - t0
    print(json.dumps({"scan_s": scan_s, "load_s": load_s, "candidates": len(res.batch.candidates),
                      "counts": res.batch.counts, "bytes": {k: len(v) for k, v in files.items()},
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--symbols", type=int, default=10_000)
    ap.add_argument("--sessions", type=int, default=500)
    ap.add_argument("--date", default="2018-10-01", help="Scan date of the real workload.")
    ap.add_argument("--bars", default=str(DAILY))
    ap.add_argument("--child", nargs=2, metavar=("NPZ", "DATE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return 0

    # 1. real data
    real = load_bars(args.bars)
    d = args.date
    last = last_session_before(d)
    panel = Panel.from_frame(real.frame, before=d, lookback=P.scan_history_bars)
    res = scan(panel, None, {}, d, last, P)
    t0 = time.perf_counter()
    ref, codes = reference_scan(real.frame, d, last, P)
    reference_real_s = time.perf_counter() - t0
    diff = agreement(res, ref, codes)
    if diff:
        print("the scan and the reference DISAGREE on the real data:\n  " + "\n  ".join(diff[:20]))
        return 1
    print(f"real data {d}: {len(panel.symbols)} symbols x {len(panel.dates)} sessions; scan and reference agree on "
          f"every outcome and all {len(ref)} candidates")
    runs = []
    for _ in range(7):
        t0 = time.perf_counter()
        artifact_bytes(scan(panel, None, {}, d, last, P))
        runs.append(time.perf_counter() - t0)
    scan_real_s = statistics.median(runs)
    with tempfile.TemporaryDirectory(prefix="avwap-bench-scan-") as tmp:
        store = BarStore(tmp)
        store.import_result(LoadResult(tf="1d", frame=real.frame[real.frame["trade_date"] < "2018-12-01"]))
        days = calendar().sessions_in_range("2018-10-01", "2018-11-30")
        store_runs = []
        for day in days:
            t0 = time.perf_counter()
            pan = store.daily_panel(before=day, lookback=P.scan_history_bars)
            artifact_bytes(scan(pan, None, {}, day, last_session_before(day), P))
            store_runs.append(time.perf_counter() - t0)
    scan_store_ms = statistics.median(store_runs[1:]) * 1000

    # 2. synthetic 10k x 500
    syn = synthetic_panel(args.symbols, args.sessions)
    syn_date = calendar().next_session(syn.dates[-1])
    with tempfile.TemporaryDirectory(prefix="avwap-bench-scan-") as tmp:
        npz = str(Path(tmp) / "panel.npz")
        np.savez(npz, dates=np.array(syn.dates), symbols=np.array(syn.symbols), ts=syn.ts,
                 **{f: getattr(syn, f) for f in FIELDS})
        out = subprocess.run([sys.executable, __file__, "--child", npz, syn_date], capture_output=True, text=True,
                             check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    scan_10k_s, rss_mb = got["scan_s"], got["peak_rss_mb"]
    frame = panel_frame(syn)
    t0 = time.perf_counter()
    ref_syn, codes_syn = reference_scan(frame, syn_date, syn.dates[-1], P)
    reference_10k_s = time.perf_counter() - t0
    syn_res = scan(window(syn, P.scan_history_bars), None, {}, syn_date, syn.dates[-1], P)
    diff_syn = agreement(syn_res, ref_syn, codes_syn)
    if diff_syn:
        print("the scan and the reference DISAGREE on the synthetic data:\n  " + "\n  ".join(diff_syn[:20]))
        return 1
    speedup = reference_10k_s / scan_10k_s

    print(f"real: scan {scan_real_s * 1000:.1f} ms (median of 7), reference {reference_real_s:.2f} s "
          f"({reference_real_s / scan_real_s:.0f}x); replay path (store read + scan + artifact bytes) "
          f"{scan_store_ms:.1f} ms per session (median of {len(store_runs) - 1})")
    print(f"synthetic {args.symbols} x {args.sessions}: scan {scan_10k_s:.2f} s wall, peak RSS {rss_mb:.0f} MB "
          f"(child process: panel load and window copy {got['load_s']:.2f} s not counted), {got['candidates']} candidates; "
          f"reference {reference_10k_s:.1f} s; agree on every outcome; speedup {speedup:.1f}x")
    ok_t, ok_m, ok_x = scan_10k_s <= 3.0, rss_mb <= 2048, speedup >= 20
    print(f"targets: 10k <= 3 s {'met' if ok_t else 'NOT met'}; <= 2 GB {'met' if ok_m else 'NOT met'}; "
          f">= 20x {'met' if ok_x else 'NOT met'} (2 shared cores: figures are noisy)")
    print(json.dumps({
        "scan_10k_s": round(scan_10k_s, 3), "scan_10k_peak_rss_mb": round(rss_mb, 1),
        "reference_10k_s": round(reference_10k_s, 2), "speedup": round(speedup, 1),
        "scan_real_s": round(scan_real_s, 4), "reference_real_s": round(reference_real_s, 3),
        "speedup_real": round(reference_real_s / scan_real_s, 1), "scan_store_session_ms": round(scan_store_ms, 1),
        "symbols": args.symbols, "sessions": args.sessions, "real_date": d, "agree_real": True,
        "agree_synthetic": True, "targets_met": ok_t and ok_m and ok_x,
    }, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
