"""Structural stop rules (DESIGN §6): the one implementation the exits service and the exit simulator share.

Rules
- A *pivot low* is a bar whose low is below the previous bar's low and not above the next bar's
  low; a *higher low* is a pivot low above the pivot low before it.
- Intraday: the 1-minute bars of the symbol's last ``hl_lookback_days`` sessions (a session = a NY
  date on which the symbol had a bar, daily or 1-minute) are aggregated into 5-minute bars ending
  on 5-minute marks; only complete ones count (a 5-minute bar is complete once a minute at or after
  its end has been seen). With at least ``hl_min_bars`` of them, the latest higher low is the
  structure.
- Daily fallback: the latest pivot low among the last ``swing_lookback`` daily bars.
- Candidate stop = the structure's low minus ``buffer``, floored to the broker's tick (a cent, or
  0.0001 below $1), so the stop is never above "low - buffer" and the broker takes it as it is.
  The initial stop of a position is floored the same way (``to_tick``).
- Ratchet (the callers apply it): the stop only rises, and only to a candidate below the last
  close (a stop at or above the price is not a stop).

Two forms give the same answer (a hypothesis test checks it on arbitrary bar sequences):
``candidate_stop`` (batch: from the bars known at a moment) and ``StopTracker`` + ``track_minute``
/ ``track_daily`` / ``tracker_candidate`` (incremental: one bar at a time, amortised O(1), small
enough to live in a position's state). The tracker refuses a bar older than the last bar it took
(either timeframe; a daily bar ends at the close, after its session's minutes) or not newer than
the last bar of its own timeframe; the caller counts the refusal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import msgspec

from shared.clock import NS, dt_to_ns, ny_datetime, ny_trade_date
from shared.schemas import BarRow, Low, StopTracker
from shared.settings.exits import ExitsSettings

FIVE_MIN_NS = 300 * NS
MINUTE_NS = 60 * NS

SOURCE_INITIAL = "initial"
SOURCE_INTRADAY = "intraday_higher_low"
SOURCE_DAILY = "daily_swing_low"
SOURCE_BROKER = "broker"


class StopRules(msgspec.Struct, frozen=True, kw_only=True):
    """The stop settings as plain values (``from_settings`` reads an ``ExitsSettings``)."""

    buffer: float = 0.10
    hl_lookback_days: int = 3
    hl_min_bars: int = 6
    swing_lookback: int = 20
    window_start: str = "09:35"
    window_end: str = "15:55"
    resolve_on_entry: bool = True

    @classmethod
    def from_settings(cls, exits: ExitsSettings) -> StopRules:
        return cls(buffer=exits.stop_buffer, hl_lookback_days=exits.hl_lookback_days,
                   hl_min_bars=exits.hl_min_bars, swing_lookback=exits.swing_lookback,
                   window_start=exits.stop_window_start, window_end=exits.stop_window_end)


class Candidate(msgspec.Struct, frozen=True, kw_only=True):
    """A candidate stop and the bar it comes from."""

    stop: float
    source: str  # intraday_higher_low | daily_swing_low
    ref_ts: int  # the 5-minute bar's end, or the daily bar's ts
    ref_low: float


# -- prices ------------------------------------------------------------------------------------
def tick_of(price: float) -> float:
    """The broker's price increment for a stop at ``price`` (US equities: $0.01, $0.0001 below $1)."""
    return 0.01 if price >= 1.0 else 0.0001


def to_tick(price: float) -> float:
    """``price`` floored to its tick (1e-6 of a tick tolerates binary noise: 9.5 - 0.1 -> 9.40)."""
    if price <= 0:
        return 0.0
    tick = tick_of(price)
    steps = math.floor(price / tick + 1e-6)
    return round(steps * tick, 4 if tick < 0.01 else 2)


def stop_below(low: float, buffer: float) -> float:
    """The stop ``buffer`` below a structural low, floored to the tick."""
    return to_tick(low - buffer)


