"""What each dashboard page shows, read from Redis and the artifacts (read-only: GET, SCAN, XINFO,
XLEN, XRANGE and file reads; nothing is ever written).

``health_problems`` is the pure rule behind the Now page's banner; the ``*_view`` functions are
the thin readers that gather its inputs and each page's rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis

from shared import controls, streams
from shared.bars import BarStore
from shared.bus import HEARTBEAT_PREFIX, live_consumers
from shared.clock import NY, ns_to_dt
from shared.schemas import BarBatch, BrokerSnapshot, ExitPositionState, SchemaError, decode
from shared.schemas.reasons import upcast_codes
from shared.streams import ALERTS, ALL_STREAMS, BARS_1D, BARS_1M, BROKER, DLQ, state_key

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


def _s(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def when(ts_ns: int) -> str:
    """An event time (UTC epoch ns) as New York time, '-' for none."""
    return ns_to_dt(ts_ns, NY).strftime("%Y-%m-%d %H:%M") if ts_ns else "-"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_jsonl(path: Path) -> list[dict]:
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


def _last_message(r: redis.Redis, stream: str) -> Any:
    """The last decodable message on ``stream`` (None when empty or undecodable)."""
    for _id, fields in r.xrevrange(stream, count=1):
        try:
            return decode(fields.get(b"data", b""))
        except SchemaError:
            return None
    return None


# -- Now ------------------------------------------------------------------------------------------

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
                groups.append(GroupRow(name, _s(g["name"]), int(g["pending"]),
                                       None if g.get("lag") is None else int(g["lag"]), int(g["consumers"])))
    last_bar, last_ns = {}, 0
    for tf, stream in (("1d", BARS_1D), ("1m", BARS_1M)):
        m = _last_message(r, stream)
        if isinstance(m, BarBatch) and m.bars:
            ts = max(b.ts for b in m.bars)
            last_ns = max(last_ns, ts)
            last_bar[tf] = f"{m.trade_date} (bar ending {when(ts)} NY, {len(m.bars)} symbols)"
    snap = _last_message(r, BROKER)
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


# -- Positions -------------------------------------------------------------------------------------

SOURCE_TEXT = {"initial": "initial stop (the candidate's stop)", "intraday_higher_low": "5-minute higher low",
               "daily_swing_low": "daily swing low", "broker": "taken from the broker"}


def latest_file(directory: Path, suffix: str = ".json", upto: str | None = None) -> Path | None:
    files = sorted(p for p in directory.glob(f"*{suffix}") if upto is None or p.name[:10] <= upto)
    return files[-1] if files else None


def load_positions(r: redis.Redis) -> list[ExitPositionState]:
    """Open positions of the exits service (``avwap:state:exits:pos:<SYMBOL>``)."""
    out = []
    for key in sorted(r.scan_iter(state_key("exits", "pos", "*"), count=500)):
        raw = r.get(key)
        if not raw:
            continue
        try:
            pos = decode(raw, expect=ExitPositionState)
        except SchemaError:
            continue
        if isinstance(pos, ExitPositionState) and not pos.closed and pos.qty > 0:
            out.append(pos)
    return out


def positions_view(r: redis.Redis, artifacts: Path) -> dict[str, Any]:
    snap_path = latest_file(artifacts / "portfolio_snapshots")
    snap = _read_json(snap_path) if snap_path else None
    marks = {p["symbol"]: p for p in (snap or {}).get("positions", [])}
    positions = load_positions(r)
    as_of = max((p.last_bar_ts for p in positions), default=0)
    snap_b = _last_message(r, BROKER)
    broker_stops: dict[str, list[str]] = {}
    if isinstance(snap_b, BrokerSnapshot):
        for o in snap_b.open_orders:
            if o.side == "sell" and o.stop_price:
                broker_stops.setdefault(o.symbol, []).append(f"{o.stop_price:.2f} × {o.qty - o.filled_qty}")
    rows = []
    for p in positions:
        m = marks.get(p.symbol, {})
        mark = m.get("mark")
        risk = p.avg_entry_price - p.initial_stop
        upnl = (mark - p.avg_entry_price) * p.qty if mark is not None else None
        r_mult = (mark - p.avg_entry_price) / risk if mark is not None and risk > 0 else None
        age_ns = as_of - p.stop_ts if p.stop_ts and as_of else 0
        rows.append({
            "symbol": p.symbol, "qty": p.qty, "entry": p.avg_entry_price, "opened": p.opened_date, "mark": mark,
            "upnl": upnl, "r": r_mult, "initial_stop": p.initial_stop, "desired_stop": p.desired_stop,
            "live_stop": p.live_stop_price or None, "live_qty": p.live_stop_qty,
            "protected": p.live_stop_price > 0 and p.live_stop_qty >= p.qty,
            "source": SOURCE_TEXT.get(p.stop_source, p.stop_source), "ref_bar": when(p.stop_ref_ts),
            "ref_low": p.stop_ref_low or None, "stop_moved": when(p.stop_ts), "stop_age": _age(age_ns),
            "waiting": (f"{p.pending.action} {p.pending.qty}@{p.pending.price}" if p.pending else "") or p.blocked,
            "broker_stop": ", ".join(broker_stops.get(p.symbol, [])) or "none",
        })
    return {"rows": rows, "as_of": when(as_of), "snapshot": (snap or {}).get("date", "-"),
            "broker_snapshot": f"{when(snap_b.ts)} ({snap_b.reason})" if isinstance(snap_b, BrokerSnapshot) else "-"}


def _age(ns: int) -> str:
    if ns <= 0:
        return "-"
    hours = ns / 3.6e12
    return f"{hours / 24:.1f} d" if hours >= 24 else f"{hours:.1f} h"


# -- Today -----------------------------------------------------------------------------------------

def sessions(artifacts: Path) -> list[str]:
    return sorted(p.name[:10] for p in (artifacts / "candidates").glob("*.json") if not p.name.endswith("rejects.json"))


def today_view(artifacts: Path, ledger: Path, d: str) -> dict[str, Any]:
    """The pipeline of session ``d`` as counts and one timeline (event time order)."""
    cand = _read_json(artifacts / "candidates" / f"{d}.json") or {}
    decisions = (_read_json(artifacts / "portfolio_decisions" / f"{d}.json") or {}).get("decisions", [])
    rejections = (_read_json(artifacts / "rejections" / f"{d}.json") or {}).get("rejections", [])
    risk = [x for x in _read_jsonl(artifacts / "risk_decisions" / f"{d}.jsonl") if x.get("kind") == "decision"]
    orders = [x for p in sorted(ledger.glob(f"*/{d}.jsonl")) if p.parent.name != "analytics" for x in _read_jsonl(p)
              if x.get("record") == "order_event"]
    exits = _read_jsonl(artifacts / "exit_events" / f"{d}.jsonl")
    timeline: list[tuple[int, int, str, str, str]] = []
    scan_ts = min((int(x.get("decision_ts", 0)) for x in risk), default=0)
    for c in cand.get("candidates", []):
        timeline.append((scan_ts, 0, "candidate", c["symbol"],
                         f"#{c.get('rank', '')} {c.get('anchor', '')} entry {c['entry_level']:.2f} stop {c['stop_loss']:.2f}"))
    for x in decisions:
        timeline.append((scan_ts, 1, x["decision"], x["symbol"], ", ".join(x.get("reason_codes", []))))
    for x in risk:
        kind = "intent" if x.get("outcome") == "intent" else "rejection"
        timeline.append((int(x.get("decision_ts", 0)), 2, kind, x["symbol"],
                         f"qty {x.get('qty', 0)}" if kind == "intent" else ", ".join(upcast_codes(x.get("reasons", [])))))
    for x in rejections:
        if x.get("source") != "risk":
            timeline.append((int(x.get("ts", 0)), 2, "rejection", x["symbol"], ", ".join(upcast_codes(x.get("reasons", [])))))
    for x in orders:
        price = f" {x['fill_qty']}@{x['fill_price']}" if x.get("fill_price") is not None else ""
        timeline.append((int(x["ts"]), 3, f"order {x['event']}", x["symbol"],
                         f"{x['kind']} {x['side']} {x['qty']}{price}"))
    for x in exits:
        timeline.append((int(x["ts"]), 4, x["kind"].lower(), x["symbol"],
                         f"stop {x.get('stop_price', 0):.2f} ({x.get('source', '')})"))
    timeline.sort(key=lambda t: (t[0], t[1], t[3]))
    rej_counts: dict[str, int] = {}
    for x in rejections:
        for reason in upcast_codes(x.get("reasons", [])):  # an old day's files: the codes' current spelling
            rej_counts[reason] = rej_counts.get(reason, 0) + 1
    fills = [x for x in orders if x.get("fill_price") is not None]
    return {
        "date": d, "market_gate": cand.get("market_gate_ok"), "universe": cand.get("universe_size", 0),
        "counts": {"candidates": len(cand.get("candidates", [])),
                   "ALLOW": sum(1 for x in decisions if x["decision"] == "ALLOW"),
                   "BLOCK": sum(1 for x in decisions if x["decision"] == "BLOCK"),
                   "intents": sum(1 for x in risk if x.get("outcome") == "intent"),
                   "rejections": len(rejections), "orders": len({x["client_order_id"] for x in orders}),
                   "fills": len(fills), "exit events": len(exits)},
        "scan_reasons": cand.get("counts", {}), "rejections_by_reason": dict(sorted(rej_counts.items())),
        "timeline": [{"when": when(t), "step": k, "symbol": s, "detail": det} for t, _, k, s, det in timeline],
    }


# -- History ---------------------------------------------------------------------------------------

def history_view(artifacts: Path, store: BarStore, benchmark: str, symbol: str = "", start: str = "",
                 end: str = "", outcome: str = "") -> dict[str, Any]:
    snaps = [s for p in sorted((artifacts / "portfolio_snapshots").glob("*.json")) if (s := _read_json(p))]
    dates = [s["date"] for s in snaps]
    equity = [s["equity"] for s in snaps]
    capital = snaps[0]["capital"] if snaps else 0.0
    bench, label = benchmark_series(store, dates, benchmark)
    series = {
        "dates": dates, "equity": equity, "benchmark": [capital * b if b is not None else None for b in bench],
        "drawdown": [-100 * s["drawdown"] for s in snaps],
        "exposure": [100 * s["gross_exposure"] / s["equity"] if s["equity"] else 0.0 for s in snaps],
    }
    trades = []
    for p in sorted((artifacts / "trades").glob("*.json")):
        for t in (_read_json(p) or {}).get("trades", []):
            if t.get("status") != "closed":
                continue
            if symbol and t["symbol"] != symbol.upper():
                continue
            if (start and t["closed_date"] < start) or (end and t["closed_date"] > end):
                continue
            win = t["realized_pnl"] > 0
            if (outcome == "win" and not win) or (outcome == "loss" and win):
                continue
            trades.append(t)
    trades.sort(key=lambda t: (t["closed_date"], t["symbol"]))
    return {"series": series, "benchmark_label": label, "trades": trades,
            "filters": {"symbol": symbol, "start": start, "end": end, "outcome": outcome},
            "final": snaps[-1] if snaps else None}


def benchmark_series(store: BarStore, dates: Sequence[str], symbol: str) -> tuple[list[float | None], str]:
    """Growth of 1 over ``dates``: ``symbol`` buy-and-hold when the bar store has it, else the
    equal-weight average of every symbol with a close on the first date."""
    if not dates:
        return [], symbol
    panel = store.daily_panel(through=dates[-1])
    cols = {d: i for i, d in enumerate(panel.dates)}
    close = panel.close
    if dates[0] not in cols:
        return [None] * len(dates), "no benchmark (bar store empty)"
    syms = list(panel.symbols)
    rows = [cols.get(d) for d in dates]
    first = close[cols[dates[0]]]
    if symbol in syms:
        j = syms.index(symbol)
        return [float(close[i, j] / first[j]) if i is not None else None for i in rows], f"{symbol} buy and hold"
    ok = np.isfinite(first) & (first > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        growth = close[:, ok] / first[ok]
    out = []
    for i in rows:
        g = growth[i][np.isfinite(growth[i])] if i is not None else growth[:0, 0]
        out.append(float(g.mean()) if len(g) else None)
    return out, f"equal-weight universe ({int(ok.sum())} symbols; {symbol} not in the bar store)"


# -- Symbol ----------------------------------------------------------------------------------------

def avwap_from(bars: Sequence[Any], start: int) -> list[float | None]:
    """Anchored VWAP of typical price (H+L+C)/3 from bar ``start`` on (None before it)."""
    out: list[float | None] = [None] * len(bars)
    pv = vol = 0.0
    for i in range(start, len(bars)):
        b = bars[i]
        pv += (b.high + b.low + b.close) / 3 * b.volume
        vol += b.volume
        out[i] = pv / vol if vol > 0 else None
    return out


def symbol_view(artifacts: Path, store: BarStore, r: redis.Redis, symbol: str, d: str,
                lookback: int = 120) -> dict[str, Any]:
    symbol = symbol.upper()
    bars = store.daily(symbol, through=d, lookback=lookback) if d else []
    dates = [ns_to_dt(b.ts, NY).strftime("%Y-%m-%d") for b in bars]
    cand_file = _read_json(artifacts / "candidates" / f"{d}.json") or {}
    cand = next((c for c in cand_file.get("candidates", []) if c["symbol"] == symbol), None)
    reject = ((_read_json(artifacts / "candidates" / f"{d}.rejects.json") or {}).get("rejects", {})).get(symbol)
    anchors: list[tuple[str, str]] = []
    if cand and cand.get("anchor_date"):
        anchors.append((f"{cand['anchor']} {cand['anchor_date']}", cand["anchor_date"]))
    year_start = next((x for x in dates if x[:4] == d[:4]), None)
    if year_start and all(a[1] != year_start for a in anchors):
        anchors.append((f"YTD {year_start}", year_start))
    recent = bars[-60:]
    if recent:
        low_bar = min(recent, key=lambda b: b.low)
        low_date = ns_to_dt(low_bar.ts, NY).strftime("%Y-%m-%d")
        if all(a[1] != low_date for a in anchors):
            anchors.append((f"60-session low {low_date}", low_date))
    lines = {label: avwap_from(bars, dates.index(ad)) for label, ad in anchors if ad in dates}
    pos = next((p for p in load_positions(r) if p.symbol == symbol), None)
    levels = {}
    if cand:
        levels["entry level"] = cand["entry_level"]
        levels["candidate stop"] = cand["stop_loss"]
    if pos:
        levels["position entry"] = pos.avg_entry_price
        levels["live stop" if pos.live_stop_price else "desired stop"] = pos.live_stop_price or pos.desired_stop
    if cand:
        why = (f"CANDIDATE on {d}: rank {cand.get('rank')}, score {cand.get('score')}, setups "
               f"{', '.join(cand.get('setups', []))}, anchor {cand.get('anchor')} {cand.get('anchor_date')}")
    elif reject:
        vals = ", ".join(f"{k}={v}" for k, v in sorted((reject.get("values") or {}).items()))
        why = f"not a candidate on {d}: {reject.get('code')}" + (f" ({vals})" if vals else "")
    elif cand_file:
        why = f"not in the scan of {d} (not in the universe, or no bars)"
    else:
        why = f"no scan for {d}"
    return {"symbol": symbol, "date": d, "why": why, "candidate": cand, "position": pos,
            "chart": {"dates": dates, "close": [b.close for b in bars], "high": [b.high for b in bars],
                      "low": [b.low for b in bars], "avwaps": lines, "levels": levels,
                      "anchors": [a[1] for a in anchors]}}


def symbols_in(artifacts: Path, d: str) -> list[str]:
    cand = _read_json(artifacts / "candidates" / f"{d}.json") or {}
    rej = (_read_json(artifacts / "candidates" / f"{d}.rejects.json") or {}).get("rejects", {})
    return sorted({*(c["symbol"] for c in cand.get("candidates", [])), *rej})


def first(items: Iterable[str], default: str = "") -> str:
    return next(iter(items), default)
