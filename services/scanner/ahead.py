"""The next session's scan, computed ahead at the previous session's CLOSE.

A scan is a pure function of the panel of bars before its session, the session, the universe file
and the settings (``session.scan_for``). At CLOSE of D the worker runs the scan of the next session
N over the bars it has then, and keeps the result with what it was computed from: the panel
and the universe file's bytes. At PRE_MARKET N it builds N's panel again and uses the
kept result only when N, the panel (bit for bit) and the universe bytes are all the same — the same inputs,
so the same bytes as a scan done then (``tests/test_scanner_worker.py``). Otherwise (a bar arrived
or was corrected after the close, the universe file changed, another session) it scans afresh. A
replay appends each daily bar before the CLOSE, so its scans are all computed ahead, while the CLOSE
work of the other services runs; live, the day's bars usually arrive after the close and the scan
is redone. Sharded scans (``SCAN_SHARDS`` > 1, on rq workers) are never computed ahead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.bars import FIELDS, Panel

from .core import ScanResult


def universe_stamp(path: str | None) -> str:
    """The universe file's content as a key ("" unset; "missing" unreadable: then a fresh scan reports it)."""
    if not path:
        return ""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "missing"


def same_panel(a: Panel, b: Panel) -> bool:
    """Whether two panels hold exactly the same dates, symbols and values (bit for bit, NaN included)."""
    if a.dates != b.dates or a.symbols != b.symbols:
        return False
    for f in (*FIELDS, "ts"):
        x, y = getattr(a, f), getattr(b, f)
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if not np.array_equal(np.ascontiguousarray(x).view(np.uint8), np.ascontiguousarray(y).view(np.uint8)):
            return False
    return True


@dataclass(frozen=True)
class Ahead:
    """A scan computed ahead: its session, the inputs it was computed from, the result and its files."""

    scan_date: str
    panel: Panel  # a read-only view (``BarStore.daily_panel`` never changes a panel it handed out)
    universe: str
    result: ScanResult
    files: dict[str, bytes]

    def fits(self, scan_date: str, panel: Panel, universe: str) -> bool:
        """Whether this is the scan of ``scan_date`` over exactly ``panel`` and ``universe``."""
        return (scan_date == self.scan_date and universe == self.universe and universe != "missing"
                and same_panel(panel, self.panel))
