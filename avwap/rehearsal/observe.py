"""What a rehearsal reads of the running stack (it never writes to it): Redis answering, the live
consumer groups, the alerts raised, the feed's session events, the day's scan, the close's artifacts,
the stand-in's state, and at the end every message of the trading streams. Each answer is False (or
empty) while Redis is away."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import redis

from shared.bus import live_consumers
from shared.clock import NY, ns_to_dt
from shared.streams import (
    ALERTS,
    CANDIDATES,
    CLOCK,
    DLQ,
    EXITS,
    INTENTS,
    ORDERS,
    PORTFOLIO,
    REJECTIONS,
    state_key,
)


def ping(r: redis.Redis) -> bool:
    try:
        return bool(r.ping())
    except redis.RedisError:
        return False


def alert_seen(r: redis.Redis, *kinds: str) -> bool:
    """An alert of one of ``kinds`` is on ``avwap:alerts``."""
    try:
        rows = r.xrange(ALERTS)
    except redis.RedisError:
        return False
    return any(json.loads(f[b"data"]).get("kind") in kinds for _, f in rows if b"data" in f)


def alive(r: redis.Redis) -> set[str]:
    """The consumer groups with a live heartbeat."""
    try:
        return {g for g, _ in live_consumers(r)}
    except redis.RedisError:
        return set()


def published(r: redis.Redis, d: str, step: str) -> bool:
    """The feed published session ``d``'s ``step`` (PRE_MARKET, CLOSE...)."""
    try:
        return bool(r.hexists(state_key("feed", "published"), f"{d}:{step}"))
    except redis.RedisError:
        return False


def decided(r: redis.Redis, d: str) -> bool:
    """The day's candidate batch is on the stream (the quiescence that follows lets risk answer it)."""
    try:
        rows = r.xrevrange(CANDIDATES, count=5)
    except redis.RedisError:
        return False
    return any(json.loads(f[b"data"]).get("scan_date") == d for _, f in rows if b"data" in f)


def reported(artifacts: Path, d: str) -> bool:
    """Session ``d``'s close is written: its portfolio snapshot, reconciliation and report."""
    return all((artifacts / p).exists() for p in (f"portfolio_snapshots/{d}.json", f"reconciliation/{d}.json",
                                                  f"reports/{d}/report.html"))


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read())


def ny(ts: int) -> str:
    return ns_to_dt(ts, NY).strftime("%Y-%m-%d %H:%M:%S")


def collect_streams(r: redis.Redis) -> dict[str, list[dict[str, Any]]]:
    """Every message of the trading streams (decoded data + stream id), for the report and the checks."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name in (CLOCK, CANDIDATES, INTENTS, REJECTIONS, ORDERS, EXITS, PORTFOLIO, ALERTS, DLQ):
        rows = []
        for sid, fields in r.xrange(name):
            f = {k.decode(): v for k, v in fields.items()}
            data = f.get("data")
            try:
                msg = json.loads(data) if data else {k: (v.decode(errors="replace") if isinstance(v, bytes) else v)
                                                     for k, v in f.items()}
            except ValueError:
                msg = {"raw": data.decode(errors="replace") if isinstance(data, bytes) else str(data)}
            msg["_id"] = sid.decode()
            rows.append(msg)
        out[name] = rows
    return out
