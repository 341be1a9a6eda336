"""Analytics' retention by trade date: closed sessions older than ANALYTICS_KEEP_SESSIONS leave Redis
(sealed), their artifacts are what a run that keeps everything writes, and a late message of a sealed
session goes to the DLQ without touching its artifacts or re-creating its keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

import tests.test_analytics_worker as tw
from services.analytics.ledger_files import flush_dirty
from services.analytics.state import State
from services.analytics.store import DECISIONS_KEY, DIRTY_KEY, OPENS_KEY, SEALED_KEY, day_key, prov_key
from services.analytics.worker import SPEC
from shared.bus import Bus
from shared.schemas import PortfolioDecisionBatch, Rejection, decode
from shared.service import make_consumer, make_context
from shared.streams import DLQ, REJECTIONS
from tests.test_analytics_helpers import close_ns
from tests.test_analytics_worker import D1, D2, D3, bars_dir  # noqa: F401 - the module's bars fixture


def _keeping(keep: int):
    def settings(url: str, root: Path, bars: Path):
        return tw.load_settings(
            redis_url=url, artifacts_dir=str(root / "artifacts"), ledger_dir=str(root / "ledger"), bars_dir=str(bars),
            execution_mode="PAPER_SIM", bus_block_ms=50, bus_batch=1, analytics_keep_sessions=keep)
    return settings


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for base in ("artifacts", "ledger")
            for p in sorted((root / base).rglob("*")) if p.is_file()}


def test_old_sessions_are_sealed_and_a_late_message_is_dead_lettered(
        redis_url: str, real_redis: redis.Redis, tmp_path: Path, bars_dir: Path,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    full = tw.run(redis_url, tmp_path / "full", bars_dir)  # default retention: nothing sealed in three sessions
    assert all(real_redis.exists(day_key(d)) for d in (D1, D2, D3))
    assert not real_redis.exists(SEALED_KEY)
    decided = sorted(decode(v, PortfolioDecisionBatch).date for v in real_redis.hvals(DECISIONS_KEY))
    assert D2 in decided
    real_redis.flushdb()

    monkeypatch.setattr(tw, "_settings", _keeping(1))
    kept = tw.run(redis_url, tmp_path / "kept", bars_dir)
    assert kept == full  # sealing drops only what every artifact was already written from
    assert [bool(real_redis.exists(day_key(d))) for d in (D1, D2, D3)] == [False, False, True]
    assert not any(real_redis.exists(prov_key(d)) for d in (D1, D2))
    assert real_redis.get(SEALED_KEY) == D2.encode()
    assert not any(m.decode().startswith((D1, D2)) for m in real_redis.smembers(DIRTY_KEY))
    assert sorted(decode(v, PortfolioDecisionBatch).date for v in real_redis.hvals(DECISIONS_KEY)) == \
        [d for d in decided if d > D2]  # a sealed session's decisions go with it
    assert all(d.decode() > D2 for d in real_redis.zrange(OPENS_KEY, 0, -1))

    late = Rejection(rejection_id="rj-late", source="executor", symbol="MSFT", trade_date=D1,
                     reasons=["ENTRY_NOT_CONFIRMED"], ts=close_ns(D1))
    Bus(real_redis).publish_many([(REJECTIONS, late)])
    settings = _keeping(1)(redis_url, tmp_path / "kept", bars_dir)
    c = make_consumer(SPEC, make_context("analytics", settings, real_redis), consumer_name="analytics-late")
    c.ensure_groups()
    c.run(install_signals=False, until_idle=True)
    dead = [f for _, f in real_redis.xrange(DLQ)]
    assert [f[b"dlq_reason"].decode().split(":")[0] for f in dead] == ["ANALYTICS_SESSION_SEALED"]
    assert b"rj-late" in dead[0][b"data"] and dead[0][b"dlq_source_stream"] == REJECTIONS.encode()
    assert not real_redis.exists(day_key(D1))  # nothing of the sealed session re-created
    assert _files(tmp_path / "kept") == kept  # its artifacts stay as written
    assert c.stats.dead_lettered == 1 and c.stats.failed == 0

    # a record ingested just before its session was sealed left a dirty mark: the ledger file stays as written
    real_redis.sadd(DIRTY_KEY, f"{D1}|ledger")
    flush_dirty(State(make_context("analytics", settings, real_redis)))
    assert not real_redis.smembers(DIRTY_KEY) and _files(tmp_path / "kept") == kept
