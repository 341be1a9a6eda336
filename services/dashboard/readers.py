"""The dashboard's only way to Redis and the artifacts: a client that sends read commands only, and the
small readers every page uses (event times as New York time, JSON and JSONL files that may be torn or
missing, the last message of a stream, the newest dated file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis

from shared.clock import NY, ns_to_dt
from shared.schemas import SchemaError, decode

READ_COMMANDS = frozenset({"GET", "MGET", "EXISTS", "SCAN", "TYPE", "TTL", "XLEN", "XRANGE", "XREVRANGE",
                           "XINFO GROUPS", "XINFO STREAM", "HGET", "HGETALL", "SMEMBERS", "PING"})


class ReadOnlyRedis(redis.Redis):
    """A Redis client that sends only ``READ_COMMANDS``: the dashboard cannot write, even by mistake
    (anything else raises ``PermissionError`` before it leaves the process)."""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        name = str(args[0]).upper() if args else ""
        if name not in READ_COMMANDS:
            raise PermissionError(f"the dashboard is read-only: {name} refused")
        return super().execute_command(*args, **options)


def read_only(url: str) -> ReadOnlyRedis:
    """A read-only client of ``url`` (the options of ``shared.redis_conn.connect``)."""
    return ReadOnlyRedis.from_url(url, socket_keepalive=True, health_check_interval=30)


def as_text(v: Any) -> str:
    """A Redis reply as text (bytes decoded, undecodable bytes replaced)."""
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def when(ts_ns: int) -> str:
    """An event time (UTC epoch ns) as New York time, '-' for none."""
    return ns_to_dt(ts_ns, NY).strftime("%Y-%m-%d %H:%M") if ts_ns else "-"


def read_json(path: Path) -> Any:
    """The JSON of ``path`` (None when missing or not JSON)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSONL file (a torn line skipped; none when missing)."""
    out = []
    try:
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a torn last line
    except OSError:
        pass
    return out


def last_message(r: redis.Redis, stream: str) -> Any:
    """The last decodable message on ``stream`` (None when empty or undecodable)."""
    for _id, fields in r.xrevrange(stream, count=1):
        try:
            return decode(fields.get(b"data", b""))
        except SchemaError:
            return None
    return None


def latest_file(directory: Path, suffix: str = ".json", upto: str | None = None) -> Path | None:
    """The last file of ``directory`` by name (its date), up to date ``upto`` when given."""
    files = sorted(p for p in directory.glob(f"*{suffix}") if upto is None or p.name[:10] <= upto)
    return files[-1] if files else None
