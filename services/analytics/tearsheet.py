"""The tear sheet of a run: one HTML page with its charts beside it, from the run report.

``write_tearsheet(out)`` writes ``out/artifacts/tearsheet/``: ``index.html``, ``run_report.json``
(every figure, canonical JSON) and the charts ``equity.png`` (equity vs benchmark),
``underwater.png``, ``monthly.png`` (monthly-returns heat map), ``r_multiples.png`` (distribution
of R). Charts are matplotlib Agg with fixed metadata: the same artifacts give the same bytes.
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shared.artifacts import canonical_json, code_version, write_atomic_many

from .runreport import headline, load_run, money, num, pct, run_report

CHARTS = ("equity", "underwater", "monthly", "r_multiples")
MONTHS = ("01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12")


def _plt():  # noqa: ANN202 - matplotlib module
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None})
    _plt().close(fig)
    return buf.getvalue()


def _date_ticks(ax: Any, labels: Sequence[str]) -> None:
    if labels:
        ticks = sorted({0, len(labels) - 1, *range(0, len(labels), max(1, len(labels) // 6))})
        ax.set_xticks(ticks)
        ax.set_xticklabels([labels[i] for i in ticks], fontsize=7)


def equity_chart(labels: Sequence[str], equity: Sequence[float], bench: Sequence[float] | None, name: str) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=80)
    xs = range(len(equity))
    ax.plot(xs, equity, color="#27ae60", linewidth=1.5, label="strategy")
    if bench:
        ax.plot(xs, bench, color="#7f8c8d", linewidth=1.1, linestyle="--", label=f"benchmark: {name}")
    ax.set_ylabel("equity ($)")
    ax.set_title("Equity vs benchmark")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(True, alpha=0.3)
    _date_ticks(ax, labels)
    return _png(fig)


def underwater_chart(labels: Sequence[str], under: Sequence[float]) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 2.4), dpi=80)
    ax.fill_between(range(len(under)), [-100 * u for u in under], 0, color="#c0392b", alpha=0.55)
    ax.set_ylabel("drawdown (%)")
    ax.set_title("Underwater curve")
    ax.grid(True, alpha=0.3)
    _date_ticks(ax, labels)
    return _png(fig)


def monthly_chart(table: Mapping[str, Mapping[str, float]]) -> bytes:
    import numpy as np

    plt = _plt()
    years = sorted(table)
    grid = np.full((max(len(years), 1), 12), np.nan)
    for i, y in enumerate(years):
        for j, m in enumerate(MONTHS):
            if m in table[y]:
                grid[i, j] = 100 * table[y][m]
    lim = max(float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0, 0.5)
    fig, ax = plt.subplots(figsize=(9, 0.9 + 0.45 * max(len(years), 1)), dpi=80)
    ax.imshow(grid, cmap="RdYlGn", vmin=-lim, vmax=lim, aspect="auto")
    for i in range(grid.shape[0]):
        for j in range(12):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(12))
    ax.set_xticklabels(["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], fontsize=8)
    ax.set_yticks(range(len(years)))
    ax.set_yticklabels(years, fontsize=8)
    ax.set_title("Monthly returns (%)")
    return _png(fig)


def r_chart(rs: Sequence[float]) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 2.6), dpi=80)
    if rs:
        lo, hi = min(min(rs), -1.0), max(max(rs), 1.0)
        bins = [lo + (hi - lo) * i / 24 for i in range(25)]
        ax.hist([r for r in rs if r > 0], bins=bins, color="#27ae60", label="wins")
        ax.hist([r for r in rs if r <= 0], bins=bins, color="#c0392b", label="losses")
        ax.axvline(sum(rs) / len(rs), color="#2c3e50", linestyle="--", linewidth=1, label="mean")
        ax.legend(fontsize=8)
    ax.set_xlabel("R multiple")
    ax.set_ylabel("trades")
    ax.set_title("Distribution of R multiples")
    ax.grid(True, alpha=0.3)
    return _png(fig)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    if not rows:
        return "<p><em>none</em></p>"
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table class='{cls}'><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _group_rows(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [[r["key"], str(r["trades"]), pct(r["win_rate"], 1), money(r["net_pnl"]), money(r["expectancy"]),
             num(r["expectancy_r"]), num(r["profit_factor"]), num(r["avg_holding_sessions"], 1)] for r in rows]


def _trade_rows(trades: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    from .metrics_trades import exit_reason

    return [[t.get("symbol", ""), t.get("opened_date", ""), t.get("closed_date", ""), str(t.get("entry_qty", "")),
             num(t.get("avg_entry_price")), num(t.get("avg_exit_price")), money(t.get("realized_pnl")),
             num(t.get("r_multiple")), num(t.get("mae_r")), num(t.get("mfe_r")), exit_reason(t),
             str(t.get("holding_sessions", ""))] for t in trades]


def render_html(rep: Mapping[str, Any], trades: Sequence[Mapping[str, Any]]) -> str:
    """The tear sheet page (charts referenced by file name, beside the page)."""
    p, r, t = rep["period"], rep["returns"] or {}, rep["trades"]
    b = r.get("benchmark") or {}
    dd = r.get("drawdown") or {}
    key = [["Total return", pct(r.get("total_return"), sign=True)], ["CAGR", pct(r.get("cagr"), sign=True)],
           ["Annual volatility", pct(r.get("annual_volatility"))], ["Sharpe", num(r.get("sharpe"))],
           ["Sortino", num(r.get("sortino"))], ["Calmar", num(r.get("calmar"))],
           ["Max drawdown", pct(r.get("max_drawdown"))],
           ["Drawdown peak / trough / recovery", f"{dd.get('peak', '-')} / {dd.get('trough', '-')} / "
                                                 f"{dd.get('recovery') or 'not recovered'}" if dd else "none"],
           ["Drawdown duration", f"{dd['sessions_underwater']} sessions ({dd['calendar_days']} days)" if dd else "-"],
           ["Time in market", pct(rep["exposure"]["time_in_market"], 1)],
           ["Avg / max gross exposure", f"{pct(rep['exposure']['avg_gross_exposure'], 1)} / "
                                        f"{pct(rep['exposure']['max_gross_exposure'], 1)}"]]
    if b:
        key += [[f"Benchmark ({b['name']})", pct(b["total_return"], sign=True)],
                ["Excess return / excess CAGR", f"{pct(b['excess_return'], sign=True)} / {pct(b['excess_cagr'], sign=True)}"],
                ["Beta / alpha (ann.)", f"{num(b['beta'])} / {pct(b['alpha'], sign=True)}"]]
    tk = [["Closed trades", str(t["trades"])], ["Win rate", pct(t["win_rate"], 1)],
          ["Profit factor", num(t["profit_factor"])], ["Expectancy", f"{money(t['expectancy'])} ({num(t['expectancy_r'])} R)"],
          ["SQN", num(t["sqn"])], ["Avg win / avg loss", f"{money(t['avg_win'])} / {money(t['avg_loss'])}"],
          ["Best / worst trade", f"{money(t['best_trade'])} / {money(t['worst_trade'])}"],
          ["Holding (avg / median sessions)", f"{num(t['avg_holding_sessions'], 1)} / {num(t['median_holding_sessions'], 1)}"],
          ["Longest win / loss streak", f"{t['max_win_streak']} / {t['max_loss_streak']}"],
          ["Fees", money(t["fees"])], ["Open positions at the end", str(rep["open_positions"])]]
    mrows = [[y, *[pct(m.get(k), 1) if k in m else "" for k in MONTHS], pct(m.get("year"), 1)]
             for y, m in sorted(rep["monthly"].items())]
    ghead = ["", "trades", "win rate", "net PnL", "expectancy", "exp. R", "profit factor", "avg hold"]
    prov = {"code_version": code_version(), **rep.get("provenance", {})}  # the report's own, else this code's
    css = ("body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222;max-width:1100px}"
           "table{border-collapse:collapse;margin:.4em 0 1.2em}td,th{border:1px solid #ddd;padding:2px 8px;"
           "text-align:right;font-size:13px}th{background:#f4f6f7}td:first-child{text-align:left}"
           ".cols{display:flex;gap:2em;flex-wrap:wrap}img{display:block;margin:.3em 0 1em;max-width:100%}"
           "pre{background:#f8f9f9;padding:.6em;font-size:13px}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>avwap tear sheet {p['first']}..{p['last']}</title>",
             f"<style>{css}</style></head><body>",
             f"<h1>avwap tear sheet: {html.escape(p['first'])} .. {html.escape(p['last'])}</h1>",
             "<pre>" + html.escape("\n".join(headline(rep))) + "</pre>",
             "<img src='equity.png' alt='equity vs benchmark'>", "<img src='underwater.png' alt='underwater curve'>",
             "<div class='cols'><div><h2>Returns and risk</h2>", _table(["metric", "value"], key),
             "</div><div><h2>Trades</h2>", _table(["metric", "value"], tk), "</div></div>",
             "<h2>Monthly returns</h2>", "<img src='monthly.png' alt='monthly returns heat map'>",
             _table(["year", *MONTHS, "year"], mrows),
             "<h2>R multiples</h2>", "<img src='r_multiples.png' alt='distribution of R multiples'>",
             "<h2>By exit reason</h2>", _table(ghead, _group_rows(rep["by_exit_reason"])),
             "<h2>By symbol</h2>", _table(ghead, _group_rows(rep["by_symbol"])),
             "<h2>Trades</h2>",
             _table(["symbol", "entry", "exit", "qty", "entry $", "exit $", "PnL", "R", "MAE R", "MFE R",
                     "exit reason", "sessions"], _trade_rows(trades)),
             "<hr><footer><small>Provenance: " + " · ".join(f"{html.escape(k)} <code>{html.escape(str(v))}</code>"
                                                           for k, v in prov.items()) + "</small></footer>",
             "</body></html>"]
    return "\n".join(parts) + "\n"


def write_tearsheet(out: str | Path, market_symbol: str = "SPY", fsync: bool = True) -> Path:
    """Write ``out/artifacts/tearsheet/`` for the run under ``out``; returns the path of ``index.html``."""
    inp = load_run(out, market_symbol)
    if not inp.dates:
        raise FileNotFoundError(f"no portfolio snapshots under {Path(out) / 'artifacts' / 'portfolio_snapshots'}")
    rep = run_report(inp)
    c = rep["curve"]
    bench_name = ((rep["returns"] or {}).get("benchmark") or {}).get("name", "")
    rs = [float(x["r_multiple"]) for x in inp.trades if x.get("r_multiple") is not None]
    d = Path(out) / "artifacts" / "tearsheet"
    files = {d / "equity.png": equity_chart(c["labels"], c["equity"], c["benchmark"], bench_name),
             d / "underwater.png": underwater_chart(c["labels"], c["underwater"]),
             d / "monthly.png": monthly_chart(rep["monthly"]),
             d / "r_multiples.png": r_chart(rs),
             d / "run_report.json": canonical_json(rep),
             d / "index.html": render_html(rep, inp.trades).encode()}
    write_atomic_many(files, fsync=fsync)
    return d / "index.html"
