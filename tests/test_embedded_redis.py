"""The embedded default Redis of whole-system jobs (demo, replay): with no REDIS_URL, ``redis_url_for``
starts a private redis-server when one is installed, else an in-process fakeredis server; says which;
stops it on exit. A single service never embeds one (it could talk to nobody): ``avwap run risk``
without REDIS_URL refuses in one line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from shared.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
SAYS = re.compile(r"using an embedded (redis-server|fakeredis) at (redis://127\.0\.0\.1:(\d+)/0)")


@pytest.mark.parametrize("backend", ["redis-server", "fakeredis"])
def test_a_whole_system_job_uses_the_embedded_redis_and_stops_it(backend: str, capsys: pytest.CaptureFixture,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import redis_conn
    from shared.service import redis_url_for

    if backend == "redis-server" and not shutil.which("redis-server"):
        pytest.skip("redis-server not installed")
    if backend == "fakeredis":  # no redis-server on PATH: the fallback must be used
        monkeypatch.setattr(redis_conn.shutil, "which", lambda name: None)
    with redis_url_for(load_settings(redis_url=None)) as url:
        kind, said, port = SAYS.search(capsys.readouterr().err).groups()  # type: ignore[union-attr]
        assert kind == backend and said == url
        r = redis.Redis.from_url(url)
        assert r.ping() and r.set("k", "v")
    with pytest.raises(redis.ConnectionError):  # shut down with the job
        redis.Redis(port=int(port), socket_connect_timeout=1).ping()


def test_a_single_service_without_redis_url_refuses_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | {"PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "avwap", "run", "risk"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "REDIS_URL is not set" in out.stderr and "avwap demo" in out.stderr
