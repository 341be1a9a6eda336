"""Shared fixtures: a real Redis (integration), fakeredis (fast units), the real data files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_DATA = ROOT / "data" / "reference"
DAILY_FILE = REFERENCE_DATA / "sp500_daily_2015_2018.csv.gz"
INTRADAY_FILE = REFERENCE_DATA / "intraday_1min_2019-02-11_15.csv.gz"
SAMPLE_DIR = ROOT / "data" / "sample"
TEST_DB = 9


def _base_url() -> str:
    return os.environ.get("AVWAP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_url_db(db: int = TEST_DB) -> str:
    base = _base_url().rsplit("/", 1)[0] if _base_url().count("/") > 2 else _base_url()
    return f"{base}/{db}"


@pytest.fixture
def redis_url() -> Iterator[str]:
    """URL of a flushed database on the real Redis server (fails clearly if none answers)."""
    url = redis_url_db()
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"real Redis required at {url}: {exc} (run through `make test`)")
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
def real_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def fake_redis() -> Iterator[redis.Redis]:
    import fakeredis

    client = fakeredis.FakeRedis()
    yield client
    client.flushall()


@pytest.fixture
def private_redis(tmp_path: Path):
    """A private redis-server with AOF on, in ``tmp_path`` (for restart tests)."""
    from shared.redis_conn import start_redis_server

    emb = start_redis_server(appendonly=True, workdir=str(tmp_path / "redis"))
    yield emb
    emb.stop()
