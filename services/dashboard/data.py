"""What the Positions, Today, History and Symbol pages show, read from Redis and the artifacts (read-only,
through ``readers``). The Now page is ``now.py``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import redis

from shared.bars import BarStore
from shared.clock import NY, ns_to_dt
from shared.schemas import BrokerSnapshot, ExitPositionState, SchemaError, decode
from shared.schemas.reasons import upcast_codes
from shared.streams import BROKER, state_key

from .readers import last_message, latest_file, read_json, read_jsonl, when

# -- Positions -------------------------------------------------------------------------------------

SOURCE_TEXT = {"initial": "initial stop (the candidate's stop)", "intraday_higher_low": "5-minute higher low",
               "daily_swing_low": "daily swing low", "broker": "taken from the broker"}


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
    snap = read_json(snap_path) if snap_path else None
    marks = {p["symbol"]: p for p in (snap or {}).get("positions", [])}
    positions = load_positions(r)
    as_of = max((p.last_bar_ts for p in positions), default=0)
    snap_b = last_message(r, BROKER)
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
    cand = read_json(artifacts / "candidates" / f"{d}.json") or {}
    decisions = (read_json(artifacts / "portfolio_decisions" / f"{d}.json") or {}).get("decisions", [])
    rejections = (read_json(artifacts / "rejections" / f"{d}.json") or {}).get("rejections", [])
    risk = [x for x in read_jsonl(artifacts / "risk_decisions" / f"{d}.jsonl") if x.get("kind") == "decision"]
    orders = [x for p in sorted(ledger.glob(f"*/{d}.jsonl")) if p.parent.name != "analytics" for x in read_jsonl(p)
              if x.get("record") == "order_event"]
    exits = read_jsonl(artifacts / "exit_events" / f"{d}.jsonl")
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
    snaps = [s for p in sorted((artifacts / "portfolio_snapshots").glob("*.json")) if (s := read_json(p))]
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
        for t in (read_json(p) or {}).get("trades", []):
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
    cand_file = read_json(artifacts / "candidates" / f"{d}.json") or {}
    cand = next((c for c in cand_file.get("candidates", []) if c["symbol"] == symbol), None)
    reject = ((read_json(artifacts / "candidates" / f"{d}.rejects.json") or {}).get("rejects", {})).get(symbol)
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
    cand = read_json(artifacts / "candidates" / f"{d}.json") or {}
    rej = (read_json(artifacts / "candidates" / f"{d}.rejects.json") or {}).get("rejects", {})
    return sorted({*(c["symbol"] for c in cand.get("candidates", [])), *rej})


def first(items: Iterable[str], default: str = "") -> str:
    return next(iter(items), default)
