"""Analytics with REGIME_MODULATION=1 (real Redis, real consumers): D's decisions wait for D's Regime,
whichever of the two arrives first, and fail closed at OPEN when it never comes; one batch each time."""

from __future__ import annotations

from pathlib import Path

import redis

from services.analytics.worker import SPEC
from shared.schemas import Regime
from shared.service import make_consumer, make_context
from shared.settings import load_settings
from shared.streams import CANDIDATES, CLOCK, REGIME
from tests.test_analytics_core import batch, cand
from tests.test_analytics_open import decision_batches, steps
from tests.test_analytics_worker import session

D = "2018-10-01"


def consumer(url: str, root: Path, name: str = "a0", modulation: bool = True):
    settings = load_settings(redis_url=url, artifacts_dir=str(root / "artifacts"), ledger_dir=str(root / "ledger"),
                             bars_dir=str(root / "bars"), bus_block_ms=50, regime_modulation=modulation)
    c = make_consumer(SPEC, make_context("analytics", settings, redis.Redis.from_url(url)), consumer_name=name)
    c.ensure_groups()
    return c


def regime(label: str) -> Regime:
    return Regime(regime_id=f"rg-{label}", date="2018-09-28", session=D, label=label, rule=label, reason="crafted")  # type: ignore[arg-type]


def cands():
    return batch(*(cand(s, 90 - i, scan_date=D, candidate_id=f"c{i}") for i, s in enumerate(("AAA", "BBB", "CCC"))), date=D)


def test_decisions_wait_for_the_regime_and_apply_it(redis_url: str, real_redis: redis.Redis, tmp_path: Path) -> None:
    c = consumer(redis_url, tmp_path)
    steps(c, real_redis, [(CLOCK, session(D, "PRE_MARKET"))], [(CANDIDATES, cands())])
    assert decision_batches(real_redis) == []  # held: no Regime of D yet
    steps(c, real_redis, [(REGIME, regime("STRESSED"))], [(CLOCK, session(D, "OPEN"))])
    (b,) = decision_batches(real_redis)
    assert [d.reason_codes for d in b.decisions] == [["ALLOW_WITHIN_LIMITS"], ["REGIME_ENTRY_CAP"], ["REGIME_ENTRY_CAP"]]
    assert b.provenance["input:regime"] == "rg-STRESSED"


def test_a_regime_first_then_the_batch_decides_at_once(redis_url: str, real_redis: redis.Redis, tmp_path: Path) -> None:
    c = consumer(redis_url, tmp_path)
    steps(c, real_redis, [(CLOCK, session(D, "PRE_MARKET"))], [(REGIME, regime("RISK_ON"))], [(CANDIDATES, cands())])
    (b,) = decision_batches(real_redis)
    assert [d.decision for d in b.decisions] == ["ALLOW"] * 3


def test_no_regime_by_the_open_is_the_most_conservative_row(redis_url: str, real_redis: redis.Redis, tmp_path: Path) -> None:
    c = consumer(redis_url, tmp_path)
    steps(c, real_redis, [(CLOCK, session(D, "PRE_MARKET"))], [(CANDIDATES, cands())], [(CLOCK, session(D, "OPEN"))])
    (b,) = decision_batches(real_redis)
    assert [d.reason_codes for d in b.decisions][1] == ["REGIME_UNKNOWN", "REGIME_ENTRY_CAP"]
    assert b.provenance["input:regime"] == "missing"
    steps(c, real_redis, [(REGIME, regime("RISK_ON"))])  # a late Regime changes nothing
    assert len(decision_batches(real_redis)) == 1


def test_with_the_modulation_off_the_regime_is_not_waited_for(redis_url: str, real_redis: redis.Redis, tmp_path: Path) -> None:
    c = consumer(redis_url, tmp_path, modulation=False)
    steps(c, real_redis, [(CLOCK, session(D, "PRE_MARKET"))], [(CANDIDATES, cands())], [(REGIME, regime("STRESSED"))])
    (b,) = decision_batches(real_redis)
    assert [d.decision for d in b.decisions] == ["ALLOW"] * 3 and "input:regime" not in b.provenance


def test_a_batch_after_the_open_is_decided_at_once_without_a_regime(redis_url: str, real_redis: redis.Redis,
                                                                    tmp_path: Path) -> None:
    c = consumer(redis_url, tmp_path)
    steps(c, real_redis, [(CLOCK, session(D, "PRE_MARKET"))], [(CLOCK, session(D, "OPEN"))], [(CANDIDATES, cands())])
    missing, late = decision_batches(real_redis)
    assert missing.reason_codes == ["CANDIDATES_MISSING"]
    assert {d.decision for d in late.decisions} == {"BLOCK"} and late.candidates_batch_id == cands().batch_id
