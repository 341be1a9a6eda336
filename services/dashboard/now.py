"""The Now page: heartbeats, consumer groups and their lag, stream lengths, the DLQ, the last bars, the
broker's last snapshot, recent alerts, the trading state and breakers (``now_view``, read-only), and the
banner's pure rule (``health_problems``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis

from shared import controls, streams
from shared.bus import HEARTBEAT_PREFIX, live_consumers
from shared.schemas import BarBatch, BrokerSnapshot, SchemaError, decode
from shared.streams import ALERTS, ALL_STREAMS, BARS_1D, BARS_1M, BROKER, DLQ

from .readers import as_text, last_message, when


@dataclass
class Heartbeat:
    group: str
    consumers: list[str]
    handled: int = 0
    ts: float = 0.0


@dataclass
class GroupRow:
    stream: str
    group: str
    pending: int
    lag: int | None
    consumers: int


@dataclass
class NowView:
    trading_state: str
    trading_detail: str
    heartbeats: list[Heartbeat]
    groups: list[GroupRow]
    streams: dict[str, int]
    dlq: int
    last_bar: dict[str, str]  # tf -> "D (NY end time)"
    last_bar_ns: int
    broker: dict[str, str]
    alerts: list[dict[str, str]]
    breakers: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def trading_state(r: redis.Redis, env_kill: bool) -> tuple[str, str]:
    """The trading state as ``shared.controls`` reports it: its trading-state reader when it has one
    (ACTIVE / REDUCING / HALTED / UNREADABLE), else the kill switch."""
    read_state = getattr(controls, "read_state", None)
    if read_state is not None:
        view = read_state(r, env_kill_switch=env_kill)
        rec = getattr(view, "record", None)
        detail = view.detail or (f"{rec.reason} ({rec.who}, {rec.source})" if rec is not None and rec.reason else "")
        return str(view.state), detail or ("orders allowed" if view.state == "ACTIVE" else "")
    ks = controls.read_kill_switch(r)
    if env_kill:
        return "KILL_SWITCH_ON", "KILL_SWITCH=1 in the environment"
    return {"off": ("ACTIVE", "kill switch off"), "on": ("KILL_SWITCH_ON", "new entries blocked"),
            "unreadable": ("KILL_SWITCH_UNREADABLE", "the key is unreadable: entries blocked (fail closed)")}[ks]


def tripped_breakers(r: redis.Redis) -> list[str]:
    """Names of the tripped circuit breakers (``shared.breakers``, when the project has them)."""
    key = getattr(streams, "BREAKERS_KEY", None)
    try:
        from shared import breakers  # type: ignore[attr-defined]
    except ImportError:
        return []
    raw = r.get(key) if key else None
    return list(breakers.tripped_names(raw)) if raw is not None else []


def health_problems(v: NowView, expected: Sequence[str], max_lag: int, feed_max_age_s: int = 0,
                    now_ns: int = 0) -> list[str]:
    """Everything unhealthy in ``v`` (pure): missing heartbeats, lagging groups, a non-empty DLQ,
    trading not active, a tripped breaker, an unreconciled broker, a stale feed (when ``feed_max_age_s``)."""
    out = []
    live = {h.group for h in v.heartbeats if h.consumers}
    out += [f"{g}: no live heartbeat" for g in expected if g not in live]
    out += [f"{g.group} lags {g.lag} entries on {g.stream}" for g in v.groups if (g.lag or 0) > max_lag]
    if v.dlq:
        out.append(f"DLQ holds {v.dlq} entries (avwap dlq list)")
    if v.trading_state != "ACTIVE":
        out.append(f"trading state {v.trading_state}: {v.trading_detail}")
    out += [f"circuit breaker tripped: {b}" for b in v.breakers]
    if v.broker.get("reconciled") == "no":
        out.append("broker positions not reconciled")
    if feed_max_age_s and now_ns and v.last_bar_ns and now_ns - v.last_bar_ns > feed_max_age_s * 1_000_000_000:
        out.append(f"feed: last bar older than {feed_max_age_s}s")
    return out


def now_view(r: redis.Redis, expected: Sequence[str], env_kill: bool = False) -> NowView:
    state, detail = trading_state(r, env_kill)
    by_group: dict[str, Heartbeat] = {g: Heartbeat(g, []) for g in expected}
    for g, c in live_consumers(r):
        hb = by_group.setdefault(g, Heartbeat(g, []))
        hb.consumers.append(c)
        raw = r.get(f"{HEARTBEAT_PREFIX}:{g}:{c}")
        try:
            payload = json.loads(raw or b"{}")
            hb.handled += int(payload.get("handled", 0))
            hb.ts = max(hb.ts, float(payload.get("ts", 0)))
        except (ValueError, TypeError, AttributeError):
            pass
    groups, lengths = [], {}
    for name in ALL_STREAMS:
        lengths[name] = int(r.xlen(name)) if r.exists(name) else 0
        if lengths[name] or r.exists(name):
            for g in r.xinfo_groups(name):
                groups.append(GroupRow(name, as_text(g["name"]), int(g["pending"]),
                                       None if g.get("lag") is None else int(g["lag"]), int(g["consumers"])))
    last_bar, last_ns = {}, 0
    for tf, stream in (("1d", BARS_1D), ("1m", BARS_1M)):
        m = last_message(r, stream)
        if isinstance(m, BarBatch) and m.bars:
            ts = max(b.ts for b in m.bars)
            last_ns = max(last_ns, ts)
            last_bar[tf] = f"{m.trade_date} (bar ending {when(ts)} NY, {len(m.bars)} symbols)"
    snap = last_message(r, BROKER)
    broker = {"last_snapshot": "-", "reconciled": "-", "mode": "-"}
    if isinstance(snap, BrokerSnapshot):
        broker = {"last_snapshot": f"{when(snap.ts)} ({snap.reason})", "reconciled": "yes" if snap.reconciled else "no",
                  "mode": snap.mode, "equity": f"{snap.equity:,.2f}", "positions": str(len(snap.positions)),
                  "open_orders": str(len(snap.open_orders))}
    alerts = []
    for _id, f in r.xrevrange(ALERTS, count=8):
        try:
            a = decode(f.get(b"data", b""))
            alerts.append({"when": when(a.ts), "severity": a.severity, "source": a.source, "title": a.title})  # type: ignore[attr-defined]
        except SchemaError:
            continue
    return NowView(state, detail, sorted(by_group.values(), key=lambda h: h.group), groups, lengths,
                   lengths.get(DLQ, 0), last_bar, last_ns, broker, alerts, tripped_breakers(r))
