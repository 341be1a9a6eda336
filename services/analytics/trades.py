"""Trade reconstruction from fills (pure): positions, trades, PnL, R, MAE/MFE, stop efficiency.

Conventions (documented in docs/analytics.md):
- A *fill* is an ``OrderEvent`` with ``fill_qty > 0``; fills are de-duplicated by ``trade_id``
  (else ``event_id``) and processed in ``(ts, event_id)`` order, never arrival order.
- A *position* per symbol opens when its quantity goes from 0 to > 0 and closes when it returns
  to 0; one position cycle is one *trade*. Partial entry fills add to it (average cost); every
  sell (stop, exit, scale-out) realizes ``qty * (price - average cost)``.
- Ids: ``position_id = stable_id("pos", symbol, first fill key)``, ``trade_id = stable_id("tr",
  position_id)``. Exit events link to the trade by symbol and time (opened_ts <= ts <= closed_ts);
  the exits service's own position id is kept as ``exit_position_id``.
- realized PnL is net of every fee of the trade; R = realized / (initial risk per share x shares
  bought), initial risk = average entry - the entry's protective stop.
- MAE/MFE: adverse/favourable excursion per share from the 1-minute bars held (when the store has
  any for the holding period), else from the daily bars of the entry through the exit session
  (whole sessions: a daily-bar approximation).
- Stop efficiency = (average exit - initial stop) / (best price held - initial stop): 1.0 means the
  exit captured the best price available in hindsight, 0.0 an exit at the initial stop.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from functools import lru_cache

import msgspec

from shared.clock import calendar
from shared.ids import stable_id
from shared.schemas import BarRow, ExitEvent, OrderEvent

TRADE_SCHEMA_VERSION = 1


class Fill(msgspec.Struct, frozen=True, kw_only=True):
    """One execution, canonical form of a filled ``OrderEvent``."""

    fill_id: str
    symbol: str
    side: str  # buy | sell
    kind: str  # entry | stop | exit
    qty: int
    price: float
    fees: float
    ts: int
    trade_date: str
    intent_id: str
    client_order_id: str
    stop_price: float = 0.0


class Trade(msgspec.Struct, frozen=True, kw_only=True):
    """One position cycle (entry fills through the last sell). ``v`` is the artifact version."""

    v: int = TRADE_SCHEMA_VERSION
    trade_id: str
    position_id: str
    symbol: str
    status: str  # open | closed
    entry_intent_id: str
    opened_ts: int
    opened_date: str
    closed_ts: int = 0
    closed_date: str = ""
    qty_open: int = 0
    entry_qty: int = 0
    exit_qty: int = 0
    avg_entry_price: float = 0.0
    avg_exit_price: float = 0.0
    initial_stop: float = 0.0
    risk_per_share: float = 0.0
    fees: float = 0.0
    gross_pnl: float = 0.0
    realized_pnl: float = 0.0
    r_multiple: float | None = None
    holding_seconds: float = 0.0
    holding_sessions: int = 0
    scale_outs: int = 0
    exit_kinds: list[str] = []
    max_high: float = 0.0
    min_low: float = 0.0
    mae: float = 0.0
    mfe: float = 0.0
    mae_r: float | None = None
    mfe_r: float | None = None
    stop_efficiency: float | None = None
    exit_vs_initial_stop: float | None = None
    excursion_source: str = ""  # 1m | 1d | none
    fill_ids: list[str] = []
    exit_event_ids: list[str] = []
    exit_position_id: str = ""


def fills_from_orders(events: Iterable[OrderEvent]) -> list[Fill]:
    """Canonical fills: filled order events, de-duplicated, sorted by (ts, fill_id)."""
    out: dict[str, Fill] = {}
    for e in events:
        if e.fill_qty <= 0 or e.fill_price is None or e.event not in ("filled", "partially_filled"):
            continue
        key = e.trade_id or e.event_id
        if key in out:
            continue
        out[key] = Fill(fill_id=key, symbol=e.symbol, side=e.side, kind=e.kind, qty=int(e.fill_qty),
                        price=float(e.fill_price), fees=float(e.fees), ts=e.ts, trade_date=e.trade_date,
                        intent_id=e.intent_id, client_order_id=e.client_order_id,
                        stop_price=float(e.stop_price or 0.0) if e.kind == "entry" else 0.0)
    return sorted(out.values(), key=lambda f: (f.ts, f.fill_id))


class _Open:
    """Mutable accumulator of one position cycle (internal)."""

    def __init__(self, f: Fill) -> None:
        self.position_id = stable_id("pos", f.symbol, f.fill_id)
        self.symbol = f.symbol
        self.first = f
        self.qty = 0
        self.cost = 0.0  # average cost x qty of the shares held
        self.entry_qty = 0
        self.entry_notional = 0.0
        self.exit_qty = 0
        self.exit_notional = 0.0
        self.fees = 0.0
        self.gross = 0.0
        self.initial_stop = 0.0
        self.sells = 0
        self.exit_kinds: set[str] = set()
        self.fill_ids: list[str] = []
        self.closed_ts = 0
        self.closed_date = ""

    @property
    def avg_cost(self) -> float:
        return self.cost / self.qty if self.qty else 0.0

    def apply(self, f: Fill) -> None:
        self.fill_ids.append(f.fill_id)
        self.fees += f.fees
        if f.side == "buy":
            if not self.initial_stop and f.stop_price > 0:
                self.initial_stop = f.stop_price
            self.qty += f.qty
            self.cost += f.qty * f.price
            self.entry_qty += f.qty
            self.entry_notional += f.qty * f.price
            return
        qty = min(f.qty, self.qty)  # never go short on a sell larger than the position
        avg = self.avg_cost
        self.gross += qty * (f.price - avg)
        self.cost -= qty * avg
        self.qty -= qty
        self.exit_qty += qty
        self.exit_notional += qty * f.price
        self.sells += 1
        self.exit_kinds.add(f.kind)
        if self.qty == 0:
            self.cost = 0.0
            self.closed_ts = f.ts
            self.closed_date = f.trade_date


@lru_cache(maxsize=1)
def _session_index() -> tuple[list[str], dict[str, int]]:
    days = calendar().sessions_in_range("1990-01-01", "2100-12-31")
    return days, {d: i for i, d in enumerate(days)}


def _sessions_between(a: str, b: str) -> int:
    """Sessions from ``a`` to ``b`` (0 on the same session)."""
    if not a or not b or b < a:
        return 0
    days, _ = _session_index()
    return max(bisect.bisect_right(days, b) - bisect.bisect_left(days, a) - 1, 0)


class BarSource:
    """What the reconstruction needs from the bar store (the shell passes ``BarStore`` methods)."""

    def __init__(self, daily: object = None, intraday: object = None) -> None:
        self.daily = daily  # (symbol, start_date, end_date) -> list[BarRow]
        self.intraday = intraday  # (symbol, start_ns, end_ns) -> list[BarRow]


def excursion(bars: Sequence[BarRow]) -> tuple[float, float] | None:
    """(max high, min low) of the bars, or None."""
    if not bars:
        return None
    return max(b.high for b in bars), min(b.low for b in bars)


def build_trades(fills: Sequence[Fill], exit_events: Sequence[ExitEvent] = (), bars: BarSource | None = None,
                 as_of_ts: int = 0) -> list[Trade]:
    """Reconstruct every trade from fills (see module doc). ``as_of_ts`` bounds open trades' bars."""
    opens: dict[str, _Open] = {}
    done: list[_Open] = []
    for f in sorted(fills, key=lambda x: (x.ts, x.fill_id)):
        cur = opens.get(f.symbol)
        if cur is None:
            if f.side != "buy":
                continue  # a sell with nothing held: reconciliation reports it, no trade
            cur = opens[f.symbol] = _Open(f)
        cur.apply(f)
        if cur.qty == 0:
            done.append(opens.pop(f.symbol))
    events = sorted(exit_events, key=lambda e: (e.ts, e.event_id))
    trades = [_finish(o, events, bars, as_of_ts) for o in [*done, *opens.values()]]
    return sorted(trades, key=lambda t: (t.opened_ts, t.symbol, t.trade_id))


