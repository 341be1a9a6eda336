"""Broker-independent exit simulator (pure): the exit the exits service would produce.

Rules (DESIGN §6 and docs/ARCHITECTURE.md "One session, event by event"):
- Candidate stop (``shared.stops``, the implementation the exits service uses too) = the latest
  intraday *higher low* on 5-minute bars (built from the 1-minute bars of the last
  ``hl_lookback_days`` sessions, at least ``hl_min_bars`` complete 5-minute bars) minus ``buffer``;
  else the last daily *swing low* of the last ``swing_lookback`` daily bars minus ``buffer``;
  floored to the broker's tick (as is the initial stop). A pivot low is a bar whose low is below
  the previous bar's low and not above the next bar's low; a higher low is a pivot low above the
  pivot low before it.
- Ratchet: the desired stop only rises (``max(desired, candidate)``), and only to a candidate
  below the last close (a stop at or above the price is not a stop).
- Window: the live (broker) stop changes only inside the stop window: at each session's
  WINDOW_OPEN (which comes after the minute bars ending at or before the window start, as the feed
  and the replay driver publish them: a stop sent then acts on the later bars only) and on a bar
  whose end is inside ``[window_start, window_end]``. A daily bar ends at
  the close, outside the window, so a stop computed from D's daily bar goes live at D+1's
  WINDOW_OPEN; the position is unprotected until its first live stop.
- Fills: a bar whose low reaches the live stop fills it at the stop, or at the bar's open when
  it opened below the stop (gap).
- On entry the stop is resolved from the bars available at the fill (``resolve_on_entry``):
  ``max(initial stop, candidate)``.
- Per bar the order is: fill check against the live stop, then ratchet from the bars through
  this bar, then (inside the window) the live stop follows the desired one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from shared.clock import calendar, ny_trade_date
from shared.schemas import BarRow
from shared.settings.exits import ExitsSettings
from shared.stops import (
    StopRules,
    candidate_stop,
    daily_swing_low,
    five_minute_bars,
    intraday_higher_low,
    pivot_lows,
    to_tick,
)

from .trades import Trade

__all__ = ["Entry", "ParityRow", "SimResult", "StopChange", "StopRules", "candidate_stop", "daily_swing_low",
           "five_minute_bars", "intraday_higher_low", "parity", "pivot_lows", "rules_from", "simulate_exit"]


@dataclass(frozen=True)
class Entry:
    symbol: str
    ts: int  # fill time (daily replays: the entry session's daily bar ts)
    price: float
    qty: int
    initial_stop: float


@dataclass(frozen=True)
class StopChange:
    ts: int
    stop: float
    source: str  # initial | intraday_higher_low | daily_swing_low
    live: bool  # True when the broker stop changed, False when only the desired stop did


@dataclass
class SimResult:
    exited: bool
    exit_ts: int = 0
    exit_date: str = ""
    exit_price: float = 0.0
    exit_reason: str = ""  # STOP_TRIGGERED
    desired_stop: float = 0.0
    live_stop: float | None = None
    stop_source: str = "initial"
    changes: list[StopChange] = field(default_factory=list)


def simulate_exit(entry: Entry, daily: Sequence[BarRow], minutes: Sequence[BarRow] = (),
                  rules: StopRules | None = None) -> SimResult:
    """Walk the bars after ``entry`` until its stop fills (or the bars end: ``exited=False``)."""
    rules = rules or StopRules()
    cal = calendar()
    daily = sorted((b for b in daily if b.symbol == entry.symbol), key=lambda b: b.ts)
    minutes = sorted((b for b in minutes if b.symbol == entry.symbol), key=lambda b: b.ts)
    entry_date = ny_trade_date(entry.ts)
    if not any(ny_trade_date(b.ts) == entry_date for b in minutes):
        # daily bars only: the entry fills on the session's daily bar, which arrives at the close;
        # the position (and its stop) starts after that bar, whatever time the fill carries
        day_bar = next((b for b in daily if ny_trade_date(b.ts) == entry_date), None)
        if day_bar is not None and day_bar.ts > entry.ts:
            entry = replace(entry, ts=day_bar.ts)
    initial = to_tick(entry.initial_stop)
    res = SimResult(exited=False, desired_stop=initial, changes=[StopChange(entry.ts, initial, "initial", False)])
    min_by_day: dict[str, list[BarRow]] = {}
    for b in minutes:
        min_by_day.setdefault(ny_trade_date(b.ts), []).append(b)
    seen_sessions: list[str] = sorted({ny_trade_date(b.ts) for b in daily if b.ts <= entry.ts} | {
        d for d in min_by_day if d <= entry_date})

    def ratchet(ts: int, close: float) -> None:
        days = sorted(seen_sessions)
        d_through = [b for b in daily if b.ts <= ts]
        keep = days[-rules.hl_lookback_days:] if rules.hl_lookback_days > 0 else []
        m_through = [b for d in keep for b in min_by_day.get(d, ()) if b.ts <= ts]
        cand = candidate_stop(d_through, m_through, days, rules)
        if cand is not None and cand.stop > res.desired_stop and cand.stop < close:
            res.desired_stop, res.stop_source = cand.stop, cand.source
            res.changes.append(StopChange(ts, cand.stop, cand.source, False))

    def go_live(ts: int) -> None:
        if res.live_stop != res.desired_stop:
            res.live_stop = res.desired_stop
            res.changes.append(StopChange(ts, res.desired_stop, res.stop_source, True))

    def check_fill(b: BarRow) -> bool:
        if res.live_stop is not None and b.low <= res.live_stop:
            res.exited, res.exit_ts, res.exit_date = True, b.ts, ny_trade_date(b.ts)
            res.exit_price = b.open if b.open < res.live_stop else res.live_stop
            res.exit_reason = "STOP_TRIGGERED"
            return True
        return False

    if rules.resolve_on_entry:
        ratchet(entry.ts, entry.price)
        if cal.in_window(entry.ts, rules.window_start, rules.window_end):
            go_live(entry.ts)
    sessions = sorted({ny_trade_date(b.ts) for b in daily} | set(min_by_day))
    for d in sessions:
        if d < entry_date:
            continue
        if d not in seen_sessions:
            seen_sessions.append(d)
        w0, _ = cal.window_bounds(d, rules.window_start, rules.window_end)
        window_due = d > entry_date or entry.ts < w0  # this session's WINDOW_OPEN sends the desired stop
        for b in (x for x in min_by_day.get(d, []) if x.ts > entry.ts):
            if window_due and b.ts > w0:  # WINDOW_OPEN comes after the minutes ending at or before it
                go_live(w0)
                window_due = False
            if check_fill(b):
                return res
            ratchet(b.ts, b.close)
            if cal.in_window(b.ts, rules.window_start, rules.window_end):
                go_live(b.ts)
        if window_due:
            go_live(w0)  # WINDOW_OPEN (after every minute of the day, or on a day without minutes)
        if not min_by_day.get(d):  # daily bars only this session
            bar = next((b for b in daily if ny_trade_date(b.ts) == d), None)
            if bar is None or bar.ts <= entry.ts:
                continue  # no bar, or the entry filled on this bar: the position starts after it
            if check_fill(bar):
                return res
            ratchet(bar.ts, bar.close)
    return res


def rules_from(exits: ExitsSettings) -> StopRules:
    """``StopRules`` from the exits settings section (values passed in; nothing read here)."""
    return StopRules.from_settings(exits)


@dataclass(frozen=True)
class ParityRow:
    trade_id: str
    symbol: str
    actual_exit_ts: int
    actual_exit_price: float
    sim_exit_ts: int
    sim_exit_price: float
    agree: bool


def parity(trades: Sequence[Trade], daily: Sequence[BarRow], minutes: Sequence[BarRow], rules: StopRules,
           price_tol: float = 1e-6) -> list[ParityRow]:
    """Simulate every stopped-out trade (``trades.Trade``) and compare with its actual exit.

    Agreement: same exit session and price within ``price_tol`` (pass the simulator's slippage).
    Trades still open must be still open in the simulation.
    """
    out: list[ParityRow] = []
    for t in trades:
        entry = Entry(symbol=t.symbol, ts=t.opened_ts, price=t.avg_entry_price, qty=t.entry_qty,
                      initial_stop=t.initial_stop)
        res = simulate_exit(entry, daily, minutes, rules)
        closed = t.status == "closed"
        if closed:
            agree = res.exited and res.exit_date == t.closed_date and abs(res.exit_price - t.avg_exit_price) <= price_tol
        else:
            agree = not res.exited
        out.append(ParityRow(trade_id=t.trade_id, symbol=t.symbol, actual_exit_ts=t.closed_ts,
                             actual_exit_price=t.avg_exit_price, sim_exit_ts=res.exit_ts,
                             sim_exit_price=res.exit_price, agree=agree))
    return out
