"""The run report: every figure of a finished replay (or live run) from its artifacts and bar store.

``load_run(out)`` reads ``out/artifacts`` (portfolio snapshots, trades files) and the daily
bars of ``out/bars`` (the benchmark); ``run_report`` is pure over what it read; ``headline``
formats the figures a person looks at first. Definitions: docs/research.md.

Equity curve: the starting capital (labelled with the session before the first snapshot) and
each session's closing equity. Benchmark: the market symbol (``SCAN_MARKET_SYMBOL``) when the
bar store has it on the base session, else the equal-weight buy-and-hold of every symbol that
has a bar on the base session (``metrics.buy_and_hold``), on the same sessions as the curve.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics as M
from . import metrics_trades as T


@dataclass
class RunInputs:
    dates: list[str]  # sessions with a portfolio snapshot, in order
    snapshots: list[dict[str, Any]]
    trades: list[dict[str, Any]]  # closed trades, closing order
    open_trades: list[dict[str, Any]]  # open at the last snapshot
    base_label: str  # the session before the first snapshot
    bench_closes: np.ndarray | None = None  # (len(dates) + 1, S): base session first
    bench_name: str = ""
    provenance: dict[str, str] = field(default_factory=dict)


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def load_run(out: str | Path, market_symbol: str = "SPY") -> RunInputs:
    """Read a run's artifacts (``out/artifacts``) and benchmark closes (``out/bars``)."""
    from shared.bars import BarStore
    from shared.clock import calendar

    root = Path(out) / "artifacts"
    dates, snaps = [], []
    for p in sorted((root / "portfolio_snapshots").glob("*.json")):
        s = _json(p)
        if s is not None:
            dates.append(p.stem)
            snaps.append(s)
    closed: dict[str, dict[str, Any]] = {}
    last_open: list[dict[str, Any]] = []
    for p in sorted((root / "trades").glob("*.json")):
        f = _json(p) or {}
        day = [t for t in f.get("trades", []) if isinstance(t, dict)]
        for t in day:
            if t.get("status") == "closed":
                closed[str(t.get("trade_id"))] = t
        if dates and p.stem == dates[-1]:
            last_open = [t for t in day if t.get("status") == "open"]
    base = calendar().previous_session(dates[0]) if dates else ""
    inp = RunInputs(dates=dates, snapshots=snaps, trades=T.ordered(closed.values()), open_trades=last_open,
                    base_label=base)
    store = BarStore(Path(out) / "bars")
    if dates and store.dates("1d"):
        have = store.dates("1d")
        first = max((d for d in have if d < dates[0]), default=dates[0])
        panel = store.daily_panel(through=dates[-1])
        rows = {d: i for i, d in enumerate(panel.dates)}
        want = [first, *dates]
        if all(d in rows for d in want) and panel.symbols:
            closes = panel.close[[rows[d] for d in want]]
            if market_symbol in panel.symbols and np.isfinite(closes[0, panel.symbols.index(market_symbol)]):
                inp.bench_closes = closes[:, [panel.symbols.index(market_symbol)]]
                inp.bench_name = market_symbol
            else:
                inp.bench_closes = closes
                inp.bench_name = f"equal-weight buy-and-hold of {int(np.isfinite(closes[0]).sum())} symbols"
    if snaps:
        from shared.artifacts import provenance
        from shared.ids import stable_id

        prov = snaps[-1].get("provenance") or {}
        inp.provenance = provenance(str(prov.get("settings_hash", "")), {
            "portfolio_snapshot": str(snaps[-1].get("snapshot_id", "")),
            "trades": stable_id("trs", [str(t.get("trade_id")) for t in inp.trades])})
    return inp


def run_report(inp: RunInputs) -> dict[str, Any]:
    """Every figure of the run (canonical-JSON ready: floats, ints, strings, None)."""
    capital = float(inp.snapshots[0].get("capital", 0.0)) if inp.snapshots else 0.0
    equity = [float(s.get("equity", 0.0)) for s in inp.snapshots]
    curve = [capital, *equity]
    labels = [inp.base_label or (inp.dates[0] if inp.dates else ""), *inp.dates]
    bench = None
    if inp.bench_closes is not None:
        bench = [capital * v for v in M.buy_and_hold(inp.bench_closes)]
    gross = [float(s.get("gross_exposure", 0.0)) for s in inp.snapshots]
    expo = [g / e for g, e in zip(gross, equity, strict=True) if e]
    rets = M.return_metrics(curve, labels, bench) if inp.snapshots else {}
    if "benchmark" in rets:
        rets["benchmark"]["name"] = inp.bench_name  # type: ignore[index]
    return {
        "period": {"first": inp.dates[0] if inp.dates else "", "last": inp.dates[-1] if inp.dates else "",
                   "sessions": len(inp.dates), "base": labels[0]},
        "capital": capital, "final_equity": equity[-1] if equity else capital,
        "returns": rets,
        "trades": T.trade_metrics(inp.trades),
        "exposure": {"time_in_market": T.exposure_time(gross),
                     "avg_gross_exposure": sum(expo) / len(expo) if expo else None,
                     "max_gross_exposure": max(expo) if expo else None},
        "open_positions": len(inp.open_trades),
        "monthly": M.monthly_table(curve, labels) if inp.snapshots else {},
        "by_symbol": T.by_symbol(inp.trades),
        "by_exit_reason": T.by_exit_reason(inp.trades),
        "curve": {"labels": labels, "equity": curve, "benchmark": bench, "underwater": M.underwater(curve)},
        "provenance": dict(inp.provenance),
    }


