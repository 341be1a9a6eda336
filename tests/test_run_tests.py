"""`make test`'s Redis discovery: REDIS_URL, else the local Redis, else a private redis-server, else a clear error."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import redis

from shared.redis_conn import free_port

ROOT = Path(__file__).resolve().parent.parent


def _runner():
    spec = importlib.util.spec_from_file_location("run_tests", ROOT / "tests" / "run_tests.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def dead_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def test_redis_url_wins_and_a_dead_one_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    rt = _runner()
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert rt.ensure_redis(local=dead_url()) == (redis_url, None)
    monkeypatch.setenv("REDIS_URL", "redis://:pw-secret-1@127.0.0.1:1/0")
    with pytest.raises(SystemExit, match=r"does not answer PING") as exc:
        rt.ensure_redis()
    assert "pw-secret-1" not in str(exc.value)


def test_local_redis_is_used_when_it_answers(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert _runner().ensure_redis(local=redis_url) == (redis_url, None)


@pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server not installed")
def test_a_private_redis_server_when_nothing_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    url, server = _runner().ensure_redis(local=dead_url())
    try:
        assert server is not None and redis.Redis.from_url(url).ping()
    finally:
        server.stop()  # type: ignore[union-attr]


def test_no_redis_and_no_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server anywhere
    with pytest.raises(SystemExit, match=r"no Redis reachable: set REDIS_URL"):
        _runner().ensure_redis(local=dead_url())
