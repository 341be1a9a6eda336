"""Trade reconstruction from fills (pure): positions, trades, PnL, R, MAE/MFE, stop efficiency.

Conventions (documented in docs/analytics.md):
- A *fill* is an ``OrderEvent`` with ``fill_qty > 0``; fills are de-duplicated by ``trade_id``
  (else ``event_id``; of two events with one fill key the smaller ``event_id`` wins) and processed
  in ``(ts, fill_id)`` order, never arrival order.
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
- Stop efficiency (closed trades): ``hindsight_stop`` is the best stop available in hindsight
  (``hindsight_stop`` below); ``stop_efficiency = (avg exit - initial stop) / (hindsight stop -
  initial stop)``: 1.0 = the exit got exactly the best stop the structure offered, 0.0 = the
  initial stop, > 1 = the exit beat it; None when no structure beat the initial stop.
  ``exit_vs_hindsight_stop`` and ``exit_vs_initial_stop`` are the differences in $/share,
  ``exit_vs_initial_stop_r`` the latter in R.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from shared.clock import calendar, ny_trade_date
from shared.ids import stable_id
from shared.schemas import BarRow, ExitEvent, Fill, OrderEvent, Trade
from shared.stops import five_minute_bars, stop_below

DEFAULT_STOP_BUFFER = 0.10


def fill_of(e: OrderEvent) -> Fill | None:
    """The canonical fill of a filled order event, or None."""
    if e.fill_qty <= 0 or e.fill_price is None or e.event not in ("filled", "partially_filled"):
        return None
    return Fill(fill_id=e.trade_id or e.event_id, symbol=e.symbol, side=e.side, kind=e.kind, qty=int(e.fill_qty),
                price=float(e.fill_price), fees=float(e.fees), ts=e.ts, trade_date=e.trade_date,
                intent_id=e.intent_id, client_order_id=e.client_order_id,
                stop_price=float(e.stop_price or 0.0) if e.kind == "entry" else 0.0)


def fills_from_orders(events: Iterable[OrderEvent]) -> list[Fill]:
    """Canonical fills: filled order events, de-duplicated (smallest event id per fill key), sorted by (ts, fill_id)."""
    out: dict[str, tuple[str, Fill]] = {}
    for e in events:
        f = fill_of(e)
        if f is None:
            continue
        seen = out.get(f.fill_id)
        if seen is None or e.event_id < seen[0]:
            out[f.fill_id] = (e.event_id, f)
    return sorted((f for _, f in out.values()), key=lambda f: (f.ts, f.fill_id))


@lru_cache(maxsize=65536)
def _position_id(symbol: str, first_fill_id: str) -> str:
    return stable_id("pos", symbol, first_fill_id)


class _Open:
    """Mutable accumulator of one position cycle (internal)."""

    def __init__(self, f: Fill) -> None:
        self.position_id = _position_id(f.symbol, f.fill_id)
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
    """What the reconstruction needs from the bar store (the shell passes ``BarStore``-backed callables).

    ``daily(symbol, start_date, end_date) -> list[BarRow]``; ``intraday(symbol, start_ns, end_ns)
    -> list[BarRow]`` (1-minute bars); optional ``extremes(symbol, start_date, end_date) ->
    (max high, min low) | None`` over the daily bars, a faster equivalent of ``excursion(daily(...))``.
    """

    def __init__(self, daily: Callable[..., Sequence[BarRow]] | None = None,
                 intraday: Callable[..., Sequence[BarRow]] | None = None,
                 extremes: Callable[..., tuple[float, float] | None] | None = None) -> None:
        self.daily = daily
        self.intraday = intraday
        self.extremes = extremes

    def daily_extremes(self, symbol: str, start: str, end: str) -> tuple[float, float] | None:
        if self.extremes is not None:
            return self.extremes(symbol, start, end)
        return excursion(self.daily(symbol, start, end)) if self.daily is not None else None


def excursion(bars: Sequence[BarRow]) -> tuple[float, float] | None:
    """(max high, min low) of the bars, or None."""
    if not bars:
        return None
    return max(b.high for b in bars), min(b.low for b in bars)


def hindsight_stop(bars: Sequence[BarRow], initial_stop: float, buffer: float) -> tuple[float, bool]:
    """(best stop available in hindsight, True if a pivot beat ``initial_stop``) over the holding bars.

    ``bars``: the bars of the holding period in time order, the last one being the exit bar.
    Candidates: pivot lows (low below the previous bar's, not above the next bar's) minus
    ``buffer``; a candidate is available once the bar after its pivot has closed (before the exit
    bar) and counts only if no later bar before the exit bar traded at or below it (a stop there
    would have survived until the exit). The hindsight stop is the highest counting candidate, else ``initial_stop``.
    """
    n = len(bars)
    best, beat = initial_stop, False
    # survive[j] = the lowest low of bars j .. n-2 (every bar before the exit bar, from j on)
    survive = [float("inf")] * (n + 1)
    for j in range(n - 2, -1, -1):
        survive[j] = min(bars[j].low, survive[j + 1])
    for i in range(1, n - 2):  # the bar after the pivot must close before the exit bar
        lo = bars[i].low
        if not (lo < bars[i - 1].low and lo <= bars[i + 1].low):
            continue
        cand = stop_below(lo, buffer)  # floored to the tick, as the exits service places it
        if cand > best and survive[i + 2] > cand:
            best, beat = cand, True
    return best, beat


def _by_symbol(items: Iterable[Any], order: Callable[[Any], tuple[int, str]]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for x in items:
        out.setdefault(x.symbol, []).append(x)
    for v in out.values():
        v.sort(key=order)
    return out


def index_events(events: Iterable[ExitEvent]) -> dict[str, list[ExitEvent]]:
    """symbol -> its exit events sorted by (ts, event_id)."""
    return _by_symbol(events, lambda e: (e.ts, e.event_id))


def index_fills(fills: Iterable[Fill]) -> dict[str, list[Fill]]:
    """symbol -> its fills sorted by (ts, fill_id)."""
    return _by_symbol(fills, lambda f: (f.ts, f.fill_id))


def build_trades(fills: Sequence[Fill] | Mapping[str, Sequence[Fill]],
                 exit_events: Sequence[ExitEvent] | Mapping[str, Sequence[ExitEvent]] = (),
                 bars: BarSource | None = None, as_of_ts: int = 0, *, stop_buffer: float = DEFAULT_STOP_BUFFER,
                 memo: dict[tuple[object, ...], object] | None = None) -> list[Trade]:
    """Reconstruct every trade from fills (see module doc). ``as_of_ts`` bounds open trades' bars.

    ``fills`` / ``exit_events``: sequences, or per-symbol mappings sorted by (ts, id) (as
    ``index_fills`` / ``index_events`` return). ``memo``: a dict the caller keeps between calls:
    a symbol's position cycles are replayed only when its fills changed, and a closed trade is
    finished once per (fills, linked exit events) (past bars never change), so a long history
    costs little per call. Symbols are independent, so the result is the same either way.
    """
    by_fill = fills if isinstance(fills, Mapping) else index_fills(fills)
    by_event = exit_events if isinstance(exit_events, Mapping) else index_events(exit_events)
    trades = []
    for symbol, fs in by_fill.items():
        ckey = ("cycles", symbol, tuple(f.fill_id for f in fs))
        cycles = memo.get(ckey) if memo is not None else None
        if cycles is None:
            cycles = _cycles(fs)
            if memo is not None:
                memo[ckey] = cycles
        for o in cycles:  # type: ignore[attr-defined]
            closed = o.qty == 0
            end_ts = o.closed_ts if closed else as_of_ts
            linked = _linked(by_event.get(symbol, ()), o.first.ts, end_ts)
            key = ("trade", o.position_id, tuple(o.fill_ids), end_ts, tuple(e.event_id for e in linked), stop_buffer)
            t = memo.get(key) if memo is not None and closed else None
            if t is None:
                t = _finish(o, linked, bars, as_of_ts, stop_buffer)
                if memo is not None and closed:
                    memo[key] = t
            trades.append(t)
    return sorted(trades, key=lambda t: (t.opened_ts, t.symbol, t.trade_id))  # type: ignore[attr-defined]


def _cycles(fills: Sequence[Fill]) -> list[_Open]:
    """The position cycles of one symbol's fills (sorted by (ts, fill_id)): closed ones, then the open one."""
    out: list[_Open] = []
    cur: _Open | None = None
    for f in fills:
        if cur is None:
            if f.side != "buy":
                continue  # a sell with nothing held: reconciliation reports it, no trade
            cur = _Open(f)
        cur.apply(f)
        if cur.qty == 0:
            out.append(cur)
            cur = None
    return [*out, cur] if cur is not None else out


