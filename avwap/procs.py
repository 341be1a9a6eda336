"""Start and stop the services as separate processes (demo, replay, tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from shared.bus import live_consumers
from shared.redis_conn import free_port

SERVICES = ("scanner", "regime", "risk", "executor", "exits", "analytics")
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ServiceProcs:
    """A set of service processes sharing one Redis; ``env`` is added to the environment."""

    redis_url: str
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    log_dir: Path | None = None
    metrics_ports: dict[str, int] = field(default_factory=dict)  # key -> port, with env METRICS_PORT=auto

    def start(self, service: str, replica: int = 0) -> subprocess.Popen:
        key = f"{service}-{replica}"
        env = {**os.environ, **self.env, "REDIS_URL": self.redis_url, "CONSUMER_NAME": key,
               "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        if env.get("METRICS_PORT") == "auto":  # one free port per process (docs/dashboard.md, "Metrics")
            self.metrics_ports[key] = free_port()
            env["METRICS_PORT"] = str(self.metrics_ports[key])
        out = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{key}.log", "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen([sys.executable, "-m", f"services.{service}"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
        self.procs[key] = proc
        return proc

    def start_all(self, services: Sequence[str] = SERVICES, replicas: int = 1) -> None:
        for s in services:
            for i in range(replicas):
                self.start(s, i)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until every started process has a heartbeat key (its groups exist by then)."""
        r = redis.Redis.from_url(self.redis_url)
        deadline = time.monotonic() + timeout
        want = set(self.procs)
        while time.monotonic() < deadline:
            for key, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"service {key} exited with {proc.returncode} during start")
            have = {consumer for _, consumer in live_consumers(r)}
            if want <= have:
                return
            time.sleep(0.05)
        raise TimeoutError(f"services not ready: {sorted(want - have)}")

    def kill(self, key: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[key]
        proc.send_signal(sig)
        proc.wait(timeout=30)

    def stop_all(self, timeout: float = 15.0) -> dict[str, int]:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for key, proc in self.procs.items():
            try:
                codes[key] = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[key] = proc.wait()
        return codes
