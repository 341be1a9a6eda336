#!/usr/bin/env python3
"""Risk benchmark: what the worker's transaction costs over the pure decision it wraps.

The same workload three ways, in one run: a session prelude, then ``--n`` one-candidate
batches (caps high enough that every candidate becomes an intent).

- ``core``: the pure reducer ``core.step`` alone, in memory (the reference);
- ``transact``: ``worker.transact`` per message on a real Redis (a unit of work: WATCH, read state and
  controls, step, then one EXEC of the commit script: XACK, SET state, XADD outputs), no artifact;
- ``worker``: the real consumer (read, decode, transact, artifact rewrite with fsync).

Also: one batch of ``--n`` candidates decided by the core (a big scan day). The ratios are
``transact`` and ``worker`` messages/s over ``core`` steps/s (how much of the core's speed the
shell keeps). Figures are noisy on a shared machine.

Redis: a private redis-server on a free port (default); or ``--redis URL`` of an EMPTY
database (refused otherwise: risk's keys are fixed names). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.risk.core import Controls, RiskState, step  # noqa: E402
from services.risk.worker import SPEC, limits_for, transact  # noqa: E402
from shared.bus import Bus  # noqa: E402
from shared.redis_conn import connect, start_redis_server  # noqa: E402
from shared.service import make_consumer, make_context  # noqa: E402
from shared.settings import Settings, load_settings  # noqa: E402
from shared.streams import BROKER, CANDIDATES, CLOCK, INTENTS, REJECTIONS  # noqa: E402
from tests.test_risk_support import batch, cand, session, snapshot  # noqa: E402


def settings_for(url: str, artifacts: str, n: int) -> Settings:
    return load_settings(redis_url=url, artifacts_dir=artifacts, max_new_entries_per_day=n, max_concurrent_positions=n,
                         max_gross_exposure=1e12, max_gross_exposure_pct=1000.0)


def workload(n: int) -> tuple[list, list]:
    return [session(), snapshot(equity=1e9)], [batch([cand(f"S{i:04d}")]) for i in range(n)]


def bench_core_batch(settings: Settings, n: int) -> float:
    limits = limits_for(settings)
    st = RiskState()
    for m in workload(0)[0]:
        st = step(st, m, Controls(), limits).state
    t0 = time.perf_counter()
    res = step(st, batch([cand(f"S{i:04d}", score=i % 97) for i in range(n)]), Controls(), limits)
    dt = time.perf_counter() - t0
    assert sum(1 for s, _ in res.emits if s == INTENTS) == n
    return dt


def bench_core(settings: Settings, n: int) -> float:
    limits = limits_for(settings)
    prelude, batches = workload(n)
    st = RiskState()
    for m in prelude:
        st = step(st, m, Controls(), limits).state
    intents = 0
    t0 = time.perf_counter()
    for m in batches:
        res = step(st, m, Controls(), limits)
        st = res.state
        intents += sum(1 for s, _ in res.emits if s == INTENTS)
    dt = time.perf_counter() - t0
    assert intents == n, intents
    return n / dt


def bench_transact(url: str, settings: Settings, n: int) -> float:
    r = connect(url)
    r.flushdb()
    bus = Bus(r, maxlen=settings.core.bus_maxlen)
    limits = limits_for(settings)
    prelude, batches = workload(n)
    for m in prelude:
        transact(bus, settings, limits, m, None)
    t0 = time.perf_counter()
    for m in batches:
        transact(bus, settings, limits, m, None)
    dt = time.perf_counter() - t0
    assert r.xlen(INTENTS) == n
    return n / dt


def bench_worker(url: str, settings: Settings, n: int) -> tuple[float, int]:
    r = connect(url)
    r.flushdb()
    consumer = make_consumer(SPEC, make_context("risk", settings, r), "bench")
    bus = Bus(r)
    (clock, snap), batches = workload(n)
    bus.publish_many([(CLOCK, clock), (BROKER, snap)])
    consumer.run(install_signals=False, until_idle=True)
    bus.publish_many([(CANDIDATES, b) for b in batches])
    t0 = time.perf_counter()
    consumer.run(install_signals=False, until_idle=True)
    dt = time.perf_counter() - t0
    assert r.xlen(INTENTS) == n and r.xlen(REJECTIONS) == 0, (r.xlen(INTENTS), r.xlen(REJECTIONS))
    return n / dt, consumer.stats.lost_races


def run(url: str, n: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_for(url, tmp, n)
        batch_s = bench_core_batch(settings, n)
        core = bench_core(settings, n)
        txn = bench_transact(url, settings, n)
        worker, lost = bench_worker(url, settings, n)
    print(f"core, one batch of {n} candidates: {batch_s * 1000:.1f} ms ({n / batch_s:,.0f} candidates/s)")
    print(f"core, {n} one-candidate batches: {core:,.0f} steps/s (reference)")
    print(f"transact (state + outputs + ack, real Redis): {txn:,.0f} msgs/s = {txn / core:.2f} x core")
    print(f"worker (consumer + transact + artifact rewrite): {worker:,.0f} msgs/s = {worker / core:.2f} x core, "
          f"lost_races={lost}")
    return {"bench": "risk", "n": n, "core_batch_ms": round(batch_s * 1000, 2), "core_steps_per_s": round(core),
            "transact_msgs_per_s": round(txn), "worker_msgs_per_s": round(worker),
            "ratio_transact_vs_core": round(txn / core, 3), "ratio_worker_vs_core": round(worker / core, 3),
            "lost_races": lost}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=500, help="candidates (one batch each)")
    ap.add_argument("--redis", default="", help="URL of an EMPTY Redis database (default: a private redis-server)")
    args = ap.parse_args()
    if args.redis:
        if connect(args.redis).dbsize():
            print(f"bench_risk: refusing {args.redis}: the database is not empty (risk's keys have fixed names)",
                  file=sys.stderr)
            return 2
        result = run(args.redis, args.n)
        connect(args.redis).flushdb()
    else:
        emb = start_redis_server()
        try:
            result = run(emb.url, args.n)
        finally:
            emb.stop()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