def _linked(events: Sequence[ExitEvent], start_ts: int, end_ts: int) -> Sequence[ExitEvent]:
    """The events with ``start_ts <= ts`` (and ``ts <= end_ts`` when given); ``events`` sorted by (ts, event_id)."""
    lo = bisect.bisect_left(events, start_ts, key=lambda e: e.ts)
    hi = bisect.bisect_right(events, end_ts, key=lambda e: e.ts) if end_ts else len(events)
    return events[lo:hi]


def _holding_bars(o: _Open, bars: BarSource) -> tuple[list[BarRow], str]:
    """The bars of a closed trade's holding period (for its hindsight stop): 5-minute bars from
    the 1-minute bars held, else the daily bars of the sessions after the entry session through
    the exit session (with daily bars only a position starts after its entry bar)."""
    if bars.intraday is not None:
        minutes = list(bars.intraday(o.symbol, o.first.ts + 1, o.closed_ts))
        if minutes:
            return five_minute_bars(minutes), "5m"
    if bars.daily is not None:
        daily = [b for b in bars.daily(o.symbol, o.first.trade_date, o.closed_date)
                 if ny_trade_date(b.ts) > o.first.trade_date]
        return daily, "1d"
    return [], ""


def _finish(o: _Open, linked: Sequence[ExitEvent], bars: BarSource | None, as_of_ts: int, stop_buffer: float) -> Trade:
    closed = o.qty == 0
    avg_entry = o.entry_notional / o.entry_qty if o.entry_qty else 0.0
    avg_exit = o.exit_notional / o.exit_qty if o.exit_qty else 0.0
    risk = avg_entry - o.initial_stop if o.initial_stop > 0 else 0.0
    realized = o.gross - o.fees
    end_ts = o.closed_ts if closed else as_of_ts
    exit_pos = next((e.position_id for e in linked if e.position_id), "")
    hl, source = None, "none"
    if bars is not None:
        if bars.intraday is not None and end_ts:
            hl = excursion(bars.intraday(o.symbol, o.first.ts, end_ts))
            source = "1m" if hl else source
        if hl is None:
            end_date = o.closed_date if closed else (ny_trade_date(as_of_ts) if as_of_ts else o.first.trade_date)
            hl = bars.daily_extremes(o.symbol, o.first.trade_date, end_date)
            source = "1d" if hl else "none"
    max_high, min_low = hl if hl else (0.0, 0.0)
    mae = max(0.0, avg_entry - min_low) if hl else 0.0
    mfe = max(0.0, max_high - avg_entry) if hl else 0.0
    eff = vs_stop = vs_stop_r = hindsight = vs_hindsight = None
    h_source = ""
    if closed and o.initial_stop > 0:
        vs_stop = avg_exit - o.initial_stop
        vs_stop_r = vs_stop / risk if risk > 0 else None
        held, kind = _holding_bars(o, bars) if bars is not None else ([], "")
        if held:
            hindsight, beat = hindsight_stop(held, o.initial_stop, stop_buffer)
            h_source = kind if beat else "initial"
            vs_hindsight = avg_exit - hindsight
            if hindsight > o.initial_stop:
                eff = (avg_exit - o.initial_stop) / (hindsight - o.initial_stop)
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
        stop_efficiency=eff, exit_vs_initial_stop=vs_stop, exit_vs_initial_stop_r=vs_stop_r,
        hindsight_stop=hindsight, hindsight_stop_source=h_source, exit_vs_hindsight_stop=vs_hindsight,
        excursion_source=source, fill_ids=list(o.fill_ids), exit_event_ids=[e.event_id for e in linked],
        exit_position_id=exit_pos,
    )
