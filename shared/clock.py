"""NY trading calendar (exchange_calendars XNYS) and the clocks services read time from.

Logic never calls ``datetime.now()``: it reads the time of the event it handles, or a
``Clock`` injected by the shell. ``WallClock`` is live; ``ReplayClock`` is set by the
replay driver. Timestamps are UTC epoch nanoseconds (``int``).
"""

from __future__ import annotations

import threading
import time
from datetime import date, datetime, timedelta
from datetime import time as dtime
from functools import lru_cache
from typing import Protocol
from zoneinfo import ZoneInfo

NY = ZoneInfo("America/New_York")
UTC = ZoneInfo("UTC")
NS = 1_000_000_000


def ns_to_dt(ts: int, tz: ZoneInfo = UTC) -> datetime:
    return datetime.fromtimestamp(ts / NS, tz=UTC).astimezone(tz)


def dt_to_ns(dt: datetime) -> int:
    if dt.tzinfo is None:
        raise ValueError("naive datetime; attach a timezone")
    return int(dt.timestamp()) * NS + dt.microsecond * 1000


def ny_datetime(d: str | date, hhmm: str) -> datetime:
    """The NY wall-clock time ``hhmm`` ("09:35") on date ``d`` as an aware datetime."""
    day = date.fromisoformat(d) if isinstance(d, str) else d
    h, m = (int(x) for x in hhmm.split(":"))
    return datetime.combine(day, dtime(h, m), tzinfo=NY)


def ny_trade_date(ts: int) -> str:
    """The NY calendar date (``YYYY-MM-DD``) of an epoch-ns instant."""
    return ns_to_dt(ts, NY).date().isoformat()


def ny_time(ts: int) -> str:
    return ns_to_dt(ts, NY).strftime("%H:%M")


class Clock(Protocol):
    def now_ns(self) -> int: ...


class WallClock:
    """The real time. Only shells (workers, CLI) hold one."""

    def now_ns(self) -> int:
        return time.time_ns()


class ReplayClock:
    """Event time set by the replay driver (or a test). Monotonic: it never moves back."""

    def __init__(self, start_ns: int = 0) -> None:
        self._now = start_ns
        self._lock = threading.Lock()

    def now_ns(self) -> int:
        return self._now

    def set(self, ts: int) -> None:
        with self._lock:
            if ts < self._now:
                raise ValueError("replay clock cannot move backwards")
            self._now = ts

    def advance(self, seconds: float) -> int:
        self.set(self._now + int(seconds * NS))
        return self._now


class TradingCalendar:
    """NYSE sessions, holidays and early closes from exchange_calendars."""

    def __init__(self, name: str = "XNYS") -> None:
        import exchange_calendars as xcals

        self._cal = xcals.get_calendar(name, start="2000-01-01")
        self._sessions = [ts.date().isoformat() for ts in self._cal.sessions]
        self._index = {d: i for i, d in enumerate(self._sessions)}

    def is_session(self, d: str) -> bool:
        return d in self._index

    def sessions_in_range(self, start: str, end: str) -> list[str]:
        return [d for d in self._sessions if start <= d <= end]

    def next_session(self, d: str) -> str:
        """The first session strictly after ``d``."""
        import bisect

        i = bisect.bisect_right(self._sessions, d)
        return self._sessions[i]

    def previous_session(self, d: str) -> str:
        """The last session strictly before ``d``."""
        import bisect

        i = bisect.bisect_left(self._sessions, d)
        return self._sessions[i - 1]

    def session_on_or_before(self, d: str) -> str:
        return d if d in self._index else self.previous_session(d)

    @lru_cache(maxsize=4096)  # noqa: B019 - one calendar per process
    def open_close_ns(self, d: str) -> tuple[int, int]:
        """(open, close) of session ``d`` in epoch ns; the close is early on half days."""
        import pandas as pd

        if d not in self._index:
            raise ValueError(f"{d} is not an NYSE session")
        ts = pd.Timestamp(d)
        return int(self._cal.session_open(ts).value), int(self._cal.session_close(ts).value)

    def is_early_close(self, d: str) -> bool:
        _, close = self.open_close_ns(d)
        return ny_time(close) != "16:00"

    def session_of(self, ts: int) -> str | None:
        """The session whose NY date contains ``ts``, or None on a non-session day."""
        d = ny_trade_date(ts)
        return d if d in self._index else None

    def in_window(self, ts: int, start_hhmm: str, end_hhmm: str) -> bool:
        """True when ``ts`` lies in [start, min(end, close)] NY time of a session day."""
        d = self.session_of(ts)
        if d is None:
            return False
        start, end = self.window_bounds(d, start_hhmm, end_hhmm)
        return start <= ts <= end

    def window_bounds(self, d: str, start_hhmm: str, end_hhmm: str) -> tuple[int, int]:
        """[start, end] of a daily window on session ``d``, in epoch ns.

        On an early close the end keeps its distance to the close: 15:55 on a regular
        day (5 min before 16:00) becomes 12:55 on a 13:00 close.
        """
        _, close = self.open_close_ns(d)
        regular_close = dt_to_ns(ny_datetime(d, "16:00"))
        end = dt_to_ns(ny_datetime(d, end_hhmm))
        if close < regular_close:
            end = min(end, close - max(0, regular_close - end))
        return dt_to_ns(ny_datetime(d, start_hhmm)), end

    def current_session(self, ts: int) -> str:
        """The session in force at ``ts``: today's if a session day, else the previous session."""
        return self.session_on_or_before(ny_trade_date(ts))


@lru_cache(maxsize=1)
def calendar() -> TradingCalendar:
    """The process-wide NYSE calendar (loading it takes ~1 s, so it is built once)."""
    return TradingCalendar()


def add_days(d: str, n: int) -> str:
    return (date.fromisoformat(d) + timedelta(days=n)).isoformat()
