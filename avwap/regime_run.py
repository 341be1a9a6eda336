"""Offline regime work: label every session of a bar file, and ``avwap regime validate`` (two
replays of the same bars, modulation off and on, side by side; docs/regime.md)."""

from __future__ import annotations

import html
import io
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from shared.artifacts import canonical_json, code_version, write_atomic_many
from shared.bars import Panel
from shared.clock import calendar
from shared.schemas import Regime
from shared.settings import Settings
from shared.universe import read_universe

LABEL_COLORS = {"RISK_ON": "#d5f5e3", "NEUTRAL": "#f2f3f4", "RISK_OFF": "#fdebd0", "STRESSED": "#f5b7b1",
                "REGIME_UNKNOWN": "#d6dbdf"}


def label_sessions(frame: pd.DataFrame, start: str, end: str, settings: Settings) -> list[Regime]:
    """The Regime as of every session in [start, end] that has bars, each from the bars on or before
    it only (the same window of ``REGIME_HISTORY_BARS`` sessions the worker reads)."""
    from services.regime.core import Params, classify

    p = Params.from_settings(settings.regime, settings.scanner.scan_market_symbol)
    panel = Panel.from_frame(frame, through=end)
    ufile = settings.scanner.scan_universe_file
    universe = list(read_universe(ufile)) if ufile else None
    cal = calendar()
    out: list[Regime] = []
    for i, d in enumerate(panel.dates):
        if d < start:
            continue
        lo = max(0, i + 1 - p.history_bars)
        out.append(classify(panel.close[lo:i + 1], panel.dates[lo:i + 1], panel.symbols, d, cal.next_session(d),
                            universe, p))
    return out


def regime_summary(labels: Sequence[Regime]) -> dict[str, Any]:
    """Sessions per label (count and share) and every transition (date, from, to, why)."""
    counts = Counter(r.label for r in labels)
    n = len(labels) or 1
    transitions = [{"date": b.date, "from": a.label, "to": b.label, "rule": b.rule, "reason": b.reason}
                   for a, b in zip(labels, labels[1:], strict=False) if a.label != b.label]
    return {"sessions": len(labels),
            "time_in_regime": {k: {"sessions": counts[k], "share": round(counts[k] / n, 6)} for k in sorted(counts)},
            "transitions": transitions}


# -- validation: two replays, side by side --------------------------------------------------------
METRICS = ("total_return_pct", "cagr_pct", "max_drawdown_pct", "volatility_pct", "sharpe", "avg_exposure_pct",
           "trades", "worst_month", "worst_month_pct")


def run_metrics(artifacts: Path) -> dict[str, Any]:
    """Return, CAGR, max drawdown, volatility, Sharpe (rf 0), exposure, trades and worst month of a
    replay, from its portfolio snapshots and trades (analytics' run summary plus what it lacks)."""
    from services.analytics.report import _dated, summarize

    s = summarize(artifacts)
    snaps = _dated(artifacts, "portfolio_snapshots")
    capital = float(s.get("capital") or 0.0)
    eq = [float(x.get("equity", 0.0)) for _, x in snaps]
    curve = [capital, *eq]
    rets = [b / a - 1.0 for a, b in zip(curve, curve[1:], strict=False) if a > 0]
    n = len(rets)
    mean = sum(rets) / n if n else 0.0
    sd = math.sqrt(sum((r - mean) ** 2 for r in rets) / (n - 1)) if n > 1 else 0.0
    growth = curve[-1] / capital if capital > 0 and eq else 1.0
    months: dict[str, float] = {}
    for d, x in snaps:
        months[d[:7]] = float(x.get("equity", 0.0))  # the month's last equity
    worst, worst_pct, prev = "", 0.0, capital
    for m in sorted(months):
        r = months[m] / prev - 1.0 if prev > 0 else 0.0
        if not worst or r < worst_pct:
            worst, worst_pct = m, r
        prev = months[m]
    return {"total_return_pct": round(100 * (growth - 1), 4), "cagr_pct": round(100 * (growth ** (252 / n) - 1), 4) if n else 0.0,
            "max_drawdown_pct": s.get("max_drawdown_pct", 0.0), "volatility_pct": round(100 * sd * math.sqrt(252), 4),
            "sharpe": round(mean / sd * math.sqrt(252), 4) if sd > 0 else 0.0,
            "avg_exposure_pct": s.get("avg_gross_exposure_pct", 0.0), "trades": s.get("trades", 0),
            "worst_month": worst, "worst_month_pct": round(100 * worst_pct, 4),
            "sessions": s.get("sessions", 0), "final_equity": s.get("final_equity", capital),
            "blocks_by_reason": s.get("blocks_by_reason", {}), "rejections_by_reason": s.get("rejections_by_reason", {})}


