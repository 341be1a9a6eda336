"""Bar-store reads for marks, excursions and correlation returns (shell: file I/O), memoized per
process (past bars never change)."""

from __future__ import annotations

import bisect

import numpy as np

from shared.bars import BarStore
from shared.schemas import BarRow

from .trades import BarSource

KEEP_DAYS = 400  # daily bar files kept in memory per process (older ones are re-read when needed)


class Bars:
    """Bar-store reads for marks and excursions, memoized per process (past bars never change)."""

    def __init__(self, root: str) -> None:
        self.store = BarStore(root)
        self._dates: dict[str, list[str]] = {}
        self._rows: dict[str, tuple[tuple[int, int, int], dict[str, BarRow]]] = {}  # date -> (file version, symbol -> bar)
        self._ext: dict[tuple[str, str], tuple[str, float, float]] = {}  # (symbol, start) -> (end, max high, min low)

    def refresh(self, date: str | None = None) -> None:
        """Forget the cached date lists (new sessions may have been written); with ``date``, only
        the lists that do not hold ``date`` although its file exists."""
        if date is None:
            self._dates = {}
            return
        for tf in ("1d", "1m"):
            known = self._dates.get(tf)
            if known is not None and date not in known and self.store.path(tf, date).exists():
                del self._dates[tf]

    def returns(self, symbols: list[str], before: str, window: int) -> dict[str, list[float]]:
        """Each symbol's close-to-close returns over the ``window`` sessions before ``before`` (NaN: a missing bar)."""
        p = self.store.daily_panel(symbols=symbols, before=before, lookback=window + 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = p.close[1:] / p.close[:-1] - 1.0
        return {s: r[:, j].tolist() for j, s in enumerate(p.symbols)}

    def dates(self, tf: str) -> list[str]:
        if tf not in self._dates:
            self._dates[tf] = self.store.dates(tf)
        return self._dates[tf]

    def day(self, date: str) -> dict[str, BarRow]:
        """symbol -> its daily bar of ``date`` (re-read when the file changed; the newest KEEP_DAYS kept)."""
        version = self.store.version("1d", date)
        if version is None:
            return {}
        hit = self._rows.get(date)
        if hit is not None and hit[0] == version:
            return hit[1]
        rows = self.store.daily_bars(date)
        self._rows[date] = (version, rows)
        if len(self._rows) > KEEP_DAYS:
            for d in sorted(self._rows)[: len(self._rows) - KEEP_DAYS]:
                del self._rows[d]
        return rows

    def closes(self, date: str) -> dict[str, float]:
        return {s: r.close for s, r in self.day(date).items()}

    def last_close(self, symbol: str, through: str) -> float | None:
        days = self.dates("1d")
        for d in reversed(days[max(0, bisect.bisect_right(days, through) - 10):bisect.bisect_right(days, through)]):
            r = self.day(d).get(symbol)
            if r is not None:
                return r.close
        return None

    def extremes(self, symbol: str, start: str, end: str) -> tuple[float, float] | None:
        """(max high, min low) of the daily bars of ``symbol`` in [start, end], extended session by session."""
        days = self.dates("1d")
        hit = self._ext.get((symbol, start))
        hi, lo = -float("inf"), float("inf")
        if hit is not None and hit[0] <= end:
            _, hi, lo = hit
            i = bisect.bisect_right(days, hit[0])
        else:
            i = bisect.bisect_left(days, start)
        for d in days[i:bisect.bisect_right(days, end)]:
            r = self.day(d).get(symbol)
            if r is not None:
                hi, lo = max(hi, r.high), min(lo, r.low)
        self._ext[(symbol, start)] = (end, hi, lo)
        return (hi, lo) if hi > -float("inf") else None

    def daily_range(self, symbol: str, start: str, end: str) -> list[BarRow]:
        days = self.dates("1d")
        rows = (self.day(d).get(symbol) for d in days[bisect.bisect_left(days, start):bisect.bisect_right(days, end)])
        return [r for r in rows if r is not None]

    def intraday(self, symbol: str, start_ns: int, end_ns: int) -> list[BarRow]:
        if not self.dates("1m"):
            return []
        return self.store.intraday(symbol, start_ns, end_ns)

    def source(self) -> BarSource:
        return BarSource(daily=self.daily_range, intraday=self.intraday, extremes=self.extremes)
