"""Helpers shared by CLI commands: one-line errors and the Redis the command talks to."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import redis
import typer

from shared.logs import redact
from shared.redis_conn import connect, redact_url
from shared.service import redis_url_for
from shared.settings import Settings, get_settings


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one clear line to stderr and exit non-zero."""
    typer.echo(f"avwap: error: {message}", err=True)
    raise typer.Exit(code)


def load_bars_or_fail(path: Path, tf: str | None = None):  # noqa: ANN201 - shared.bars.LoadResult
    """``shared.bars.load_bars``, with an unreadable or malformed file as one clear line."""
    from shared.bars import load_bars

    try:
        return load_bars(path, tf=tf)
    except (OSError, ValueError) as exc:
        fail(str(exc))


def broker_settings_or_fail(command: str):  # noqa: ANN201 - services.executor.settings.BrokerSettings
    """The broker settings, or one line naming the missing key variables (``command``: what needs them)."""
    from services.executor.feed import missing_keys
    from services.executor.settings import BrokerSettings

    bs = BrokerSettings()
    missing = missing_keys(bs)
    if missing:
        fail(f"missing {', '.join(missing)}: `avwap {command}` talks to Alpaca with the broker keys "
             f"(put them in .env.broker and run `bin/avwap {command}` on the droplet)")
    return bs


def need_redis_url(settings: Settings) -> str:
    if not settings.core.redis_url:
        fail("REDIS_URL is not set; this command inspects a running system's Redis (e.g. REDIS_URL=redis://127.0.0.1:6379/0)")
    return settings.core.redis_url


@contextlib.contextmanager
def operator_redis() -> Iterator[redis.Redis]:
    """The running system's Redis (REDIS_URL required); connection errors become one line."""
    url = need_redis_url(get_settings())
    r = connect(url)
    try:
        r.ping()
    except (redis.RedisError, OSError) as exc:
        fail(f"cannot reach Redis at {redact_url(url)}: {redact(str(exc))}")
    try:
        yield r
    except redis.RedisError as exc:
        fail(f"Redis error: {exc}")


@contextlib.contextmanager
def job_redis() -> Iterator[str]:
    """REDIS_URL, or the embedded default Redis for a self-contained job (demo, replay)."""
    with redis_url_for(get_settings()) as url:
        yield url


def stderr(msg: str) -> None:
    print(msg, file=sys.stderr)
