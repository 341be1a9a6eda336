"""Live = replay: the canonical artifacts of a rehearsal and of ``avwap replay --intraday``, compared.

Both runs leave ``artifacts/`` and ``ledger/`` under a root (the rehearsal: its compose volumes). The
canonical form keeps what the system decided and did, and leaves out only what legitimately differs
between a broker and the simulator or between two runs: broker-assigned ids (``broker_order_id`` and
the ids derived from them), wall or broker timestamps of order events, the execution mode, and the
provenance block (run id, mode, code version). Order events are compared as the sequence of what was
decided and what the market did (submission, fill, replacement, cancel), not the broker's transport
states (``pending_new``/``new``/``accepted`` arrive over the websocket in an order the simulator has no
reason to imitate). See docs/replay.md, "Live = replay".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DROP = {"provenance", "broker_order_id", "mode", "event_id", "record_id", "v"}
ORDER_KEYS = ("trade_date", "client_order_id", "intent_id", "kind", "symbol", "side", "qty", "order_type", "stop_price",
              "limit_price", "event", "fill_qty", "fill_price", "filled_qty")
ORDER_EVENTS = {"filled", "partially_filled", "replaced", "canceled", "rejected", "expired"}


# the portfolio decision batch's id hashes its inputs, the broker snapshot among them (broker ids)
DECISION_DROP = DROP | {"batch_id"}


def _clean(obj: Any, drop: set[str] = DROP) -> Any:
    if isinstance(obj, dict):
        return {k: _clean(v, drop) for k, v in sorted(obj.items()) if k not in drop}
    if isinstance(obj, list):
        return [_clean(v, drop) for v in obj]
    return obj


def _jsonl(p: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def canonical(root: Path, sessions: list[str]) -> dict[str, Any]:
    """What the run decided and did, per kind, in a form both runs must share."""
    art, led = root / "artifacts", root / "ledger"
    out: dict[str, Any] = {"candidates": {}, "decisions": {}, "risk": {}, "orders": [], "fills": [], "stops": []}
    for d in sessions:
        c = art / "candidates" / f"{d}.json"
        if c.exists():
            out["candidates"][d] = _clean(json.loads(c.read_text()))
        p = art / "portfolio_decisions" / f"{d}.json"
        if p.exists():
            out["decisions"][d] = _clean(json.loads(p.read_text()), DECISION_DROP)
        r = art / "risk_decisions" / f"{d}.jsonl"
        if r.exists():
            out["risk"][d] = [_clean(x, DECISION_DROP) for x in _jsonl(r)]
        x = art / "exit_events" / f"{d}.jsonl"
        if x.exists():
            out["stops"] += [{k: e.get(k) for k in ("trade_date", "symbol", "kind", "stop_price", "previous_stop", "qty",
                                                     "source", "ref_bar_ts", "exit_price", "reason")} for e in _jsonl(x)]
    for mode_dir in sorted(p for p in led.glob("*") if p.is_dir() and p.name != "analytics"):
        for d in sessions:
            f = mode_dir / f"{d}.jsonl"
            if not f.exists():
                continue
            for rec in _jsonl(f):
                if rec.get("record") != "order_event":
                    continue
                row = {k: rec.get(k) for k in ORDER_KEYS}
                if row["event"] in ORDER_EVENTS or row["event"] in ("submitted", "accepted"):
                    out["orders"].append(row)
                if row["event"] in ("filled", "partially_filled"):
                    out["fills"].append({k: row[k] for k in ("client_order_id", "symbol", "side", "fill_qty", "fill_price")})
    # one record per (order, event): the broker path may report a transport state twice
    seen: set[str] = set()
    orders = []
    for row in out["orders"]:
        key = json.dumps(row, sort_keys=True)
        if row["event"] in ("submitted", "accepted"):
            row = {**row, "event": "placed"}
            key = json.dumps(row, sort_keys=True)
        if key not in seen:
            seen.add(key)
            orders.append(row)
    out["orders"] = orders
    return out


def differences(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str] = ("rehearsal", "replay")) -> list[str]:
    """Human-readable differences between two canonical forms (empty: the same)."""
    diffs: list[str] = []
    for kind in a.keys() | b.keys():
        x, y = a.get(kind), b.get(kind)
        if x == y:
            continue
        if isinstance(x, dict) and isinstance(y, dict):
            for d in sorted(x.keys() | y.keys()):
                if x.get(d) != y.get(d):
                    diffs.append(f"{kind} {d}: {_first_diff(x.get(d), y.get(d), names)}")
        else:
            diffs.append(f"{kind}: {_first_diff(x, y, names)}")
    return sorted(diffs)


def _first_diff(x: Any, y: Any, names: tuple[str, str]) -> str:
    if isinstance(x, list) and isinstance(y, list):
        for i, (p, q) in enumerate(zip(x, y, strict=False)):
            if p != q:
                return f"item {i}: {names[0]} {json.dumps(p, sort_keys=True)[:400]} != {names[1]} {json.dumps(q, sort_keys=True)[:400]}"
        return f"{names[0]} has {len(x)} items, {names[1]} {len(y)}"
    return f"{names[0]} {json.dumps(x, sort_keys=True)[:400]} != {names[1]} {json.dumps(y, sort_keys=True)[:400]}"


# the rehearsal's decision settings for the replay: the same market gate (the data has no SPY), and the
# stand-in's fill model (no simulated slippage: the Alpaca stand-in fills at the bar's price)
REPLAY_ENV = {"SCAN_MARKET_GATE": "universe_proxy", "SIM_SLIPPAGE_BPS": "0"}


def replay_sessions(out: Path, start: str, end: str, symbols: list[str]) -> Path:
    """``avwap replay --intraday`` of the rehearsed sessions (same symbols, same history) into ``out/run``."""
    from avwap.rehearsal.droplet import INTRADAY, write_daily
    from avwap.replay import ReplayConfig
    from avwap.replay_run import prepare, run_replay
    from shared.redis_conn import start_redis_server

    out.mkdir(parents=True, exist_ok=True)
    daily = write_daily(out / "daily.csv.gz", symbols, through=end)
    emb = start_redis_server()
    try:
        run_replay(prepare(daily, INTRADAY, start, end), ReplayConfig(start=start, end=end, out=out / "run", env=REPLAY_ENV),
                   emb.url, flush=True)
    finally:
        emb.stop()
    return out / "run"


def compare(rehearsal_root: Path, replay_root: Path, sessions: list[str]) -> dict[str, list[str]]:
    """Per kind of artifact, the differences (empty: the same)."""
    a, b = canonical(rehearsal_root, sessions), canonical(replay_root, sessions)
    return {k: differences({k: a[k]}, {k: b[k]}) for k in a}
