"""Work computed ahead of the message that needs it, kept only while its inputs are unchanged.

The scanner computes, at CLOSE of D, what PRE_MARKET of the next session will ask for (its scan, a
pure function of the bars before that session and the universe file) in one background thread, so
the CLOSE entry is acked at once and the work overlaps the other services' close of day. PRE_MARKET takes the
result and uses it only if ``Kept.fits``: the same session, the same day files (their versions, as
``BarStore.day_versions`` reads them: what the store's panel cache trusts, so the panel PRE_MARKET would
read is the very panel the scan saw) and the same universe file bytes; otherwise it computes afresh.
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

from shared.bars import Panel, PanelSource

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


@dataclass(frozen=True)
class Kept(Generic[T]):
    """A result computed ahead with what it was computed from: the session, the panel's ``(dates, versions)``
    (``shared.bars.Panel.versions``) and the universe file's stamp."""

    session: str
    source: PanelSource
    stamp: str  # file_stamp of the universe file
    value: T

    @classmethod
    def of(cls, session: str, panel: Panel, stamp: str, value: T) -> Kept[T]:
        return cls(session, (list(panel.dates), panel.versions), stamp, value)

    def fits(self, session: str, source: PanelSource, stamp: str) -> bool:
        """Whether the result stands for ``session`` whose panel would be read from ``source`` (a panel not read
        from a store has no versions and never fits)."""
        return (session == self.session and stamp == self.stamp and stamp != "missing" and bool(self.source[1])
                and source == self.source)


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
