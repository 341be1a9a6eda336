"""Work computed ahead of the message that needs it, kept only while its inputs are unchanged.

The scanner computes, at CLOSE of D, what PRE_MARKET of the next session will ask for (its scan, a
pure function of the bars before that session and the universe file) in one background thread, so
the CLOSE entry is acked at once and the work overlaps the other services' close of day. PRE_MARKET takes the result and uses it only if ``Kept.fits``: the
same session, a bit-identical panel and the same universe file bytes; otherwise it computes afresh.
Same inputs, same pure function: the same bytes as if computed at PRE_MARKET (docs/performance.md).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np

from shared.bars import FIELDS, Panel

log = logging.getLogger(__name__)
T = TypeVar("T")


def file_stamp(path: str | None) -> str:
    """A file's content as a key ("" unset; "missing" unreadable: never fits, the fresh path reports it)."""
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
class Kept(Generic[T]):
    """A result computed ahead with what it was computed from (the panel is a read-only view:
    ``BarStore.daily_panel`` never changes a panel it handed out)."""

    session: str
    panel: Panel
    stamp: str  # file_stamp of the universe file
    value: T

    def fits(self, session: str, panel: Panel, stamp: str) -> bool:
        return session == self.session and stamp == self.stamp and stamp != "missing" and same_panel(panel, self.panel)


class Ahead(Generic[T]):
    """One background computation at a time; ``take`` waits for it and hands its result over once."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-ahead")
        self._future: Future[Kept[T] | None] | None = None

    def start(self, fn: Callable[[], Kept[T]]) -> None:
        """Compute ``fn`` in the background (after waiting for the one before, whose result is dropped)."""
        self.take()
        self._future = self._pool.submit(self._guarded, fn)

    def _guarded(self, fn: Callable[[], Kept[T]]) -> Kept[T] | None:
        try:
            return fn()
        except Exception:  # only a head start: the message that needs it computes afresh (and reports)
            log.warning("%s: the work computed ahead failed; it will be computed when needed", self.name, exc_info=True)
            return None

    def take(self) -> Kept[T] | None:
        fut, self._future = self._future, None
        return fut.result() if fut is not None else None

    def wait(self, timeout: float | None = None) -> Kept[T] | None:
        """The pending result without taking it (tests)."""
        return self._future.result(timeout) if self._future is not None else None

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