# -- batch form --------------------------------------------------------------------------------
def five_minute_end(ts: int) -> int:
    """The end of the 5-minute bar a 1-minute bar ending at ``ts`` belongs to."""
    return -(-ts // FIVE_MIN_NS) * FIVE_MIN_NS


def five_minute_bars(bars: Sequence[BarRow]) -> list[BarRow]:
    """Aggregate 1-minute bars (ts = minute end) into 5-minute bars ending on 5-minute marks."""
    out: list[BarRow] = []
    cur: list[BarRow] = []
    cur_end = 0
    for b in sorted(bars, key=lambda b: b.ts):
        end = five_minute_end(b.ts)
        if cur and end != cur_end:
            out.append(_agg(cur, cur_end))
            cur = []
        cur_end = end
        cur.append(b)
    if cur:
        out.append(_agg(cur, cur_end))
    return out


def _agg(bs: list[BarRow], end: int) -> BarRow:
    return BarRow(symbol=bs[0].symbol, ts=end, open=bs[0].open, high=max(b.high for b in bs),
                  low=min(b.low for b in bs), close=bs[-1].close, volume=sum(b.volume for b in bs))


def pivot_lows(bars: Sequence[BarRow] | Sequence[Low]) -> list:
    """Bars whose low is below the previous bar's low and not above the next bar's low."""
    return [bars[i] for i in range(1, len(bars) - 1) if bars[i].low < bars[i - 1].low and bars[i].low <= bars[i + 1].low]


def intraday_higher_low(bars5: Sequence[BarRow] | Sequence[Low], min_bars: int):  # noqa: ANN201 - BarRow | Low | None
    """The latest pivot low above the pivot low before it (None with fewer than ``min_bars`` bars).

    Scans back from the end over consecutive pivot lows (``pivot_lows``' rule) and stops at the first
    answer; works on ``BarRow``s (batch form) and on the tracker's ``Low``s alike.
    """
    n = len(bars5)
    if n < min_bars:
        return None
    later = None  # the pivot low after ``b`` in the scan
    for i in range(n - 2, 0, -1):
        b = bars5[i]
        if b.low < bars5[i - 1].low and b.low <= bars5[i + 1].low:
            if later is not None and later.low > b.low:
                return later
            later = b
    return None


def daily_swing_low(daily: Sequence[BarRow], lookback: int) -> BarRow | None:
    """The latest pivot low among the last ``lookback`` daily bars."""
    if lookback <= 0:
        return None
    piv = pivot_lows(list(daily)[-lookback:])
    return piv[-1] if piv else None


def candidate_stop(daily_through: Sequence[BarRow], minutes_through: Sequence[BarRow], sessions: Sequence[str],
                   rules: StopRules) -> Candidate | None:
    """The candidate stop from the bars known at this point (``sessions``: the symbol's sessions so far)."""
    keep = set(sessions[-rules.hl_lookback_days:]) if rules.hl_lookback_days > 0 else set()
    recent = [b for b in minutes_through if ny_trade_date(b.ts) in keep]
    if recent:
        bars5 = five_minute_bars(recent)
        last_ts = max(b.ts for b in recent)
        bars5 = [b for b in bars5 if b.ts <= last_ts]  # complete 5-minute bars only
        hl = intraday_higher_low(bars5, rules.hl_min_bars)
        if hl is not None:
            return Candidate(stop=stop_below(hl.low, rules.buffer), source=SOURCE_INTRADAY, ref_ts=hl.ts, ref_low=hl.low)
    sl = daily_swing_low(daily_through, rules.swing_lookback)
    if sl is not None:
        return Candidate(stop=stop_below(sl.low, rules.buffer), source=SOURCE_DAILY, ref_ts=sl.ts, ref_low=sl.low)
    return None


# -- incremental form --------------------------------------------------------------------------
@lru_cache(maxsize=16384)
def _date_of_minute(minute: int) -> str:
    return ny_trade_date(minute * MINUTE_NS)


def ny_date(ts: int) -> str:
    """``shared.clock.ny_trade_date`` cached per minute (a minute never straddles NY midnight)."""
    return _date_of_minute(ts // MINUTE_NS)


@lru_cache(maxsize=1024)
def _day_start(d: str) -> int:
    return dt_to_ns(ny_datetime(d, "00:00"))


def _add_session(tr: StopTracker, d: str, rules: StopRules) -> None:
    if tr.sessions and tr.sessions[-1] >= d:
        return
    tr.sessions.append(d)
    keep = max(rules.hl_lookback_days, 0)
    if len(tr.sessions) > keep:
        del tr.sessions[: len(tr.sessions) - keep]
        cutoff = _day_start(tr.sessions[0]) if tr.sessions else 1 << 62
        if tr.bars5 and tr.bars5[0].ts < cutoff:
            tr.bars5 = [b for b in tr.bars5 if b.ts >= cutoff]
            tr.hl = intraday_higher_low(tr.bars5, rules.hl_min_bars)
        if tr.part_end and tr.part_end <= cutoff:
            tr.part_end, tr.part_low = 0, 0.0


def _close_part(tr: StopTracker, rules: StopRules) -> None:
    tr.bars5.append(Low(tr.part_end, tr.part_low))
    tr.part_end, tr.part_low = 0, 0.0
    tr.hl = intraday_higher_low(tr.bars5, rules.hl_min_bars)


def track_minute(tr: StopTracker, bar: BarRow, rules: StopRules) -> bool:
    """Add a 1-minute bar. False (nothing changed) when it is older than the last bar seen (either
    timeframe) or not newer than the last minute."""
    if bar.ts <= tr.last_minute_ts or bar.ts < tr.last_daily_ts:
        return False
    d = ny_date(bar.ts)
    if tr.part_end and five_minute_end(bar.ts) != tr.part_end:
        _close_part(tr, rules)  # a later minute completes the bucket (its last minute may be missing)
    _add_session(tr, d, rules)
    tr.last_minute_ts, tr.last_minute_date = bar.ts, d
    if rules.hl_lookback_days <= 0:
        return True
    end = five_minute_end(bar.ts)
    if tr.part_end == end:
        if bar.low < tr.part_low:
            tr.part_low = bar.low
    else:
        tr.part_end, tr.part_low = end, bar.low
    if bar.ts >= end:
        _close_part(tr, rules)
    return True


def track_daily(tr: StopTracker, bar: BarRow, rules: StopRules) -> bool:
    """Add a daily bar. False (nothing changed) when it is older than the last bar seen (either
    timeframe) or not newer than the last daily bar."""
    if bar.ts <= tr.last_daily_ts or bar.ts < tr.last_minute_ts:
        return False
    _add_session(tr, ny_date(bar.ts), rules)
    tr.last_daily_ts = bar.ts
    tr.daily.append(Low(bar.ts, bar.low))
    if len(tr.daily) > max(rules.swing_lookback, 0):
        del tr.daily[: len(tr.daily) - max(rules.swing_lookback, 0)]
    piv = pivot_lows(tr.daily)
    tr.swing = piv[-1] if piv else None
    return True


def tracker_candidate(tr: StopTracker, rules: StopRules) -> Candidate | None:
    """``candidate_stop`` of the bars the tracker has seen."""
    if tr.hl is not None:
        return Candidate(stop=stop_below(tr.hl.low, rules.buffer), source=SOURCE_INTRADAY, ref_ts=tr.hl.ts,
                         ref_low=tr.hl.low)
    if tr.swing is not None:
        return Candidate(stop=stop_below(tr.swing.low, rules.buffer), source=SOURCE_DAILY, ref_ts=tr.swing.ts,
                         ref_low=tr.swing.low)
    return None


def had_minutes_on(tr: StopTracker, d: str) -> bool:
    """True when the tracker saw 1-minute bars dated ``d`` (then ``d``'s daily bar does not drive the stop)."""
    return tr.last_minute_date == d
