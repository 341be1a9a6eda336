"""Trade-list metrics of a run (pure): profit factor, expectancy, SQN, holding time, streaks, tables.

Input: the run's closed trades as plain dicts (the ``Trade`` fields of ``trades/D.json``), in
the order they closed (``closed_ts``, then ``trade_id``; ``ordered`` sorts them so). A trade
is a win when its realized PnL (net of fees) is > 0, else a loss. Undefined values are None.
Definitions: docs/research.md, "Metrics".
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

Trade = Mapping[str, Any]


def ordered(trades: Iterable[Trade]) -> list[Trade]:
    """Closed trades in closing order (``closed_ts``, ``trade_id``)."""
    return sorted(trades, key=lambda t: (int(t.get("closed_ts", 0)), str(t.get("trade_id", ""))))


def pnl(t: Trade) -> float:
    return float(t.get("realized_pnl", 0.0))


def r_multiples(trades: Sequence[Trade]) -> list[float]:
    """The R multiple of each trade that has one (initial risk known)."""
    return [float(t["r_multiple"]) for t in trades if t.get("r_multiple") is not None]


def exit_reason(t: Trade) -> str:
    """How a trade ended: its sell kinds joined (``stop``, ``exit``, ``exit+stop``), ``open`` if none."""
    kinds = sorted(str(k) for k in t.get("exit_kinds", []) or [])
    return "+".join(kinds) if kinds else "open"


def profit_factor(trades: Sequence[Trade]) -> float | None:
    """Gross profit of the winners / gross loss of the losers (None without a losing dollar)."""
    won = sum(pnl(t) for t in trades if pnl(t) > 0)
    lost = -sum(pnl(t) for t in trades if pnl(t) < 0)
    return won / lost if lost > 0 else None


def sqn(rs: Sequence[float]) -> float | None:
    """Van Tharp's system quality number: sqrt(n) x mean(R) / sample std(R) (None for n < 2 or std 0)."""
    if len(rs) < 2:
        return None
    sd = statistics.stdev(rs)
    return math.sqrt(len(rs)) * statistics.fmean(rs) / sd if sd > 0 else None


def streaks(trades: Sequence[Trade]) -> dict[str, int]:
    """Longest runs of consecutive wins and losses, in closing order."""
    best = {"max_win_streak": 0, "max_loss_streak": 0}
    run, kind = 0, ""
    for t in trades:
        k = "max_win_streak" if pnl(t) > 0 else "max_loss_streak"
        run = run + 1 if k == kind else 1
        kind = k
        best[k] = max(best[k], run)
    return best


def _mean(xs: Sequence[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def _median(xs: Sequence[float]) -> float | None:
    return float(statistics.median(xs)) if xs else None


def trade_metrics(trades: Sequence[Trade]) -> dict[str, Any]:
    """The trade block of the run report over ``trades`` (closed trades, closing order)."""
    ps = [pnl(t) for t in trades]
    wins = [p for p in ps if p > 0]
    losses = [p for p in ps if p <= 0]
    rs = r_multiples(trades)
    hold = [float(t.get("holding_sessions", 0)) for t in trades]
    hold_days = [float(t.get("holding_seconds", 0.0)) / 86400.0 for t in trades]
    avg_win, avg_loss = _mean(wins), _mean(losses)
    return {
        "trades": len(trades), "wins": len(wins), "losses": len(losses),
        "win_rate": len(wins) / len(trades) if trades else None,
        "net_pnl": sum(ps), "gross_profit": sum(wins), "gross_loss": sum(losses),
        "profit_factor": profit_factor(trades),
        "expectancy": _mean(ps), "expectancy_r": _mean(rs), "sqn": sqn(rs),
        "avg_win": avg_win, "avg_loss": avg_loss,
        "payoff_ratio": avg_win / -avg_loss if avg_win is not None and avg_loss else None,
        "best_trade": max(ps) if ps else None, "worst_trade": min(ps) if ps else None,
        "best_r": max(rs) if rs else None, "worst_r": min(rs) if rs else None,
        "avg_holding_sessions": _mean(hold), "median_holding_sessions": _median(hold),
        "avg_holding_days": _mean(hold_days), "median_holding_days": _median(hold_days),
        "fees": sum(float(t.get("fees", 0.0)) for t in trades),
        **streaks(trades),
    }


def group_table(trades: Sequence[Trade], key: Callable[[Trade], str]) -> list[dict[str, Any]]:
    """One row per group (sorted by key): trades, wins, win rate, net PnL, expectancy in $ and R, holding."""
    groups: dict[str, list[Trade]] = {}
    for t in trades:
        groups.setdefault(key(t), []).append(t)
    rows = []
    for k in sorted(groups):
        g = groups[k]
        ps = [pnl(t) for t in g]
        rs = r_multiples(g)
        rows.append({"key": k, "trades": len(g), "wins": sum(1 for p in ps if p > 0),
                     "win_rate": sum(1 for p in ps if p > 0) / len(g), "net_pnl": sum(ps),
                     "expectancy": statistics.fmean(ps), "expectancy_r": _mean(rs),
                     "profit_factor": profit_factor(g),
                     "avg_holding_sessions": statistics.fmean(float(t.get("holding_sessions", 0)) for t in g)})
    return rows


def by_symbol(trades: Sequence[Trade]) -> list[dict[str, Any]]:
    return group_table(trades, lambda t: str(t.get("symbol", "")))


def by_exit_reason(trades: Sequence[Trade]) -> list[dict[str, Any]]:
    return group_table(trades, exit_reason)


def exposure_time(gross_exposure: Sequence[float]) -> float | None:
    """Fraction of sessions that closed with any position open (gross exposure > 0)."""
    return sum(1 for g in gross_exposure if g > 0) / len(gross_exposure) if gross_exposure else None