def _finish(o: _Open, events: Sequence[ExitEvent], bars: BarSource | None, as_of_ts: int) -> Trade:
    closed = o.qty == 0
    avg_entry = o.entry_notional / o.entry_qty if o.entry_qty else 0.0
    avg_exit = o.exit_notional / o.exit_qty if o.exit_qty else 0.0
    risk = avg_entry - o.initial_stop if o.initial_stop > 0 else 0.0
    realized = o.gross - o.fees
    end_ts = o.closed_ts if closed else as_of_ts
    linked = [e for e in events if e.symbol == o.symbol and o.first.ts <= e.ts and (not end_ts or e.ts <= end_ts)]
    exit_pos = next((e.position_id for e in linked if e.position_id), "")
    hl, source = None, "none"
    if bars is not None:
        if bars.intraday is not None and end_ts:
            hl = excursion(bars.intraday(o.symbol, o.first.ts, end_ts))  # type: ignore[operator]
            source = "1m" if hl else source
        if hl is None and bars.daily is not None:
            end_date = o.closed_date if closed else (_date_of(as_of_ts) if as_of_ts else o.first.trade_date)
            hl = excursion(bars.daily(o.symbol, o.first.trade_date, end_date))  # type: ignore[operator]
            source = "1d" if hl else "none"
    max_high, min_low = hl if hl else (0.0, 0.0)
    mae = max(0.0, avg_entry - min_low) if hl else 0.0
    mfe = max(0.0, max_high - avg_entry) if hl else 0.0
    eff = None
    vs_stop = None
    if closed and o.initial_stop > 0:
        vs_stop = avg_exit - o.initial_stop
        if hl and max_high > o.initial_stop:
            eff = (avg_exit - o.initial_stop) / (max_high - o.initial_stop)
    return Trade(
        trade_id=stable_id("tr", o.position_id), position_id=o.position_id, symbol=o.symbol,
        status="closed" if closed else "open", entry_intent_id=o.first.intent_id,
        opened_ts=o.first.ts, opened_date=o.first.trade_date, closed_ts=o.closed_ts, closed_date=o.closed_date,
        qty_open=o.qty, entry_qty=o.entry_qty, exit_qty=o.exit_qty, avg_entry_price=avg_entry,
        avg_exit_price=avg_exit, initial_stop=o.initial_stop, risk_per_share=risk, fees=o.fees,
        gross_pnl=o.gross, realized_pnl=realized,
        r_multiple=(realized / (risk * o.entry_qty)) if closed and risk > 0 and o.entry_qty else None,
        holding_seconds=((o.closed_ts - o.first.ts) / 1e9) if closed else 0.0,
        holding_sessions=_sessions_between(o.first.trade_date, o.closed_date) if closed else 0,
        scale_outs=max(o.sells - 1, 0) if closed else o.sells, exit_kinds=sorted(o.exit_kinds),
        max_high=max_high, min_low=min_low, mae=mae, mfe=mfe,
        mae_r=mae / risk if risk > 0 and hl else None, mfe_r=mfe / risk if risk > 0 and hl else None,
        stop_efficiency=eff, exit_vs_initial_stop=vs_stop, excursion_source=source,
        fill_ids=list(o.fill_ids), exit_event_ids=[e.event_id for e in linked], exit_position_id=exit_pos,
    )


def _date_of(ts: int) -> str:
    from shared.clock import ny_trade_date

    return ny_trade_date(ts)


def open_positions(trades: Sequence[Trade]) -> dict[str, Trade]:
    """symbol -> its open trade."""
    return {t.symbol: t for t in trades if t.status == "open"}


def position_cost(fills: Sequence[Fill]) -> dict[str, tuple[int, float]]:
    """symbol -> (qty held, average cost) after all fills (same rules as ``build_trades``)."""
    out: dict[str, _Open] = {}
    for f in sorted(fills, key=lambda x: (x.ts, x.fill_id)):
        cur = out.get(f.symbol)
        if cur is None:
            if f.side != "buy":
                continue
            cur = out[f.symbol] = _Open(f)
        cur.apply(f)
        if cur.qty == 0:
            del out[f.symbol]
    return {s: (o.qty, o.avg_cost) for s, o in sorted(out.items())}
