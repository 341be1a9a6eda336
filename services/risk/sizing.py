"""Exposure and sizing: the book at decision time, whole shares within every limit, and the regime's
modulation of them (docs/risk.md, docs/regime.md)."""

from __future__ import annotations

import math

import msgspec

from shared.regime import Effect, changed_codes
from shared.schemas import BrokerSnapshot, Candidate

from .limits import Limits
from .state import RiskState

EPS = 1e-9


class Book(msgspec.Struct, kw_only=True):
    """Exposure at decision time: the snapshot plus entries sent and not yet in it."""

    equity: float
    cash_free: float
    gross: float
    by_symbol: dict[str, float]
    open_symbols: set[str]
    entries_today: int


def _position_value(qty: int, current: float, avg: float) -> float:
    return abs(qty) * (current if current > 0 else avg)


def build_book(st: RiskState, snap: BrokerSnapshot, day: str) -> Book:
    by_symbol: dict[str, float] = {}
    open_symbols: set[str] = set()
    gross = 0.0
    committed = 0.0  # cash promised to entries not yet in the snapshot's cash
    for p in snap.positions:
        if p.qty == 0:
            continue
        v = _position_value(p.qty, p.current_price, p.avg_entry_price)
        by_symbol[p.symbol] = by_symbol.get(p.symbol, 0.0) + v
        gross += v
        open_symbols.add(p.symbol)
    ours = {pe.client_order_id for pe in st.pending.values()}
    marks = {p.symbol: (p.current_price or p.avg_entry_price) for p in snap.positions}
    for o in snap.open_orders:
        if o.side != "buy" or o.order_type.startswith("stop") or o.client_order_id in ours:
            continue
        price = o.limit_price or marks.get(o.symbol, 0.0)
        v = max(0, o.qty - o.filled_qty) * price
        by_symbol[o.symbol] = by_symbol.get(o.symbol, 0.0) + v
        gross += v
        committed += v
        open_symbols.add(o.symbol)
    for pe in st.pending.values():
        if pe.status == "filled" and pe.resolved_ts <= snap.ts:
            continue  # the snapshot already holds it
        v = pe.fill_notional if pe.status == "filled" else max(pe.notional, pe.fill_notional)
        by_symbol[pe.symbol] = by_symbol.get(pe.symbol, 0.0) + v
        gross += v
        committed += v
        open_symbols.add(pe.symbol)
    return Book(equity=snap.equity, cash_free=snap.cash - committed, gross=gross, by_symbol=by_symbol,
                open_symbols=open_symbols, entries_today=st.entries_by_day.get(day, 0))


def _floor(x: float) -> int:
    return max(0, math.floor(x + EPS)) if math.isfinite(x) else 0


def size(entry: float, stop: float, book: Book, limits: Limits, symbol: str) -> tuple[int, set[str], dict[str, int]]:
    """Whole shares = floor(min(risk budget / rps, symbol, gross and cash headroom / entry)) and the zero terms' codes."""
    codes: set[str] = set()
    if book.equity <= 0 or not math.isfinite(book.equity):
        return 0, {"EQUITY_INVALID"}, {}
    rps = round(entry - stop, 4)
    budget = min(limits.max_risk_per_trade, book.equity * limits.max_risk_per_trade_pct / 100.0)
    gross_cap = min(limits.max_gross_exposure, book.equity * limits.max_gross_exposure_pct / 100.0)
    terms = {
        "MAX_RISK_PER_TRADE": _floor(budget / rps) if rps > 0 else 0,
        "MAX_NOTIONAL_PER_SYMBOL": _floor((limits.max_notional_per_symbol - book.by_symbol.get(symbol, 0.0)) / entry),
        "MAX_GROSS_EXPOSURE": _floor((gross_cap - book.gross) / entry),
        "INSUFFICIENT_CASH": _floor(book.cash_free / entry),
    }
    codes = {k for k, v in terms.items() if v <= 0}
    return (0 if codes else min(terms.values())), codes, terms


def drawdown_pct(st: RiskState, session: str) -> float | None:
    """The portfolio's drawdown (%) from its high-water mark before ``session``: analytics' latest
    snapshot; 0 on the very first session (no earlier session seen); None (unknown) otherwise."""
    if st.portfolio is not None and st.portfolio.date < session:
        return 100.0 * st.portfolio.drawdown
    if not any(d < session for d in st.clock):
        return 0.0
    return None


def modulate(eff: Effect, c: Candidate, book: Book, limits: Limits, codes: set[str], qty: int) -> tuple[int, list[str]]:
    """(shares, regime codes) of one candidate under the regime's row and the drawdown multiplier.

    The regime's entries cap blocks (REGIME_ENTRY_CAP) only where the base cap did not; the size is
    re-computed with the risk budget and the gross cap multiplied; a size smaller than the base one
    (or zero) is REGIME_THROTTLED. Codes appear only on a decision the modulation changed.
    """
    capped = book.entries_today >= eff.max_entries and "MAX_NEW_ENTRIES_PER_DAY" not in codes
    throttled = False
    new_qty = qty
    if "STOP_NOT_BELOW_ENTRY" not in codes and "INVALID_CANDIDATE" not in codes:
        scaled = msgspec.structs.replace(
            limits, max_risk_per_trade=limits.max_risk_per_trade * eff.risk_mult,
            max_risk_per_trade_pct=limits.max_risk_per_trade_pct * eff.risk_mult,
            max_gross_exposure=limits.max_gross_exposure * eff.gross_mult,
            max_gross_exposure_pct=limits.max_gross_exposure_pct * eff.gross_mult)
        new_qty, _, _ = size(c.entry_level, c.stop_loss, book, scaled, c.symbol)
        throttled = qty > 0 and new_qty < qty and not codes
    if capped and not codes:
        new_qty = 0
    return new_qty, changed_codes(eff, throttled=throttled and not capped, capped=capped and not codes)


def regime_detail(eff: Effect) -> str:
    return (f"regime: {eff.label} risk x{eff.risk_mult:g} gross x{eff.gross_mult:g} entries/day {eff.max_entries} "
            f"(drawdown x{eff.dd_mult:g})")
