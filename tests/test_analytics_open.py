"""Missing or dead-lettered candidates: analytics closes D's decisions at OPEN(D) (real Redis, real consumers)."""

from __future__ import annotations

import json
from pathlib import Path

import redis

from services.analytics.worker import SPEC
from services.risk.core import Limits
from shared.bus import Bus
from shared.schemas import Alert, PortfolioDecisionBatch, Rejection, decode
from shared.service import make_consumer, make_context
from shared.settings import load_settings
from shared.streams import ALERTS, CANDIDATES, CLOCK, DLQ, PORTFOLIO
from tests import test_risk_support as rs
from tests.test_analytics_core import batch, cand
from tests.test_analytics_worker import session

D1, D2 = "2018-10-01", "2018-10-02"


def consumer(url: str, root: Path, name: str = "a0"):
    settings = load_settings(redis_url=url, artifacts_dir=str(root / "artifacts"), ledger_dir=str(root / "ledger"),
                             bars_dir=str(root / "bars"), bus_block_ms=50)
    c = make_consumer(SPEC, make_context("analytics", settings, redis.Redis.from_url(url)), consumer_name=name)
    c.ensure_groups()
    return c


def steps(c, r: redis.Redis, *steps) -> None:
    """Publish each step, then let the consumer go idle (as the replay driver waits for quiescence)."""
    for step in steps:
        if callable(step):
            step()
        else:
            Bus(r).publish_many(step)
        c.run(install_signals=False, until_idle=True)


def decision_batches(r: redis.Redis) -> list[PortfolioDecisionBatch]:
    return [m for _, f in r.xrange(PORTFOLIO) if isinstance(m := decode(f[b"data"]), PortfolioDecisionBatch)]


def alerts(r: redis.Redis, kind: str) -> list[Alert]:
    return [m for _, f in r.xrange(ALERTS) if isinstance(m := decode(f[b"data"]), Alert) and m.kind == kind]


def test_open_without_candidates_publishes_one_missing_batch(redis_url: str, real_redis: redis.Redis, tmp_path: Path) -> None:
    c = consumer(redis_url, tmp_path)
    bus = Bus(real_redis)
    steps(c, real_redis, [(CLOCK, session(D1, "PRE_MARKET"))], [(CLOCK, session(D1, "OPEN"))])
    (b,) = decision_batches(real_redis)
    assert (b.date, b.decisions, b.reason_codes) == (D1, [], ["CANDIDATES_MISSING"])
    assert b.provenance["decision_artifact"] == f"portfolio_decisions/{D1}.json"
    assert b.provenance["input:candidates"] == "missing" and b.provenance["settings_hash"]
    on_disk = tmp_path / "artifacts" / b.provenance["decision_artifact"]
    assert decode(on_disk.read_bytes(), PortfolioDecisionBatch) == b
    (a,) = alerts(real_redis, "candidates_missing")
    assert a.severity == "warning" and a.runbook == "candidates-missing" and a.fields["code"] == "CANDIDATES_MISSING"
    # the clock event published again, and a second replica reading it: still one batch, one alert
    bus.publish(CLOCK, session(D1, "OPEN"))
    consumer(redis_url, tmp_path, "a1").run(install_signals=False, until_idle=True)
    c.run(install_signals=False, until_idle=True)
    assert len(decision_batches(real_redis)) == 1 and len(alerts(real_redis, "candidates_missing")) == 1


def test_batch_before_open_means_no_missing_batch(redis_url: str, real_redis: redis.Redis, tmp_path: Path) -> None:
    c = consumer(redis_url, tmp_path)
    steps(c, real_redis, [(CLOCK, session(D1, "PRE_MARKET"))],
          [(CANDIDATES, batch(cand("AAA", 90, scan_date=D1, candidate_id="c1"), date=D1))], [(CLOCK, session(D1, "OPEN"))])
    (b,) = decision_batches(real_redis)
    assert b.reason_codes == [] and [d.decision for d in b.decisions] == ["ALLOW"]
    assert alerts(real_redis, "candidates_missing") == []


