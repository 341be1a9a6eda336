"""The replay driver: history through the five real services, session by session.

Live and replay are one code path: the driver only plays the part of the live scheduler and
feed (clock events and bars, written to the bar store before they are published) and waits
for quiescence after every step (``avwap.quiesce``). See docs/ARCHITECTURE.md,
"One session, event by event".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from avwap.procs import SERVICES, ServiceProcs
from avwap.quiesce import wait_quiescent
from shared.bus import Bus
from shared.clock import calendar, dt_to_ns, ny_datetime
from shared.schemas import BarBatch, BarRow, SessionEvent
from shared.streams import BARS_1D, BARS_1M, CLOCK

StepHook = Callable[[int, str, ServiceProcs], None]


@dataclass(frozen=True)
class Step:
    """One thing the driver publishes; ``label`` names it in progress and hooks."""

    label: str
    stream: str
    message: SessionEvent | BarBatch
    bars: tuple[str, Sequence[BarRow]] | None = None  # (tf, rows) to write to the store first


@dataclass
class ReplayConfig:
    start: str
    end: str
    out: Path
    mode: str = "PAPER_SIM"
    equity: float = 100_000.0
    replicas: int = 1
    env: dict[str, str] = field(default_factory=dict)
    window_start: str = "09:35"
    ready_timeout_s: float = 120.0  # how long the services may take to start (a crash fails at once)


def session_steps(d: str, daily: Sequence[BarRow], minutes: Iterable[tuple[int, Sequence[BarRow]]],
                  window_start: str = "09:35") -> list[Step]:
    """The steps of session ``d``: PRE_MARKET, OPEN, the minute bars ending at or before the window
    start, WINDOW_OPEN, the later minute bars, the daily bar, CLOSE (the live feed's order)."""
    cal = calendar()
    open_ns, close_ns = cal.open_close_ns(d)
    win = dt_to_ns(ny_datetime(d, window_start))
    steps = [
        Step("pre_market", CLOCK, SessionEvent(trade_date=d, phase="PRE_MARKET", ts=dt_to_ns(ny_datetime(d, "08:30")))),
        Step("open", CLOCK, SessionEvent(trade_date=d, phase="OPEN", ts=open_ns)),
    ]
    window = Step("window_open", CLOCK, SessionEvent(trade_date=d, phase="WINDOW_OPEN", ts=win))
    for ts, rows in minutes:
        if window is not None and ts > win:  # the minutes ending at or before the window start come first
            steps.append(window)
            window = None
        steps.append(Step(f"1m@{ts}", BARS_1M, BarBatch(tf="1m", trade_date=d, bars=list(rows), source="replay"),
                          bars=("1m", rows)))
    if window is not None:
        steps.append(window)
    if daily:
        steps.append(Step("daily", BARS_1D, BarBatch(tf="1d", trade_date=d, bars=list(daily), source="replay", final=True),
                          bars=("1d", daily)))
    steps.append(Step("close", CLOCK, SessionEvent(trade_date=d, phase="CLOSE", ts=close_ns)))
    return steps


class Driver:
    """Publishes steps and waits for quiescence; ``after_publish`` lets tests inject crashes."""

    def __init__(self, r: redis.Redis, procs: ServiceProcs, store_append: Callable[[str, Sequence[BarRow]], object],
                 after_publish: StepHook | None = None, timeout: float = 120.0) -> None:
        self.r = r
        self.bus = Bus(r)
        self.procs = procs
        self.store_append = store_append
        self.after_publish = after_publish
        self.timeout = timeout
        self.steps_done = 0
        self.wait_s = 0.0

    def _check_alive(self) -> None:
        for key, proc in self.procs.procs.items():
            if proc.poll() is not None and proc.returncode != 0:
                raise RuntimeError(f"service {key} died with exit code {proc.returncode}")

    def play(self, step: Step) -> None:
        if step.bars is not None:
            self.store_append(*step.bars)
        self.bus.publish(step.stream, step.message)
        if self.after_publish is not None:
            self.after_publish(self.steps_done, step.label, self.procs)
        t0 = time.monotonic()
        wait_quiescent(self.r, timeout=self.timeout, on_wait=self._check_alive)
        self.wait_s += time.monotonic() - t0
        self.steps_done += 1


def start_services(redis_url: str, cfg: ReplayConfig) -> ServiceProcs:
    env = {
        "EXECUTION_MODE": cfg.mode,
        "ARTIFACTS_DIR": str(cfg.out / "artifacts"),
        "LEDGER_DIR": str(cfg.out / "ledger"),
        "BARS_DIR": str(cfg.out / "bars"),
        "ACCOUNT_EQUITY": str(cfg.equity),
        "STARTING_CAPITAL": str(cfg.equity),
        "BUS_BLOCK_MS": "1000",
        "BUS_CLAIM_IDLE_MS": "2000",
        "AVWAP_REPLAY": "1",
        # one report at the end of the run (replay_run.final_report) instead of one per session:
        # three matplotlib charts per CLOSE would dominate a long replay
        "REPORT_ON_CLOSE": "0",
        # artifacts, ledgers and bars without fsync: the rename stays atomic; a replay is rerun, not recovered
        "ARTIFACTS_FSYNC": "0",
        **cfg.env,
    }
    procs = ServiceProcs(redis_url, env=env, log_dir=cfg.out / "logs")
    for s in SERVICES:
        n = cfg.replicas if s in ("regime", "risk", "exits", "analytics") else 1
        for i in range(n):
            procs.start(s, i)
    try:
        procs.wait_ready(timeout=cfg.ready_timeout_s)
    except BaseException:
        procs.stop_all()  # never leave started services behind (they would outlive the replay)
        raise
    return procs
