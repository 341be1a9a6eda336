"""Play a real week through the compose stack on a warped clock, against the stand-ins.

Order of a rehearsal (each a timed phase): setup (the droplet's project directory: universe, env
files; clean volumes) -> the warped clock (libfaketime) -> the stand-in process (Alpaca trading REST +
trade updates + market data, Slack) -> Redis (compose's command, AOF) -> every other compose service
as a local process under the supervisor -> the sessions: the stack runs by itself; the rehearsal only
watches, seeds the faults it was asked for, and skips the idle stretches (the night after a session
is closed and reported; the pre-open hour once the day's intents are decided) by moving every clock
forward -> collect (streams, artifacts, stand-in state) -> stop -> report.

The droplet's data and env files are ``droplet.py``, the faults ``faults.py``, what the rehearsal reads
of the stack ``observe.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import redis

from avwap.procs import ROOT
from avwap.quiesce import wait_quiescent
from avwap.rehearsal.compose import (
    LocalHost,
    load_compose,
    local_command,
    read_env_file,
    redis_service,
    service_env,
)
from avwap.rehearsal.droplet import (
    INTRADAY,
    KEY,
    REDIS_PASSWORD,
    SECRET,
    SLACK_TOKEN,
    rehearsal_symbols,
    write_daily,
    write_env,
)
from avwap.rehearsal.faults import Fault
from avwap.rehearsal.observe import (
    alert_seen,
    alive,
    collect_streams,
    decided,
    get_json,
    ny,
    ping,
    published,
    reported,
)
from avwap.rehearsal.supervisor import Supervisor
from avwap.rehearsal.warp import Warp
from shared.clock import NS, calendar, dt_to_ns, ny_datetime
from shared.redis_conn import free_port

# the pre-market runs slowly: from 08:29:45 at x5 until the day's decisions are made
PRE_MARKET_SPEED = 5.0


def pre_market_from(d: str) -> int:
    return dt_to_ns(ny_datetime(d, "08:29")) + 45 * NS


@dataclass
class RehearsalConfig:
    out: Path
    start: str = "2019-02-11"
    end: str = "2019-02-15"
    speed: float = 300.0
    symbols: list[str] | None = None  # None: the intraday file's S&P 500 names (the bridge file's)
    faults: list[Fault] = field(default_factory=list)
    compose: Path = ROOT / "docker-compose.yml"
    skip_idle: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)  # added to the droplet's .env (tests)
    log: Callable[[str], None] = print


@dataclass
class RehearsalResult:
    out: Path
    sessions: list[str]
    phases: dict[str, float]
    streams: dict[str, list[dict[str, Any]]]
    standin: dict[str, Any]
    restarts: dict[str, int]
    exits: dict[str, list[tuple[float, int]]]
    faults_done: list[dict[str, Any]]
    lag: dict[str, float]


class Rehearsal:
    def __init__(self, cfg: RehearsalConfig) -> None:
        cfg = replace(cfg, out=cfg.out.resolve())  # every path handed to a process is absolute (processes chdir)
        self.cfg = cfg
        self.phases: dict[str, float] = {}
        self.project = cfg.out / "droplet"  # the droplet's project directory (env files, universe)
        self.volumes = cfg.out / "volumes"
        self.logs = cfg.out / "logs"
        self.symbols = cfg.symbols or rehearsal_symbols()
        cal = calendar()
        self.sessions = cal.sessions_in_range(cfg.start, cfg.end)
        self.faults_done: list[dict[str, Any]] = []
        self.lag: dict[str, float] = {}

    def _phase(self, name: str, t0: float) -> float:
        self.phases[name] = round(self.phases.get(name, 0.0) + time.monotonic() - t0, 1)
        return time.monotonic()

    # -- setup -------------------------------------------------------------------------------
    def setup(self) -> None:
        import shutil

        for d in (self.project, self.volumes, self.logs):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
        (self.project / "universe.txt").write_text("".join(f"{s}\n" for s in self.symbols))

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> RehearsalResult:
        cfg = self.cfg
        t = time.monotonic()
        self.setup()
        t = self._phase("setup", t)
        first = self.sessions[0]
        # the droplet boots at real speed (Python start-up on a busy machine takes minutes of warped time
        # otherwise); once every service is healthy the clock moves to 08:00 and runs at the speed-up
        start = ny_datetime(first, "06:00")
        with Warp(start=start, speed=1.0, workdir=cfg.out / "clock") as warp:
            self.warp = warp
            base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
                    "LANG": "C.UTF-8", "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **warp.env()}
            standin = self._start_standin(base)
            t = self._phase("start stand-ins", t)
            try:
                return self._run_stack(base, standin, t)
            finally:
                if standin.poll() is None:
                    standin.send_signal(signal.SIGTERM)
                    try:
                        standin.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        standin.kill()
                        standin.wait()

    def _start_standin(self, base: dict[str, str]) -> subprocess.Popen:
        ready = self.cfg.out / "standin.ready.json"
        ready.unlink(missing_ok=True)
        daily = write_daily(self.project / "market_daily.csv.gz", self.symbols)  # what the market-data API serves
        cmd = [sys.executable, "-m", "standins.broker_process", "--daily", str(daily),
               "--intraday", str(INTRADAY), "--symbols", ",".join(self.symbols), "--key", KEY, "--secret", SECRET,
               "--slack-token", SLACK_TOKEN, "--ready", str(ready), "--state-out", str(self.cfg.out / "standin_state.json")]
        log = open(self.logs / "standin.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(cmd, cwd=ROOT, env=base, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 120
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the stand-in process did not start (see {self.logs / 'standin.log'})")
            time.sleep(0.05)
        self.urls = json.loads(ready.read_text())
        write_env(self.project, self.urls, self.cfg.speed, self.cfg.extra_env)
        return proc

    def _run_stack(self, base: dict[str, str], standin: subprocess.Popen, t: float) -> RehearsalResult:
        cfg = self.cfg
        services = load_compose(cfg.compose)
        redis_name = redis_service(services)
        port = free_port()
        # every timeout is in warped seconds: redis-py's 5 s default socket timeout would be 17 ms of
        # real time at x300, so the clients get 5 s of real time (as a URL option, docs/rehearsal.md)
        rt = int(5 * cfg.speed)
        host = LocalHost(project_dir=self.project, volumes_dir=self.volumes, ports={redis_name: port},
                         url_query=f"socket_timeout={rt}&socket_connect_timeout={rt}",
                         variables=read_env_file(self.project / ".env"))
        sup = Supervisor(self.logs)
        self.sup = sup
        for name, svc in services.items():
            env = {**base, **(self.warp.redis_env() if name == redis_name else {}), **service_env(svc, host)}
            sup.add(name, local_command(svc, host), env, svc.restart, ROOT)
        self.app_services = [n for n in services if n != redis_name]
        try:
            sup.start(redis_name)
            r = redis.Redis.from_url(f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0")
            self._wait(lambda: ping(r), 60, "redis did not answer")
            self.r = r
            self._calibrate()
            for name in self.app_services:  # compose order; each depends on redis being healthy
                sup.start(name)
            want = {svc.health_target() for n, svc in services.items() if n in self.app_services} - {None}
            self._wait(lambda: want <= alive(self.r), 300, f"services not healthy: {sorted(want - alive(self.r))}")
            t = self._phase("start stack", t)
            # an empty bar store: the feed backfills the daily history from the market-data stand-in
            self._wait(lambda: alert_seen(self.r, "feed_backfill_done", "feed_backfill_failed"), 600,
                       "the feed's start-up backfill did not finish")
            if alert_seen(self.r, "feed_backfill_failed"):
                raise RuntimeError(f"the feed's start-up backfill failed (see {self.logs / 'feed.log'})")
            t = self._phase("backfill", t)
            self._retime(pre_market_from(self.sessions[0]), PRE_MARKET_SPEED)
            self._sessions(standin)
            t = self._phase("sessions", t)
            streams = collect_streams(r)
            state = get_json(self.urls["control"] + "/state")
            t = self._phase("collect", t)
        finally:
            codes = sup.stop_all(order=[*reversed(self.app_services), redis_name])
            self._phase("stop", t)
        bad = {k: c for k, c in codes.items() if c not in (0, -15, None)}
        if bad:
            self.cfg.log(f"rehearsal: services exited uncleanly at stop: {bad}")
        return RehearsalResult(out=cfg.out, sessions=self.sessions, phases=self.phases, streams=streams, standin=state,
                               restarts=sup.restarts(), exits={n: m.exits for n, m in sup.procs.items()},
                               faults_done=self.faults_done, lag=self.lag)

    # -- time ----------------------------------------------------------------------------------
    def _retime(self, target_ns: int | None, speed: float) -> None:
        """Every clock moves to ``target_ns`` (None: stays where it is) and runs at ``speed`` from there.
        Each process re-reads the spec within ~2 s; then the supervisor calibrates its own view from
        Redis (a warped process) again."""
        from shared.clock import ns_to_dt

        sec, usec = self.r.time()
        now = sec * NS + usec * 1000
        target = now if target_ns is None or target_ns < now else target_ns
        self.warp.retime(ns_to_dt(now), ns_to_dt(target), speed)
        time.sleep(2.5)
        self._calibrate()
        self.cfg.log(f"  clock: x{speed:g} from {ny(target)}" + (f" (skipped {(target - now) / NS / 3600:.1f} h)"
                                                                   if target - now > 60 * NS else ""))

    def _calibrate(self) -> None:
        """Where the warped clock is, read from Redis (a warped process): now = fake0 + (wall - wall0) * speed."""
        sec, usec = self.r.time()
        self._fake0 = sec * NS + usec * 1000
        self._wall0 = time.time()

    def now_ns(self) -> int:
        return self._fake0 + int((time.time() - self._wall0) * self.warp.speed * NS)

    def _wait(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise TimeoutError(f"rehearsal: {what} (after {timeout:.0f}s)")
            self._tick()
            time.sleep(0.05)

    def _tick(self) -> None:
        """Seed the faults that are due (in warped time)."""
        if not hasattr(self, "_fake0"):
            return
        now = self.now_ns()
        for f in self.cfg.faults:
            key = f"{f.session} {f.at} {f.action}"
            if f.ts() <= now and all(d["fault"] != key for d in self.faults_done):
                self._seed(f, key)

    def _seed(self, f: Fault, key: str) -> None:
        kind, _, arg = f.action.partition(":")
        at = ny(self.now_ns())
        self.faults_done.append({"fault": key, "at": at})  # first: the waits below tick again
        if kind == "kill":
            self.sup.kill(arg, signal.SIGKILL)
        elif kind == "restart":
            self.sup.stop(arg)
            self.sup.start(arg)
            self._wait(lambda: ping(self.r), 60, "redis did not come back")
        elif kind in ("refuse", "silence"):
            req = urllib.request.Request(f"{self.urls['control']}/{kind}?seconds={arg}", method="POST")
            urllib.request.urlopen(req, timeout=10).read()
        self.cfg.log(f"  fault {at}: {f.action}")

    # -- sessions --------------------------------------------------------------------------------
    def _sessions(self, standin: subprocess.Popen) -> None:
        """Each session: the pre-market at PRE_MARKET_SPEED (the scan and the decisions take the real
        seconds they take, so they are done before the open as on a droplet), then the day at the
        speed-up; after the close is reported, the night is skipped."""
        cal = calendar()
        speed = self.cfg.speed
        for i, d in enumerate(self.sessions):
            t0 = time.monotonic()
            slow_wall = 3 * 3600 / PRE_MARKET_SPEED + 60
            self._wait(lambda d=d: published(self.r, d, "PRE_MARKET"), slow_wall, f"no PRE_MARKET for {d}")
            self._wait(lambda d=d: decided(self.r, d), slow_wall, f"the scan of {d} was not decided")
            self._quiet(120, strict=False)
            open_ns = cal.open_close_ns(d)[0]
            self._retime(open_ns - 15 * 60 * NS if self.cfg.skip_idle else None, speed)
            day_wall = 10 * 3600 / speed + 180
            self._wait(lambda d=d: published(self.r, d, "CLOSE"), day_wall, f"no CLOSE for {d}")
            self._wait(lambda d=d: reported(self.volumes / "artifacts", d), day_wall, f"no report for {d}")
            self._quiet(120)
            if standin.poll() is not None:
                raise RuntimeError("the stand-in process died")
            self.lag[d] = round(time.monotonic() - t0, 1)
            self.cfg.log(f"  session {d}: closed and reported ({self.lag[d]:.0f}s wall)")
            if i + 1 < len(self.sessions):
                nxt = pre_market_from(self.sessions[i + 1])
                self._retime(nxt if self.cfg.skip_idle else None, PRE_MARKET_SPEED if self.cfg.skip_idle else speed)

    def _quiet(self, timeout: float, strict: bool = True) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._tick()
            try:
                wait_quiescent(self.r, timeout=min(5.0, max(0.1, deadline - time.monotonic())))
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    if strict:
                        raise
                    return
            except redis.RedisError:
                time.sleep(0.1)