def governing(labels: Sequence[Regime]) -> dict[str, str]:
    """session -> the label its decisions used (the label as of the session before it)."""
    return {r.session: r.label for r in labels}


def _chart_svg(curves: dict[str, list[tuple[str, float]]], gov: dict[str, str]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matplotlib.rcParams["svg.hashsalt"] = "avwap-regime"
    dates = sorted({d for c in curves.values() for d, _ in c})
    x = {d: i for i, d in enumerate(dates)}
    fig, ax = plt.subplots(figsize=(9, 3.4), dpi=80)
    run_start = 0
    for i in range(1, len(dates) + 1):
        if i == len(dates) or gov.get(dates[i]) != gov.get(dates[run_start]):
            lab = gov.get(dates[run_start], "REGIME_UNKNOWN")
            ax.axvspan(run_start - 0.5, i - 0.5, color=LABEL_COLORS.get(lab, "#ffffff"), linewidth=0)
            run_start = i
    for name, color in (("off", "#7f8c8d"), ("on", "#1f618d")):
        pts = curves.get(name, [])
        ax.plot([x[d] for d, _ in pts], [v for _, v in pts], color=color, linewidth=1.3, label=f"modulation {name}")
    if dates:
        ticks = sorted({0, len(dates) - 1, *range(0, len(dates), max(1, len(dates) // 6))})
        ax.set_xticks(ticks)
        ax.set_xticklabels([dates[i] for i in ticks], fontsize=7)
    ax.set_ylabel("equity ($)")
    ax.legend(loc="upper left", fontsize=7)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return buf.getvalue()


def side_by_side_md(result: dict[str, Any]) -> str:
    off, on = result["off"], result["on"]
    lines = [f"regime validation {result['from']} .. {result['to']} ({result['bars']})", "",
             "| metric | modulation off | modulation on |", "|---|---|---|"]
    lines += [f"| {m} | {off[m]} | {on[m]} |" for m in METRICS]
    lines += ["", "| regime | sessions | share |", "|---|---|---|"]
    for k, v in result["regimes"]["time_in_regime"].items():
        lines.append(f"| {k} | {v['sessions']} | {100 * v['share']:.1f}% |")
    lines += ["", f"transitions: {len(result['regimes']['transitions'])}"]
    lines += [f"- {t['date']}: {t['from']} -> {t['to']} ({t['reason']})" for t in result["regimes"]["transitions"]]
    return "\n".join(lines) + "\n"


def _html(result: dict[str, Any], svg: str) -> str:
    off, on = result["off"], result["on"]
    rows = "".join(f"<tr><td>{html.escape(m)}</td><td>{html.escape(str(off[m]))}</td><td>{html.escape(str(on[m]))}</td></tr>"
                   for m in METRICS)
    reg = "".join(f"<tr><td>{html.escape(k)}</td><td>{v['sessions']}</td><td>{100 * v['share']:.1f}%</td></tr>"
                  for k, v in result["regimes"]["time_in_regime"].items())
    tr = "".join(f"<tr><td>{t['date']}</td><td>{t['from']}</td><td>{t['to']}</td><td>{html.escape(t['reason'])}</td></tr>"
                 for t in result["regimes"]["transitions"])
    legend = " ".join(f"<span style='background:{c};padding:0 6px'>{k}</span>" for k, c in LABEL_COLORS.items())
    return ("<!doctype html><html><head><meta charset='utf-8'><title>avwap regime validation</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}</style></head><body>"
            f"<h1>Regime validation {result['from']} .. {result['to']}</h1>"
            f"<p>bars: {html.escape(result['bars'])}; equity of both replays, the regime of each session shaded: {legend}</p>"
            f"{svg}<h2>Side by side</h2><table><tr><th>metric</th><th>modulation off</th><th>modulation on</th></tr>{rows}</table>"
            f"<h2>Time in each regime</h2><table><tr><th>regime</th><th>sessions</th><th>share</th></tr>{reg}</table>"
            f"<h2>Transitions</h2><table><tr><th>date</th><th>from</th><th>to</th><th>why</th></tr>{tr}</table>"
            f"<hr><footer><small>code_version <code>{html.escape(result['provenance']['code_version'])}</code> · "
            f"settings_hash <code>{html.escape(result['provenance']['settings_hash'])}</code></small></footer></body></html>\n")


def _replay_side(cfg: Any, inp: Any, redis_url: str, progress: bool) -> tuple[dict[str, Any], list[tuple[str, float]]]:
    """One replay of the validation: its metrics and its equity curve (a module function: it may run
    in a child process)."""
    from avwap.replay_run import run_replay
    from services.analytics.report import _dated

    res = run_replay(inp, cfg, redis_url, flush=True, progress=progress)
    art = cfg.out / "artifacts"
    curve = [(d, float(x.get("equity", 0.0))) for d, x in _dated(art, "portfolio_snapshots")]
    return {**run_metrics(art), "dlq": res.dlq}, curve


def validate(bars: Path, start: str, end: str, out: Path, settings: Settings, redis_url: str, *, equity: float = 100_000.0,
             env: dict[str, str] | None = None, progress: bool = False, replicas: int = 1,
             parallel: bool = False) -> dict[str, Any]:
    """Label every session, replay the bars twice (REGIME_MODULATION=0, then 1) and write
    ``regime_validate.json`` / ``.md`` / ``.html`` under ``out``. Returns the result. ``replicas``:
    of regime, risk, exits and analytics in both replays; ``parallel``: run the two replays at once, the
    second on a private redis-server (the outputs depend on neither)."""
    from avwap.replay import ReplayConfig
    from avwap.replay_run import prepare

    inp = prepare(bars, None, start, end)
    if not inp.sessions:
        raise ValueError(f"no sessions with daily bars between {start} and {end} in {bars}")
    first = calendar().previous_session(inp.sessions[0])
    labels = label_sessions(inp.daily.frame, first, inp.sessions[-1], settings)
    curves: dict[str, list[tuple[str, float]]] = {}
    result: dict[str, Any] = {"from": inp.sessions[0], "to": inp.sessions[-1], "bars": bars.name,
                              "regimes": regime_summary([r for r in labels if r.date >= inp.sessions[0]])}
    jobs = [(name, inp, ReplayConfig(start=start, end=end, out=out / name, equity=equity, replicas=replicas,
                                     env={**(env or {}), "REGIME_MODULATION": flag}))
            for name, flag in (("off", "0"), ("on", "1"))]
    if parallel:  # both replays at once, each in its own process, the second on a private redis-server
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from shared.redis_conn import start_redis_server

        emb = start_redis_server()
        try:
            with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
                futs = [pool.submit(_replay_side, cfg, i, url, False)
                        for (_, i, cfg), url in zip(jobs, (redis_url, emb.url), strict=True)]
                sides = [f.result() for f in futs]
        finally:
            emb.stop()
    else:
        sides = [_replay_side(cfg, i, redis_url, progress) for _, i, cfg in jobs]
    for (name, _, _), (metrics, curve) in zip(jobs, sides, strict=True):
        result[name], curves[name] = metrics, curve
    result["provenance"] = {"code_version": code_version(), "settings_hash": settings.hash()}
    svg = _chart_svg(curves, governing(labels))
    write_atomic_many({out / "regime_validate.json": canonical_json(result),
                       out / "regime_validate.md": side_by_side_md(result).encode(),
                       out / "regime_validate.html": _html(result, svg).encode()})
    return result
