"""Daily report (HTML + Markdown + PNG charts) and the run summary, built from artifacts only.

Inputs under ``artifacts_dir``: ``portfolio_snapshots/``, ``portfolio_decisions/``,
``reconciliation/``, ``trades/``, ``rejections/`` (one ``YYYY-MM-DD.json`` each). Output:
``reports/D/report.html``, ``report.md``, ``equity.png``, ``drawdown.png``, ``exposure.png``.
Charts are rendered with matplotlib Agg with fixed metadata, so the same artifacts give the
same bytes. Both reports end with a provenance footer: the code version that wrote the report,
the settings hash recorded in the day's portfolio snapshot, and the ids of the input artifacts.
"""

from __future__ import annotations

import html
import io
import json
from pathlib import Path
from typing import Any

from shared.artifacts import code_version, sha256_bytes, under, write_atomic_many

from .portfolio import annual_volatility, drawdowns, equity_returns

CHARTS = ("equity", "drawdown", "exposure")


def _load(path: Path) -> dict[str, Any] | None:
    return _load_with_sha(path)[0]


def _load_with_sha(path: Path) -> tuple[dict[str, Any] | None, str]:
    """(the JSON of ``path`` or None, the first 16 hex of its sha256 or "" when unreadable), one read."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None, ""
    try:
        return json.loads(raw), sha256_bytes(raw)[:16]
    except ValueError:
        return None, sha256_bytes(raw)[:16]


def _dated(root: Path, sub: str, through: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    d = root / sub
    if not d.is_dir():
        return []
    out = []
    for p in sorted(d.glob("*.json")):
        if through is not None and p.stem > through:
            continue
        data = _load(p)
        if data is not None:
            out.append((p.stem, data))
    return out


def _chart(kind: str, dates: list[str], values: list[float], ylabel: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 2.6), dpi=80)
    xs = list(range(len(values)))
    if kind == "drawdown":
        ax.fill_between(xs, [-100 * v for v in values], 0, color="#c0392b", alpha=0.5)
    elif kind == "exposure":
        ax.bar(xs, values, color="#2980b9")
    else:
        ax.plot(xs, values, color="#27ae60", linewidth=1.4)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{kind} through {dates[-1] if dates else '-'}")
    if dates:
        ticks = sorted({0, len(dates) - 1, *range(0, len(dates), max(1, len(dates) // 5))})
        ax.set_xticks(ticks)
        ax.set_xticklabels([dates[i] for i in ticks], fontsize=7)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _fmt(v: Any, nd: int = 2) -> str:
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return "" if v is None else str(v)


def report_data(artifacts_dir: str | Path, date: str) -> dict[str, Any]:
    root = Path(artifacts_dir)
    snaps = _dated(root, "portfolio_snapshots", through=date)
    snap = dict(snaps[-1][1]) if snaps and snaps[-1][0] == date else None
    rej, rej_sha = _load_with_sha(under(root, "rejections", f"{date}.json"))
    trades, trades_sha = _load_with_sha(under(root, "trades", f"{date}.json"))
    return {
        "date": date,
        "snapshot": snap,
        "curve": [(d, s) for d, s in snaps],
        "decisions": _load(under(root, "portfolio_decisions", f"{date}.json")),
        "reconciliation": _load(under(root, "reconciliation", f"{date}.json")),
        "rejections": (rej or {}).get("rejections", []),
        "rejections_sha256": rej_sha,
        "trades": (trades or {}).get("trades", []),
        "trades_sha256": trades_sha,
        "regime": regime_lines(root, date),
    }


def regime_lines(root: Path, date: str, lookback: int = 400) -> list[str]:
    """The regime section: the label that governed ``date`` (``regimes/<previous session>.json``)
    and, in words, since when it holds (the latest as-of date whose label changed)."""
    d = root / "regimes"
    if not d.is_dir():
        return []
    files = sorted(p for p in d.glob("*.json") if p.stem < date)[-lookback:]
    if not files:
        return [f"regime of {date}: missing (no regimes/ artifact before {date})"]
    cur = _load(files[-1])
    if cur is None:
        return [f"regime of {date}: unreadable ({files[-1].name})"]
    if cur.get("session") != date:
        return [f"regime of {date}: missing (the latest is as of {files[-1].stem}, for {cur.get('session', '?')})"]
    out = [f"regime of {date}: {cur.get('label')} by {cur.get('rule')} (as of {cur.get('date')}, confidence "
           f"{cur.get('confidence')}): {cur.get('reason')}"]
    for p in reversed(files):
        rec = _load(p)
        if rec is None or rec.get("label") != cur.get("label"):
            break
        if rec.get("change"):
            out.append(str(rec["change"]))
            break
    return out


def _table_md(head: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return ["_none_", ""]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return [*out, ""]


def _table_html(head: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _closed_through(root: Path, date: str) -> list[dict[str, Any]]:
    """Every trade closed on or before ``date`` (a trade id once, its last record wins), closing order."""
    from .metrics_trades import ordered

    by_id: dict[str, dict[str, Any]] = {}
    for _, f in _dated(root, "trades", through=date):
        for t in f.get("trades", []):
            if t.get("status") == "closed":
                by_id[str(t.get("trade_id"))] = t
    return ordered(by_id.values())


def _flat_tail(curve: list[float]) -> int:
    """Sessions at the end of the curve whose equity equals the session before (no position moved it)."""
    n = 0
    for i in range(len(curve) - 1, 0, -1):
        if curve[i] != curve[i - 1]:
            break
        n += 1
    return n


def _no_decisions_note(root: Path, date: str, dec: dict[str, Any] | None) -> str:
    """Why a session has no decisions: no batch, a batch-level reason, a closed market gate, no candidates."""
    if dec is None:
        return f"No decision batch was written for {date}."
    if dec.get("reason_codes"):
        return "No decisions: " + ", ".join(dec["reason_codes"]) + "."
    cands = _load(root / "candidates" / f"{date}.json") or {}
    if cands and not cands.get("market_gate_ok", True):
        return f"No candidates on {date}: the market gate was closed ({cands.get('market_gate_reason', '')})."
    return f"No candidates on {date}: the scan found no setup."


def _run_to_date(curve: list[float], dates: list[str], closed: list[dict[str, Any]]) -> list[list[str]]:
    from . import metrics as M
    from . import metrics_trades as T
    from .runreport import money, num, pct

    r = M.returns_of(curve)
    t = T.trade_metrics(closed)
    return [["sessions", f"{len(dates)} ({dates[0]} .. {dates[-1]})" if dates else "0"],
            ["return", pct(M.total_return(r), sign=True)], ["CAGR", pct(M.cagr(r), sign=True)],
            ["Sharpe", num(M.sharpe(r))], ["max drawdown", pct(M.max_drawdown(r))],
            ["closed trades", str(t["trades"])], ["win rate", pct(t["win_rate"], 1)],
            ["profit factor", num(t["profit_factor"])], ["expectancy", f"{money(t['expectancy'])} ({num(t['expectancy_r'])} R)"]]


def report_provenance(data: dict[str, Any]) -> dict[str, str]:
    """The footer's provenance: code version, settings hash, and the input artifacts' ids."""
    snap = data["snapshot"] or {}
    dec = data["decisions"] or {}
    recon = data["reconciliation"] or {}
    prov = {"code_version": code_version(), "settings_hash": str((snap.get("provenance") or {}).get("settings_hash", ""))}
    prov["input:portfolio_snapshot"] = str(snap.get("snapshot_id", ""))
    prov["input:portfolio_decisions"] = str(dec.get("batch_id", ""))
    prov["input:reconciliation"] = str(recon.get("recon_id", ""))
    for name in ("trades", "rejections"):  # no id field: their content hash
        prov[f"input:{name}"] = data.get(f"{name}_sha256", "")
    return prov


def build_report(artifacts_dir: str | Path, date: str, fsync: bool = True) -> Path:
    """Write ``reports/<date>/`` from the artifacts of ``date`` and before. Returns the directory."""
    data = report_data(artifacts_dir, date)
    out = under(artifacts_dir, "reports", date)
    dates = [d for d, _ in data["curve"]]
    equity = [float(s.get("equity", 0.0)) for _, s in data["curve"]]
    capital = float(data["curve"][0][1].get("capital", 0.0)) if data["curve"] else 0.0
    dd = drawdowns([capital, *equity])[1:] if equity else []
    expo = [100.0 * float(s.get("gross_exposure", 0.0)) / float(s["equity"]) if s.get("equity") else 0.0
            for _, s in data["curve"]]
    files = {out / "equity.png": _chart("equity", dates, equity, "equity ($)"),
             out / "drawdown.png": _chart("drawdown", dates, dd, "drawdown (%)"),
             out / "exposure.png": _chart("exposure", dates, expo, "gross exposure (% equity)")}

    snap = data["snapshot"] or {}
    flat = _flat_tail([capital, *equity])
    vol = float(snap.get("rolling_volatility", 0.0))
    vol_text = f"{100 * vol:.2f}%" + (f" (equity unchanged for the last {flat} sessions: no open position)"
                                       if vol == 0 and flat >= 2 else "")
    summary = [
        ["equity", _fmt(snap.get("equity"))], ["cash", _fmt(snap.get("cash"))],
        ["gross exposure", _fmt(snap.get("gross_exposure"))], ["net exposure", _fmt(snap.get("net_exposure"))],
        ["realized PnL", _fmt(snap.get("realized_pnl"))], ["unrealized PnL", _fmt(snap.get("unrealized_pnl"))],
        ["drawdown %", _fmt(100 * float(snap.get("drawdown", 0.0)))],
        ["max drawdown %", _fmt(100 * float(snap.get("max_drawdown", 0.0)))],
        ["rolling volatility (ann.)", vol_text],
    ] if snap else [["snapshot", "missing"]]
    pos_rows = [[p["symbol"], str(p["qty"]), _fmt(p["avg_entry_price"]), _fmt(p["mark"]), _fmt(p["stop_price"]),
                 _fmt(p["unrealized_pnl"])] for p in snap.get("positions", [])]
    pos_head = ["symbol", "qty", "avg entry", "mark", "stop", "unrealized"]
    dec = data["decisions"] or {}
    dec_rows = [[d["symbol"], d["decision"], ", ".join(d["reason_codes"])] for d in dec.get("decisions", [])]
    rej_rows = [[r.get("symbol", ""), r.get("source", ""), ", ".join(r.get("reasons", [])), r.get("detail", "")]
                for r in data["rejections"]]
    recon = data["reconciliation"]
    recon_status = recon["status"] if recon else "not run"
    mm_rows = [[m["type"], m["symbol"], m.get("expected", ""), m.get("actual", ""), m.get("key", "") or m.get("detail", "")]
               for m in (recon or {}).get("mismatches", [])]
    closed_today = [t for t in data["trades"] if t.get("closed_date") == date]
    tr_rows = [[t["symbol"], str(t["entry_qty"]), _fmt(t["avg_entry_price"]), _fmt(t["avg_exit_price"]),
                _fmt(t["realized_pnl"]), _fmt(t.get("r_multiple")), ", ".join(t.get("exit_kinds", []))] for t in closed_today]
    tr_head = ["symbol", "qty", "entry", "exit", "PnL", "R", "exit"]
    root = Path(artifacts_dir)
    closed = _closed_through(root, date)
    tr_note = "" if tr_rows else (f"No trade closed on {date}; {len(closed)} closed in the run to date" + (
        f", the last {closed[-1].get('symbol', '')} on {closed[-1].get('closed_date', '')}." if closed else "."))
    recent = [[t.get("closed_date", ""), t["symbol"], _fmt(t["realized_pnl"]), _fmt(t.get("r_multiple")),
               ", ".join(t.get("exit_kinds", []))] for t in closed[-10:][::-1]]
    dec_note = "" if dec_rows else _no_decisions_note(root, date, data["decisions"])
    run_rows = _run_to_date([capital, *equity], dates, closed)
    sheet = root / "tearsheet" / "index.html"
    sheet_link = "../../tearsheet/index.html" if sheet.exists() else ""

    md = [f"# avwap daily report {date}", "", "![equity](equity.png)", "![drawdown](drawdown.png)",
          "![exposure](exposure.png)", "", "## Portfolio", ""]
    md += _table_md(["metric", "value"], summary)
    md += ["## Run to date", "", *_table_md(["metric", "value"], run_rows)]
    if sheet_link:
        md += [f"The whole run: [tear sheet]({sheet_link})", ""]
    md += ["## Open positions", "", *_table_md(pos_head, pos_rows)]
    md += ["## Trades closed today", "", *([tr_note, ""] if tr_note else _table_md(tr_head, tr_rows))]
    md += ["## Recent closed trades", "", *_table_md(["closed", "symbol", "PnL", "R", "exit"], recent)]
    md += ["## Decisions", "", *([dec_note, ""] if dec_note else _table_md(["symbol", "decision", "reasons"], dec_rows))]
    md += ["## Rejections", "", *_table_md(["symbol", "source", "reasons", "detail"], rej_rows)]
    md += [f"## Reconciliation: {recon_status}", "", *_table_md(["type", "symbol", "expected", "actual", "detail"], mm_rows)]
    if data["regime"]:
        md += ["## Regime", "", *[f"- {line}" for line in data["regime"]], ""]
    prov = report_provenance(data)
    md += ["---", "", "Provenance: " + " · ".join(f"{k} `{v}`" for k, v in prov.items()), ""]
    files[out / "report.md"] = "\n".join(md).encode()

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>avwap {date}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}</style></head><body>",
             f"<h1>avwap daily report {date}</h1>",
             *(f"<img src='{c}.png' alt='{c}'>" for c in CHARTS),
             "<h2>Portfolio</h2>", _table_html(["metric", "value"], summary),
             "<h2>Run to date</h2>", _table_html(["metric", "value"], run_rows),
             f"<p>The whole run: <a href='{sheet_link}'>tear sheet</a></p>" if sheet_link else "",
             "<h2>Open positions</h2>", _table_html(pos_head, pos_rows),
             "<h2>Trades closed today</h2>",
             f"<p>{html.escape(tr_note)}</p>" if tr_note else _table_html(tr_head, tr_rows),
             "<h2>Recent closed trades</h2>", _table_html(["closed", "symbol", "PnL", "R", "exit"], recent),
             "<h2>Decisions</h2>",
             f"<p>{html.escape(dec_note)}</p>" if dec_note else _table_html(["symbol", "decision", "reasons"], dec_rows),
             "<h2>Rejections</h2>", _table_html(["symbol", "source", "reasons", "detail"], rej_rows),
             f"<h2>Reconciliation: {html.escape(recon_status)}</h2>",
             _table_html(["type", "symbol", "expected", "actual", "detail"], mm_rows),
             *(["<h2>Regime</h2><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in data["regime"]) + "</ul>"]
               if data["regime"] else []),
             "<hr><footer><small>Provenance: " + " · ".join(f"{html.escape(k)} <code>{html.escape(v)}</code>"
                                                           for k, v in prov.items()) + "</small></footer>",
             "</body></html>"]
    files[out / "report.html"] = ("\n".join(parts) + "\n").encode()
    write_atomic_many(files, fsync=fsync)  # in this order, one directory fsync
    return out


def summarize(artifacts_dir: str | Path) -> dict[str, Any]:
    """Run summary over every artifact: trades, win rate, PnL, drawdown, exposure, rejections."""
    root = Path(artifacts_dir)
    snaps = _dated(root, "portfolio_snapshots")
    # a day's trades file holds that day's open trades and the trades closed that day: the run's
    # closed trades are the union over every day (a trade id once, its last record wins)
    by_id: dict[str, dict[str, Any]] = {}
    for _, f in _dated(root, "trades"):
        for t in f.get("trades", []):
            if t.get("status") == "closed":
                by_id[str(t.get("trade_id"))] = t
    closed = [by_id[k] for k in sorted(by_id)]
    wins = [t for t in closed if float(t.get("realized_pnl", 0.0)) > 0]
    rs = [float(t["r_multiple"]) for t in closed if t.get("r_multiple") is not None]
    capital = float(snaps[0][1].get("capital", 0.0)) if snaps else 0.0
    equity = [float(s.get("equity", 0.0)) for _, s in snaps]
    curve = [capital, *equity] if snaps else []
    expo = [float(s.get("gross_exposure", 0.0)) / float(s["equity"]) for _, s in snaps if s.get("equity")]
    rejections: dict[str, int] = {}
    for _, f in _dated(root, "rejections"):
        for r in f.get("rejections", []):
            for code in r.get("reasons", []) or ["UNSPECIFIED"]:
                rejections[code] = rejections.get(code, 0) + 1
    decisions: dict[str, int] = {}
    blocks: dict[str, int] = {}
    for _, f in _dated(root, "portfolio_decisions"):
        for d in f.get("decisions", []):
            decisions[d["decision"]] = decisions.get(d["decision"], 0) + 1
            if d["decision"] == "BLOCK":
                for code in d.get("reason_codes", []):
                    blocks[code] = blocks.get(code, 0) + 1
    recon_bad = [d for d, f in _dated(root, "reconciliation") if f.get("status") != "ok"]
    last = snaps[-1][1] if snaps else {}
    return {
        "first_date": snaps[0][0] if snaps else "",
        "last_date": snaps[-1][0] if snaps else "",
        "sessions": len(snaps),
        "trades": len(closed),
        "open_positions": len(last.get("positions", [])),
        "wins": len(wins),
        "losses": len(closed) - len(wins),
        "win_rate": len(wins) / len(closed) if closed else 0.0,
        "realized_pnl": round(sum(float(t.get("realized_pnl", 0.0)) for t in closed), 2),
        "avg_r": round(sum(rs) / len(rs), 4) if rs else 0.0,
        "capital": capital,
        "final_equity": round(equity[-1], 2) if equity else capital,
        "total_return_pct": round(100 * (equity[-1] / capital - 1), 4) if equity and capital else 0.0,
        "max_drawdown_pct": round(100 * max(drawdowns(curve)), 4) if curve else 0.0,
        "annual_volatility": round(annual_volatility(equity_returns(curve)), 6) if curve else 0.0,
        "avg_gross_exposure_pct": round(100 * sum(expo) / len(expo), 4) if expo else 0.0,
        "max_gross_exposure_pct": round(100 * max(expo), 4) if expo else 0.0,
        "decisions": dict(sorted(decisions.items())),
        "blocks_by_reason": dict(sorted(blocks.items())),
        "rejections_by_reason": dict(sorted(rejections.items())),
        "reconciliation_mismatch_days": recon_bad,
    }