def test_dead_lettered_batch_becomes_parse_error(redis_url: str, real_redis: redis.Redis, tmp_path: Path) -> None:
    c = consumer(redis_url, tmp_path)
    # valid JSON naming its date but not a valid CandidateBatch (batch_id is a number)
    bad = {"type": "candidate_batch", "v": 1, "batch_id": 7, "scan_date": D1, "market_gate_ok": True, "candidates": []}
    steps(c, real_redis, [(CLOCK, session(D1, "PRE_MARKET"))],
          lambda: real_redis.xadd(CANDIDATES, {"type": "candidate_batch", "v": "1", "data": json.dumps(bad)}),
          [(CLOCK, session(D1, "OPEN"))])
    assert [f[b"dlq_group"] for _, f in real_redis.xrange(DLQ)] == [b"analytics"]
    (b,) = decision_batches(real_redis)
    assert b.reason_codes == ["CANDIDATES_PARSE_ERROR"] and b.decisions == []
    assert b.provenance["input:candidates"] == "dead_lettered"
    (a,) = alerts(real_redis, "candidates_missing")
    assert a.severity == "critical" and a.fields["code"] == "CANDIDATES_PARSE_ERROR"


def test_unreadable_batch_is_attributed_to_the_session_it_was_published_in(redis_url: str, real_redis: redis.Redis,
                                                                           tmp_path: Path) -> None:
    """Not even JSON: the batch belongs to the first OPEN after it (D2's), not to D1's."""
    c = consumer(redis_url, tmp_path)
    steps(c, real_redis, [(CLOCK, session(D1, "PRE_MARKET"))], [(CLOCK, session(D1, "OPEN"))],
          [(CLOCK, session(D2, "PRE_MARKET"))],
          lambda: real_redis.xadd(CANDIDATES, {"type": "candidate_batch", "v": "1", "data": b"\xff garbage"}),
          [(CLOCK, session(D2, "OPEN"))])
    assert [(b.date, b.reason_codes) for b in decision_batches(real_redis)] == [
        (D1, ["CANDIDATES_MISSING"]), (D2, ["CANDIDATES_PARSE_ERROR"])]


def test_a_batch_after_the_open_is_blocked(redis_url: str, real_redis: redis.Redis, tmp_path: Path) -> None:
    c = consumer(redis_url, tmp_path)
    steps(c, real_redis, [(CLOCK, session(D1, "PRE_MARKET"))], [(CLOCK, session(D1, "OPEN"))],
          [(CANDIDATES, batch(cand("AAA", 90, scan_date=D1, candidate_id="c1"), date=D1))])
    missing, late = decision_batches(real_redis)
    assert missing.reason_codes == ["CANDIDATES_MISSING"]
    assert [(d.symbol, d.decision, d.reason_codes) for d in late.decisions] == [("AAA", "BLOCK", ["CANDIDATES_MISSING"])]
    on_disk = decode((tmp_path / "artifacts" / "portfolio_decisions" / f"{D1}.json").read_bytes(), PortfolioDecisionBatch)
    assert on_disk == late


def test_risk_enforcement_reads_the_missing_batch_as_a_block() -> None:
    """The batch-level CANDIDATES_MISSING batch is schema-valid for risk's enforcement: a candidate
    of that date finds no decision (DECISION_SYMBOL_NOT_FOUND), and the telemetry keeps the artifact path."""
    from services.analytics.decisions import decide
    from services.analytics.portfolio import initial_snapshot
    from tests.test_analytics_core import G

    d = rs.D
    missing = decide(d, None, initial_snapshot(100_000.0), G,
                     provenance={"decision_artifact": f"portfolio_decisions/{d}.json"})
    st, emits = rs.run([rs.session(d), rs.snapshot(d), missing, rs.session(d, "OPEN"), rs.batch([rs.cand("AAPL")])],
                       limits=Limits(enforce=True))
    (rej,) = [m for _, m in emits if isinstance(m, Rejection)]
    assert "DECISION_SYMBOL_NOT_FOUND" in rej.reasons and "DECISION_SCHEMA_INVALID" not in rej.reasons
    assert st.decided[d][rs.cand("AAPL").candidate_id].provenance["decision_artifact"] == f"portfolio_decisions/{d}.json"
