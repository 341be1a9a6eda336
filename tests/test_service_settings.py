"""A service whose settings do not validate: one log line, an alert, idle and unhealthy; no restart loop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from pydantic import Field, SecretStr

from shared.bus import HEARTBEAT_PREFIX
from shared.redis_conn import free_port
from shared.schemas import Alert, decode
from shared.settings import load_settings, settings_problems
from shared.settings.base import Section
from shared.streams import ALERTS, CANDIDATES

ROOT = Path(__file__).resolve().parent.parent
BAD = {"BUS_BATCH": "abc", "MAX_CONCURRENT_POSITIONS": "many"}  # one core, one risk variable


@contextlib.contextmanager
def running(service: str, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """``python -m services.<service>`` with ``env``, output to ``log``; killed at the end if still there."""
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", f"services.{service}"], cwd=ROOT, env=full, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for(proc: subprocess.Popen, log: Path, pred, what: str) -> None:
    deadline = time.monotonic() + 30
    while not pred():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"{what}: {log.read_text()}"
        time.sleep(0.05)


def alerts(r: redis.Redis) -> list[Alert]:
    return [a for a in (decode(f[b"data"]) for _, f in r.xrange(ALERTS)) if isinstance(a, Alert)]


def health(redis_url: str, service: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "avwap", "health", service], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}, timeout=60)


@pytest.mark.parametrize("service", ["risk", "exits", "executor"])
def test_invalid_settings_idle_unhealthy_with_one_line_and_one_alert(redis_url: str, real_redis: redis.Redis,
                                                                      tmp_path: Path, service: str) -> None:
    log = tmp_path / "svc.log"
    with running(service, {**BAD, "REDIS_URL": redis_url}, log) as proc:
        wait_for(proc, log, lambda: alerts(real_redis), "no settings_invalid alert")
        (a,) = alerts(real_redis)
        assert a.kind == "settings_invalid" and a.severity == "critical" and a.source == service
        assert a.runbook == "invalid-settings" and "BUS_BATCH='abc'" in a.text and "MAX_CONCURRENT_POSITIONS='many'" in a.text
        time.sleep(1.5)
        assert proc.poll() is None  # still there: a supervisor has nothing to restart in a loop
        assert not list(real_redis.scan_iter(f"{HEARTBEAT_PREFIX}:{service}:*"))
        assert health(redis_url, service).returncode != 0  # the healthcheck reports it unhealthy
        assert not real_redis.exists(CANDIDATES) or all(g["name"] != service.encode()
                                                        for g in real_redis.xinfo_groups(CANDIDATES))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 2
    lines = log.read_text().splitlines()
    assert len(lines) == 1, lines  # one clear line, no traceback
    assert "CRITICAL" in lines[0] and f"{service} not started: invalid settings" in lines[0]
    assert "BUS_BATCH='abc'" in lines[0] and "MAX_CONCURRENT_POSITIONS='many'" in lines[0]
    assert len(alerts(real_redis)) == 1


def test_invalid_settings_with_redis_down_still_idle_and_say_why(tmp_path: Path) -> None:
    log = tmp_path / "svc.log"
    with running("risk", {**BAD, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}, log) as proc:
        wait_for(proc, log, lambda: "could not publish" in log.read_text(), "no warning")
        time.sleep(1.0)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 2
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and "BUS_BATCH='abc'" in lines[0] and "settings_invalid alert" in lines[1], lines


def test_settings_problems_names_every_invalid_variable_and_hides_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUS_BATCH", "abc")
    monkeypatch.setenv("SNAPSHOT_MAX_AGE_S", "soon")
    assert [p.split("=")[0] for p in settings_problems()] == ["BUS_BATCH", "SNAPSHOT_MAX_AGE_S"]
    monkeypatch.delenv("BUS_BATCH")
    monkeypatch.delenv("SNAPSHOT_MAX_AGE_S")
    assert settings_problems() == []

    class WithSecret(Section):
        vault_token: SecretStr = Field(SecretStr("x" * 12), min_length=12, description="test")

    monkeypatch.setenv("VAULT_TOKEN", "too-short")
    (problem,) = settings_problems((WithSecret,))
    assert problem.startswith("VAULT_TOKEN=<secret>: ") and "too-short" not in problem


def test_an_unknown_execution_mode_is_not_a_settings_error() -> None:
    s = load_settings(execution_mode="YOLO")
    assert s.core.execution_mode == "YOLO" and not s.core.mode_known
    assert load_settings(execution_mode="PAPER_SIM").core.mode_known
