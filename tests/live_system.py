"""A replay whose services stay up afterwards: the system as an operator finds it after a few
sessions (the dashboard and metrics tests look at it). Each of those modules has its own, as a
module-scoped fixture, stopped when the module is done (nothing idles through the rest of the suite).

The five real services run as processes on a private redis-server, each with its own metrics
port (``METRICS_PORT=auto``); the replay driver plays a short span of the bundled sample; the
services are stopped at the end of the module.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from avwap.procs import ServiceProcs
from avwap.replay import Driver, ReplayConfig, start_services
from avwap.replay_run import ReplayInput, clean_output, iter_sessions, prepare
from shared.bars import BarStore, LoadResult
from shared.redis_conn import EmbeddedRedis, connect, start_redis_server
from tests.conftest import SAMPLE_DIR

SAMPLE = SAMPLE_DIR / "daily_2017_2018.csv.gz"
START, END = "2018-01-02", "2018-01-12"  # 9 sessions; five positions are open at the end


@dataclass
class LiveSystem:
    url: str
    r: redis.Redis
    out: Path
    procs: ServiceProcs
    inp: ReplayInput
    steps: int

    def env(self) -> dict[str, str]:
        """The environment of an operator's process on this system (REDIS_URL and the directories)."""
        return {"REDIS_URL": self.url, "ARTIFACTS_DIR": str(self.out / "artifacts"),
                "LEDGER_DIR": str(self.out / "ledger"), "BARS_DIR": str(self.out / "bars")}


def run_live_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveSystem]:
    """The body of each module's ``live_system`` fixture (``yield from run_live_system(...)``)."""
    emb: EmbeddedRedis = start_redis_server(workdir=str(tmp_path_factory.mktemp("live-redis")))
    out = tmp_path_factory.mktemp("live")
    inp = prepare(SAMPLE, None, START, END)
    cfg = ReplayConfig(start=START, end=END, out=out, mode="PAPER_SIM", equity=100_000.0, replicas=1,
                       env={"SCAN_MARKET_GATE": "universe_proxy", "METRICS_PORT": "auto"})
    r = connect(emb.url)
    clean_output(out)
    store = BarStore(out / "bars")
    store.import_result(LoadResult(tf="1d", frame=inp.daily.frame[inp.daily.frame["trade_date"] < START]))
    procs = start_services(emb.url, cfg)
    try:
        driver = Driver(r, procs, store.append)
        for _d, steps in iter_sessions(inp, cfg.window_start):
            for step in steps:
                driver.play(step)
        yield LiveSystem(url=emb.url, r=r, out=out, procs=procs, inp=inp, steps=driver.steps_done)
    finally:
        procs.stop_all()
        emb.stop()
