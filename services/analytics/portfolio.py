"""Daily portfolio snapshot and its metrics (pure).

Equity curve: ``capital`` (day 0) followed by each session's closing equity. Daily returns are
``E_t / E_{t-1} - 1`` from day 0. Drawdown is peak-to-trough on that curve as a positive
fraction; ``max_drawdown`` equals ``-empyrical.max_drawdown([0.0] + returns)`` (the leading zero
return stands for day 0, which empyrical does not count as a peak otherwise), and
``rolling_volatility`` equals ``empyrical.annual_volatility(returns[-window:])`` (sample std x
sqrt(252); 0 with fewer than two returns).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from shared.artifacts import to_plain
from shared.ids import stable_id
from shared.schemas import Fill, PortfolioSnapshot, PositionMark, Trade

ANNUALIZATION = 252


def equity_returns(curve: Sequence[float]) -> list[float]:
    return [curve[i] / curve[i - 1] - 1.0 for i in range(1, len(curve))]


def drawdowns(curve: Sequence[float]) -> list[float]:
    """Drawdown of each point of the curve from its running peak (>= 0)."""
    out: list[float] = []
    peak = -math.inf
    for e in curve:
        peak = max(peak, e)
        out.append(1.0 - e / peak if peak > 0 else 0.0)
    return out


def annual_volatility(returns: Sequence[float]) -> float:
    n = len(returns)
    if n < 2:
        return 0.0
    mean = sum(returns) / n
    var = sum((r - mean) ** 2 for r in returns) / (n - 1)
    return math.sqrt(var) * math.sqrt(ANNUALIZATION)


def build_snapshot(date: str, capital: float, fills: Sequence[Fill], trades: Sequence[Trade],
                   marks: Mapping[str, float], stops: Mapping[str, float], prior_equity: Sequence[float],
                   vol_window: int, provenance: Mapping[str, str] | None = None) -> PortfolioSnapshot:
    """The snapshot of ``date`` from every fill through it.

    ``marks``: symbol -> the session's close (a position without a mark is marked at its
    average cost and listed in provenance ``unmarked``); ``stops``: symbol -> protective stop;
    ``prior_equity``: closing equity of each earlier session, oldest first.
    """
    cash = capital
    fees = 0.0
    for f in fills:
        notional = f.qty * f.price
        cash += notional if f.side == "sell" else -notional
        cash -= f.fees
        fees += f.fees
    positions: list[PositionMark] = []
    unmarked: list[str] = []
    per_symbol: dict[str, float] = {}
    realized = 0.0
    for t in trades:
        realized += t.realized_pnl
        per_symbol[t.symbol] = per_symbol.get(t.symbol, 0.0) + t.realized_pnl
    unrealized = 0.0
    for t in sorted((t for t in trades if t.status == "open"), key=lambda t: t.symbol):
        avg = t.avg_entry_price
        mark = marks.get(t.symbol)
        if mark is None or not math.isfinite(mark) or mark <= 0:
            unmarked.append(t.symbol)
            mark = avg
        mv = t.qty_open * mark
        upnl = t.qty_open * (mark - avg)
        unrealized += upnl
        per_symbol[t.symbol] = per_symbol.get(t.symbol, 0.0) + upnl
        positions.append(PositionMark(symbol=t.symbol, qty=t.qty_open, avg_entry_price=avg, mark=mark,
                                      market_value=mv, unrealized_pnl=upnl, stop_price=float(stops.get(t.symbol, 0.0))))
    market_value = sum(p.market_value for p in positions)
    equity = cash + market_value
    curve = [capital, *prior_equity, equity]
    dds = drawdowns(curve)
    rets = equity_returns(curve)
    new_entries = len({t.position_id for t in trades if t.opened_date == date})
    prov = dict(provenance or {})
    if unmarked:
        prov["unmarked"] = ",".join(unmarked)
    body = dict(date=date, capital=capital, cash=cash, equity=equity,
                gross_exposure=sum(abs(p.market_value) for p in positions), net_exposure=market_value,
                positions=positions, realized_pnl=realized, unrealized_pnl=unrealized, fees=fees,
                peak_equity=max(curve), drawdown=dds[-1], max_drawdown=max(dds),
                rolling_volatility=annual_volatility(rets[-vol_window:]) if vol_window > 0 else 0.0,
                contribution=dict(sorted(per_symbol.items())), new_entries_today=new_entries)
    sid = stable_id("ps", date, to_plain(body))
    return PortfolioSnapshot(snapshot_id=sid, provenance=dict(sorted(prov.items())), **body)  # type: ignore[arg-type]


def initial_snapshot(capital: float, date: str = "") -> PortfolioSnapshot:
    """The starting-capital snapshot used before the first session has closed (all cash, flat)."""
    return PortfolioSnapshot(snapshot_id=stable_id("ps", "initial", capital), date=date, capital=capital, cash=capital,
                             equity=capital, gross_exposure=0.0, net_exposure=0.0, positions=[], realized_pnl=0.0,
                             unrealized_pnl=0.0, peak_equity=capital, provenance={"source": "starting_capital"})
