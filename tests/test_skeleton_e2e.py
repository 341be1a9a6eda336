"""Walking skeleton on a real Redis: one candidate through risk -> executor (DRY_RUN) -> exits, analytics."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from avwap.commands.demo import demo_candidate
from avwap.commands.risk import session_prelude
from avwap.procs import ServiceProcs
from services.scanner.session import publish_batch_once
from shared.bus import Bus
from shared.schemas import EntryIntent, OrderEvent, decode
from shared.streams import BROKER, CANDIDATES, CLOCK, INTENTS, ORDERS, state_key


def _until(pred, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_one_candidate_flows_through_all_five_services(redis_url: str, real_redis: redis.Redis, tmp_path: Path) -> None:
    procs = ServiceProcs(redis_url, env={"EXECUTION_MODE": "DRY_RUN", "LEDGER_DIR": str(tmp_path / "ledger"),
                                         "ARTIFACTS_DIR": str(tmp_path / "art"), "BUS_BLOCK_MS": "100"},
                         log_dir=tmp_path / "logs")
    try:
        procs.start_all()
        procs.wait_ready()
        batch = demo_candidate()
        # The hand-made batch stands in for the scanner's: it claims the session first, so the scanner
        # (which scans on PRE_MARKET) publishes no second batch for it.
        assert publish_batch_once(real_redis, [(CANDIDATES, batch)], owner="test")
        Bus(real_redis).publish_many(session_prelude(batch.scan_date))  # risk decides only after PRE_MARKET + a fresh snapshot
        _until(lambda: real_redis.xlen(ORDERS) == 1)
        intent = decode(real_redis.xrange(INTENTS)[0][1][b"data"])
        event = decode(real_redis.xrange(ORDERS)[0][1][b"data"])
        assert isinstance(intent, EntryIntent) and intent.candidate_id == batch.candidates[0].candidate_id
        assert isinstance(event, OrderEvent) and event.intent_id == intent.intent_id and event.mode == "DRY_RUN"
        # exits saw the DRY_RUN "accepted" (no shares, so no position and no stop) and counted it
        _until(lambda: real_redis.hget(state_key("exits", "stats"), "order_ignored:entry:accepted") == b"1")
        ledger = tmp_path / "ledger" / "analytics" / f"{batch.scan_date}.jsonl"
        # prelude snapshot, the executor's own pre_market snapshot, candidates, order event
        _until(lambda: ledger.exists() and ledger.read_text().count("\n") == 4)
        for group, stream in (("scanner", CLOCK), ("risk", CANDIDATES), ("risk", CLOCK), ("risk", BROKER), ("executor", INTENTS), ("exits", ORDERS), ("analytics", ORDERS)):
            # a handler's side effects (e.g. the ledger line) land just before its commit: wait for the ack
            _until(lambda group=group, stream=stream: real_redis.xpending(stream, group)["pending"] == 0)
        last_clock = real_redis.xrevrange(CLOCK, count=1)[0][0]
        _until(lambda: any(g["name"] == b"scanner" and g["last-delivered-id"] == last_clock
                           for g in real_redis.xinfo_groups(CLOCK)))
        _until(lambda: real_redis.xpending(CLOCK, "scanner")["pending"] == 0)
        assert real_redis.xlen(CANDIDATES) == 1  # the scanner handled PRE_MARKET and saw the session claimed
    finally:
        codes = procs.stop_all()
    assert set(codes.values()) == {0}, codes
