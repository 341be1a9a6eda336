"""What a rehearsal did: the timeline (NY time), the summary, and the expectations it must meet.

Pure functions over ``RehearsalResult`` (the streams as decoded dicts, the stand-in's state, the
supervisor's record, the artifacts directory).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.clock import NY, ns_to_dt
from shared.streams import ALERTS, CANDIDATES, CLOCK, DLQ, EXITS, INTENTS, ORDERS, REJECTIONS


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _ny(ts: int) -> str:
    return ns_to_dt(int(ts), NY).strftime("%a %m-%d %H:%M:%S") if ts else "-"


def _iso_ny(iso: str | None) -> str:
    if not iso:
        return "-"
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(NY).strftime("%a %m-%d %H:%M:%S")


def timeline(res: Any) -> list[tuple[str, str]]:
    """(NY time, what happened), in time order: clock events, scans, intents, rejections, orders, exits,
    broker trade updates, faults."""
    rows: list[tuple[int | str, str]] = []
    s = res.streams
    for m in s.get(CLOCK, []):
        rows.append((m.get("ts", 0), f"clock {m.get('phase')} {m.get('trade_date')}"))
    for m in s.get(CANDIDATES, []):
        rows.append((m.get("ts", 0), f"scan {m.get('scan_date')}: {len(m.get('candidates') or [])} candidates"))
    for m in s.get(INTENTS, []):
        kind = m.get("type", "")
        if kind == "entry_intent":
            rows.append((m.get("ts", 0), f"entry intent {m['symbol']} qty {m['qty']} stop {m['stop_price']}"))
        elif kind == "stop_intent":
            rows.append((m.get("ts", 0), f"stop intent {m['symbol']} {m['action']} {m.get('stop_price')}"))
        else:
            rows.append((m.get("ts", 0), f"{kind} {m.get('symbol', '')}"))
    for m in s.get(REJECTIONS, []):
        rows.append((m.get("ts", 0), f"rejected {m.get('symbol')} ({m.get('source')}): {','.join(m.get('reasons') or [])}"))
    for m in s.get(ORDERS, []):
        fill = f" fill {m.get('fill_qty')}@{m.get('fill_price')}" if m.get("fill_qty") else ""
        rows.append((m.get("ts", 0), f"order {m.get('kind')} {m.get('symbol')} {m.get('event')}{fill}"))
    for m in s.get(EXITS, []):
        rows.append((m.get("ts", 0), f"exit event {m.get('symbol')} {m.get('event', m.get('type'))}"))
    out = [(_ny(int(t)) if isinstance(t, int) else str(t), what) for t, what in rows]
    for f in res.faults_done:
        out.append((_iso_like(f["at"]), f"FAULT {f['fault'].split(' ', 2)[2]}"))
    return sorted(out)


def _iso_like(ny: str) -> str:
    from datetime import datetime

    return datetime.strptime(ny, "%Y-%m-%d %H:%M:%S").strftime("%a %m-%d %H:%M:%S")


def summary(res: Any) -> dict[str, Any]:
    s, st = res.streams, res.standin
    orders = st.get("orders", [])
    fills = [u for u in st.get("updates", []) if u["event"] in ("fill", "partial_fill")]
    prot = st.get("protection", {})
    return {
        "sessions": len(res.sessions),
        "clock events": dict(Counter(m.get("phase") for m in s.get(CLOCK, []))),
        "candidate batches": len(s.get(CANDIDATES, [])),
        "candidates": sum(len(m.get("candidates") or []) for m in s.get(CANDIDATES, [])),
        "entry intents": sum(1 for m in s.get(INTENTS, []) if m.get("type") == "entry_intent"),
        "stop intents": sum(1 for m in s.get(INTENTS, []) if m.get("type") == "stop_intent"),
        "rejections": len(s.get(REJECTIONS, [])),
        "broker orders": len(orders),
        "broker orders by kind": dict(Counter(f"{o['side']} {o['type']}" for o in orders)),
        "broker fills": len(fills),
        "open positions at the end": st.get("positions", {}),
        "slack messages": len(st.get("slack", {}).get("messages", [])),
        "slack files": len(st.get("slack", {}).get("files", [])),
        "alerts": dict(Counter(m.get("kind") for m in s.get(ALERTS, []))),
        "dlq": len(s.get(DLQ, [])),
        "restarts": {k: v for k, v in res.restarts.items() if v},
        "stream reconnects": max(0, st.get("stream", {}).get("connects", 0) - 1),
        "trade updates lost": st.get("stream", {}).get("lost", 0),
        "longest unprotected (warped s)": prot.get("max_seconds", 0.0),
        "worst unprotected": prot.get("worst"),
        "phases (wall s)": res.phases,
        "session wall s": res.lag,
    }


def expectations(res: Any, bound_s: float, faults: bool = False) -> list[Check]:
    """Every expectation of a rehearsal; the rehearsal fails when any is not met."""
    s, st = res.streams, res.standin
    art = Path(res.out) / "volumes" / "artifacts"
    checks: list[Check] = []

    def check(name: str, ok: bool, detail: str = "") -> None:
        checks.append(Check(name, bool(ok), detail))

    phases = {(m.get("trade_date"), m.get("phase")) for m in s.get(CLOCK, [])}
    for d in res.sessions:
        missing = [p for p in ("PRE_MARKET", "OPEN", "WINDOW_OPEN", "CLOSE") if (d, p) not in phases]
        check(f"{d}: the feed published every clock event", not missing, f"missing {missing}" if missing else "")
        batches = [m for m in s.get(CANDIDATES, []) if m.get("scan_date") == d]
        check(f"{d}: exactly one candidate batch (the 08:30 scan)", len(batches) == 1, f"{len(batches)} batches")
        for sub in ("portfolio_snapshots", "reconciliation"):
            check(f"{d}: analytics wrote the {sub.replace('_', ' ')}", (art / sub / f"{d}.json").exists())
        check(f"{d}: analytics wrote the report", (art / "reports" / d / "report.html").exists())
        recon = art / "reconciliation" / f"{d}.json"
        if recon.exists():
            status = json.loads(recon.read_text()).get("status")
            check(f"{d}: reconciliation matches the broker", status in ("ok", "matched", "clean"), f"status {status}")
    orders = st.get("orders", [])
    coids = Counter(o["client_order_id"] for o in orders)
    dups = {c: n for c, n in coids.items() if n > 1}
    check("no duplicate broker order (client_order_id)", not dups, str(dups) if dups else "")
    posts = Counter(p.get("client_order_id") for p in st.get("posts", []))
    accepted_twice = {c: n for c, n in posts.items() if n > 1 and coids.get(c, 0) > 1}
    check("no order submitted twice", not accepted_twice, str(accepted_twice) if accepted_twice else "")
    entries = [o for o in orders if o["side"] == "buy"]
    check("orders reached the broker through alpaca-py", bool(entries), f"{len(entries)} entry orders")
    filled = {o["client_order_id"] for o in orders if float(o.get("filled_qty") or 0) > 0}
    seen_fills = {m.get("client_order_id") for m in s.get(ORDERS, []) if m.get("event") in ("fill", "partial_fill", "filled")}
    lost = sorted(filled - seen_fills)
    check("no lost fill (every broker fill is on avwap:orders)", not lost, f"missing {lost}" if lost else "")
    check("fills came back over the websocket", st.get("stream", {}).get("sent", 0) > 0,
          f"{st.get('stream', {}).get('sent', 0)} trade updates sent")
    stops = [o for o in orders if o["side"] == "sell" and o["type"] == "stop"]
    check("protective stops were placed at the broker", bool(stops) or not filled, f"{len(stops)} stop orders")
    ratchets = [o for o in stops if o.get("replaces")]
    check("stops ratcheted (replaced at a higher level)", bool(ratchets) or not stops, f"{len(ratchets)} replacements")
    prot = st.get("protection", {})
    check(f"every position protected in the stop window (longest gap <= {bound_s:g} warped s)",
          prot.get("max_seconds", 0.0) <= bound_s, f"longest {prot.get('max_seconds', 0.0)} s: {prot.get('worst')}")
    msgs = st.get("slack", {}).get("messages", [])
    check("Slack got the day's messages", len(msgs) >= len(res.sessions), f"{len(msgs)} messages")
    files = st.get("slack", {}).get("files", [])
    check("Slack got each day's report chart", len(files) >= len(res.sessions), f"{len(files)} files")
    check("no message dead-lettered", not s.get(DLQ), f"{len(s.get(DLQ, []))} in the DLQ")
    if faults:
        kills = [f for f in res.faults_done if " kill:" in f["fault"]]
        unrestarted = [f["fault"] for f in kills if res.restarts.get(f["fault"].rsplit(":", 1)[1], 0) < 1]
        check("every killed service was restarted by the supervisor", not unrestarted, str(unrestarted))
    return checks


def render(res: Any, checks: list[Check], echo: Any = print, timeline_rows: int = 400) -> None:
    rows = timeline(res)
    echo(f"\ntimeline ({len(rows)} events, New York time):")
    shown = rows if len(rows) <= timeline_rows else rows[:timeline_rows // 2] + [("...", "...")] + rows[-timeline_rows // 2:]
    for t, what in shown:
        echo(f"  {t}  {what}")
    echo("\nsummary:")
    for k, v in summary(res).items():
        echo(f"  {k}: {v}")
    echo("\nexpectations:")
    for c in checks:
        echo(f"  [{'ok' if c.ok else 'FAIL'}] {c.name}{(' — ' + c.detail) if c.detail else ''}")
