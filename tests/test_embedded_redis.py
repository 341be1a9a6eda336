"""The embedded default Redis: with no REDIS_URL, `avwap run <service>` starts a private
redis-server when one is installed, else an in-process fakeredis server; says which; stops it on exit."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from shared.bus import HEARTBEAT_PREFIX

ROOT = Path(__file__).resolve().parent.parent
SAYS = re.compile(r"using an embedded (redis-server|fakeredis) at (redis://127\.0\.0\.1:(\d+)/0)")


def _until(pred, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


@pytest.mark.parametrize("backend", ["redis-server", "fakeredis"])
def test_avwap_run_uses_the_embedded_redis_and_stops_it(tmp_path: Path, backend: str) -> None:
    if backend == "redis-server" and not shutil.which("redis-server"):
        pytest.skip("redis-server not installed")
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(PYTHONPATH=str(ROOT), CONSUMER_NAME="risk-emb", ARTIFACTS_DIR=str(tmp_path / "art"),
               LEDGER_DIR=str(tmp_path / "ledger"), BUS_BLOCK_MS="100")
    if backend == "fakeredis":
        env["PATH"] = str(tmp_path / "no-bin")  # no redis-server on PATH: the fallback must be used
    err = tmp_path / "stderr.log"
    with open(err, "wb") as fh:
        p = subprocess.Popen([sys.executable, "-m", "avwap", "run", "risk"], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=fh)
    try:
        _until(lambda: SAYS.search(err.read_text()) is not None)
        kind, url, port = SAYS.search(err.read_text()).groups()  # type: ignore[union-attr]
        assert kind == backend
        r = redis.Redis.from_url(url)
        _until(lambda: r.exists(f"{HEARTBEAT_PREFIX}:risk:risk-emb"))  # the service runs on it
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0
        with pytest.raises(redis.ConnectionError):  # shut down with the command
            redis.Redis(port=int(port), socket_connect_timeout=1).ping()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
