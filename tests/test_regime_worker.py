"""Regime worker on real Redis: one Regime per session from the bar store, its artifact, and no
second one for a repeated clock event or a second replica; stale bars fail closed."""

from __future__ import annotations

from pathlib import Path

import redis

from services.regime.worker import SPEC
from shared.bars import BarStore, LoadResult, load_bars
from shared.bus import Bus
from shared.schemas import Regime, decode
from shared.service import make_consumer, make_context
from shared.settings import load_settings
from shared.streams import CLOCK, REGIME
from tests.conftest import SAMPLE_DIR
from tests.test_analytics_worker import session


def consumer(url: str, root: Path, name: str):
    settings = load_settings(redis_url=url, artifacts_dir=str(root / "artifacts"), bars_dir=str(root / "bars"),
                             bus_block_ms=50)
    c = make_consumer(SPEC, make_context("regime", settings, redis.Redis.from_url(url)), consumer_name=name)
    c.ensure_groups()
    return c


def regimes(r: redis.Redis) -> list[Regime]:
    return [m for _, f in r.xrange(REGIME) if isinstance(m := decode(f[b"data"]), Regime)]


def test_one_regime_per_session_with_its_artifact(redis_url: str, real_redis: redis.Redis, tmp_path: Path) -> None:
    frame = load_bars(SAMPLE_DIR / "daily_2017_2018.csv.gz").frame
    BarStore(tmp_path / "bars").import_result(LoadResult(tf="1d", frame=frame[frame["trade_date"] < "2018-10-25"]))
    a, b = consumer(redis_url, tmp_path, "r0"), consumer(redis_url, tmp_path, "r1")
    bus = Bus(real_redis)
    bus.publish(CLOCK, session("2018-10-25", "PRE_MARKET"))
    a.run(install_signals=False, until_idle=True)
    (reg,) = regimes(real_redis)
    assert (reg.session, reg.date, reg.market, reg.universe_size) == ("2018-10-25", "2018-10-24", "universe_proxy", 36)
    assert reg.label in ("RISK_OFF", "STRESSED") and reg.provenance["input:bars_through"] == "2018-10-24"
    art = tmp_path / "artifacts" / "regimes" / "2018-10-24.json"
    assert decode(art.read_bytes(), Regime) == reg
    bus.publish(CLOCK, session("2018-10-25", "PRE_MARKET"))  # the clock event again, read by another replica
    b.run(install_signals=False, until_idle=True)
    a.run(install_signals=False, until_idle=True)
    assert len(regimes(real_redis)) == 1
    bus.publish(CLOCK, session("2018-10-29", "PRE_MARKET"))  # bars end on 10-24: 10-26 is missing
    a.run(install_signals=False, until_idle=True)
    stale = regimes(real_redis)[-1]
    assert (stale.session, stale.label, stale.reason_code) == ("2018-10-29", "REGIME_UNKNOWN", "MARKET_STALE")