def pct(v: Any, nd: int = 2, sign: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{100 * float(v):{'+' if sign else ''}.{nd}f}%"


def num(v: Any, nd: int = 2) -> str:
    return "n/a" if v is None else f"{float(v):,.{nd}f}"


def money(v: Any) -> str:
    if v is None:
        return "n/a"
    return f"-${-float(v):,.2f}" if float(v) < 0 else f"${float(v):,.2f}"


def headline(rep: Mapping[str, Any]) -> list[str]:
    """The run's headline figures, one line each, formatted for a person."""
    p, r, t, x = rep["period"], rep["returns"] or {}, rep["trades"], rep["exposure"]
    lines = [f"period      {p['first']} .. {p['last']} ({p['sessions']} sessions)",
             f"equity      {money(rep['capital'])} -> {money(rep['final_equity'])}  "
             f"return {pct(r.get('total_return'), sign=True)}  CAGR {pct(r.get('cagr'), sign=True)}"]
    b = r.get("benchmark")
    if b:
        lines.append(f"benchmark   {b['name']}: {pct(b['total_return'], sign=True)}  "
                     f"excess {pct(b['excess_return'], sign=True)}  beta {num(b['beta'])}")
    lines.append(f"risk        volatility {pct(r.get('annual_volatility'))}  Sharpe {num(r.get('sharpe'))}  "
                 f"Sortino {num(r.get('sortino'))}  Calmar {num(r.get('calmar'))}")
    dd = r.get("drawdown")
    if dd:
        end = f"recovered {dd['recovery']}" if dd["recovery"] else "not recovered"
        lines.append(f"drawdown    max {pct(dd['depth'])}  peak {dd['peak']}  trough {dd['trough']}  {end}  "
                     f"({dd['sessions_underwater']} sessions underwater)")
    else:
        lines.append("drawdown    none")
    lines.append(f"trades      {t['trades']} closed  win rate {pct(t['win_rate'], 1)}  "
                 f"profit factor {num(t['profit_factor'])}  expectancy {money(t['expectancy'])} "
                 f"({num(t['expectancy_r'])} R)  SQN {num(t['sqn'])}")
    lines.append(f"holding     avg {num(t['avg_holding_sessions'], 1)} / median {num(t['median_holding_sessions'], 1)} "
                 f"sessions  streaks {t['max_win_streak']} wins / {t['max_loss_streak']} losses")
    lines.append(f"exposure    in market {pct(x['time_in_market'], 1)} of sessions  "
                 f"avg gross {pct(x['avg_gross_exposure'], 1)}  max {pct(x['max_gross_exposure'], 1)}  "
                 f"open positions at the end {rep['open_positions']}")
    return lines


HEADLINE_KEYS = ("total_return", "cagr", "annual_volatility", "sharpe", "sortino", "calmar", "max_drawdown",
                 "trades", "win_rate", "profit_factor", "expectancy", "expectancy_r", "sqn", "time_in_market")


def headline_metrics(rep: Mapping[str, Any]) -> dict[str, Any]:
    """The flat headline figures a sweep ranks points by (``HEADLINE_KEYS``)."""
    r, t = rep["returns"] or {}, rep["trades"]
    flat = {**{k: r.get(k) for k in ("total_return", "cagr", "annual_volatility", "sharpe", "sortino", "calmar",
                                      "max_drawdown")},
            **{k: t.get(k) for k in ("trades", "win_rate", "profit_factor", "expectancy", "expectancy_r", "sqn")},
            "time_in_market": rep["exposure"]["time_in_market"]}
    return {k: flat[k] for k in HEADLINE_KEYS}


def equity_series(rep: Mapping[str, Any]) -> list[tuple[str, float]]:
    c = rep["curve"]
    return list(zip(c["labels"], c["equity"], strict=True))

