"""Risk throughput: pure core decisions/s, and worker transactions/s on a real Redis (state + publish + ack).

Usage: ``python bench/bench_risk.py [REDIS_URL]`` (default: a private redis-server on a free port).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.risk.core import Controls, Limits, RiskState, step  # noqa: E402
from services.risk.worker import SPEC  # noqa: E402
from shared.bus import Bus  # noqa: E402
from shared.redis_conn import connect, start_redis_server  # noqa: E402
from shared.service import make_consumer, make_context  # noqa: E402
from shared.settings import load_settings  # noqa: E402
from shared.streams import BROKER, CANDIDATES, CLOCK, INTENTS, REJECTIONS  # noqa: E402
from tests.test_risk_support import batch, cand, session, snapshot  # noqa: E402

N = 500


def bench_core() -> None:
    limits = Limits(max_new_entries_per_day=N, max_concurrent_positions=N, max_gross_exposure=1e12, max_gross_exposure_pct=1e6)
    st = step(RiskState(), session(), Controls(), limits).state
    st = step(st, snapshot(equity=1e9), Controls(), limits).state
    cs = [cand(f"S{i:04d}", score=i % 97) for i in range(N)]
    t0 = time.perf_counter()
    res = step(st, batch(cs), Controls(), limits)
    dt = time.perf_counter() - t0
    print(f"core: one batch of {N} candidates decided in {dt * 1000:.1f} ms ({N / dt:,.0f} candidates/s), "
          f"{sum(1 for s, _ in res.emits if s == INTENTS)} intents")


def bench_worker(url: str) -> None:
    r = connect(url)
    r.flushdb()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(redis_url=url, artifacts_dir=tmp, max_new_entries_per_day=N, max_concurrent_positions=N,
                                 max_gross_exposure=1e12, max_gross_exposure_pct=1e6)
        consumer = make_consumer(SPEC, make_context("risk", settings, r), "bench")
        bus = Bus(r)
        bus.publish(CLOCK, session())
        bus.publish(BROKER, snapshot(equity=1e9))
        consumer.run(install_signals=False, until_idle=True)
        for i in range(N):
            bus.publish(CANDIDATES, batch([cand(f"S{i:04d}")]))
        t0 = time.perf_counter()
        consumer.run(install_signals=False, until_idle=True)
        dt = time.perf_counter() - t0
    print(f"worker: {N} one-candidate batches in {dt:.2f} s ({N / dt:,.0f} transactions/s incl. artifact rewrite), "
          f"intents={r.xlen(INTENTS)} rejections={r.xlen(REJECTIONS)}")


def main() -> None:
    bench_core()
    if len(sys.argv) > 1:
        bench_worker(sys.argv[1])
        return
    emb = start_redis_server()
    try:
        bench_worker(emb.url)
    finally:
        emb.stop()


if __name__ == "__main__":
    main()
