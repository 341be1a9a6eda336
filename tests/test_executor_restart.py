"""SIGKILL + restart of the executor worker process (PAPER_SIM, real Redis): same events, no duplicate order."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from avwap.procs import ServiceProcs
from shared.bus import Bus
from shared.streams import BARS_1D, BARS_1M, BROKER, CLOCK, INTENTS, ORDERS, REJECTIONS
from tests.executor_helpers import daily, entry, exit_intent, session, stop_place

D1, D2, D3 = "2018-03-01", "2018-03-02", "2018-03-05"
INPUTS = (INTENTS, CLOCK, BARS_1M, BARS_1D)


def steps() -> list[tuple[str, object]]:
    it = entry(D1, "AAA", 100, level=50.0, stop=48.0)
    it2 = entry(D1, "BBB", 40, level=20.0, stop=19.0)
    out: list[tuple[str, object]] = [
        (CLOCK, session(D1, "PRE_MARKET")), (INTENTS, it), (INTENTS, it2), (CLOCK, session(D1, "OPEN")),
        (CLOCK, session(D1, "WINDOW_OPEN")),
        (BARS_1D, daily(D1, ("AAA", 50.5, 52.0, 50.0, 51.0), ("BBB", 19.5, 20.5, 19.0, 20.0))),
        (CLOCK, session(D1, "CLOSE")), (CLOCK, session(D2, "PRE_MARKET")), (CLOCK, session(D2, "OPEN")),
    ]
    si = stop_place(D2, "AAA", 100, 49.0, session(D2, "WINDOW_OPEN").ts)
    out += [(CLOCK, session(D2, "WINDOW_OPEN")), (INTENTS, si),
            (BARS_1D, daily(D2, ("AAA", 51.0, 53.0, 50.5, 52.5), ("BBB", 20.0, 20.5, 19.5, 20.2))),
            (INTENTS, exit_intent(D2, "AAA", 100, session(D2, "CLOSE").ts - 1)), (CLOSE := CLOCK, session(D2, "CLOSE")),
            (CLOCK, session(D3, "PRE_MARKET")), (CLOCK, session(D3, "OPEN")),
            (BARS_1D, daily(D3, ("AAA", 53.0, 54.0, 52.0, 53.5), ("BBB", 20.1, 20.3, 19.9, 20.0))),
            (CLOSE, session(D3, "CLOSE"))]
    return out


def quiescent(r: redis.Redis) -> bool:
    for s in INPUTS:
        if not r.exists(s):
            continue
        for g in r.xinfo_groups(s):
            if g["name"] == b"executor" and (g["pending"] or g.get("lag")):
                return False
    return True


def run(redis_url: str, r: redis.Redis, tmp: Path, crash: str | None) -> tuple[list[bytes], bytes, int]:
    r.flushdb()
    env = {"EXECUTION_MODE": "PAPER_SIM", "LEDGER_DIR": str(tmp / "ledger"), "BUS_BLOCK_MS": "50",
           "BUS_CLAIM_IDLE_MS": "500", "SIM_SLIPPAGE_BPS": "5"}
    if crash:
        env["AVWAP_TEST_CRASH"] = crash
    procs = ServiceProcs(redis_url, env=env, log_dir=tmp / "logs")
    restarts = 0
    bus = Bus(r)
    try:
        procs.start("executor")
        procs.wait_ready()
        for stream, msg in steps():
            bus.publish(stream, msg)  # type: ignore[arg-type]
            deadline = time.monotonic() + 30
            while not quiescent(r):
                p = procs.procs["executor-0"]
                if p.poll() is not None:  # killed: restart without the crash hook
                    assert p.returncode == -9, p.returncode
                    procs.env.pop("AVWAP_TEST_CRASH", None)
                    procs.start("executor")
                    restarts += 1
                assert time.monotonic() < deadline, "executor did not catch up"
                time.sleep(0.02)
    finally:
        procs.stop_all()
    data = [f[b"data"] for s in (ORDERS, BROKER, REJECTIONS) for _, f in r.xrange(s)]
    ledgers = b"".join(p.read_bytes() for p in sorted((tmp / "ledger").rglob("*.jsonl")))
    return data, ledgers, restarts


@pytest.mark.redis
def test_sigkill_at_any_point_gives_the_same_events_and_no_duplicate_order(redis_url: str, real_redis: redis.Redis, tmp_path: Path) -> None:
    ref_data, ref_ledger, _ = run(redis_url, real_redis, tmp_path / "ref", None)
    assert len(ref_data) == 16 and ref_ledger  # 6 order events, 9 snapshots, 1 rejection
    for crash in ("before_commit:4", "after_commit:6", "before_commit:11", "after_commit:13"):
        data, ledger_bytes, restarts = run(redis_url, real_redis, tmp_path / crash.replace(":", "_"), crash)
        assert restarts == 1, crash
        assert data == ref_data, crash
        assert ledger_bytes == ref_ledger, crash
