"""Everything one analytics worker process keeps (shell): the Redis state, the incremental
history, the bar reads and the caches."""

from __future__ import annotations

from shared.artifacts import canonical_line, code_version, provenance
from shared.service import ServiceContext

from .bars import Bars
from .core import CloseConfig
from .history import History
from .store import Store

MEMO_MAX = 100_000  # trade reconstruction memo entries before it is cleared
LINES_MAX = 200_000  # canonical ledger lines kept before the cache is cleared


class State:
    """One worker process's state (``worker.Analytics.st``)."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        s = ctx.settings
        self.code = code_version()
        self.prov = provenance(s.hash(), {}, code=self.code)
        self.store = Store(ctx.r, canonical_line(self.prov).rstrip(b"\n"), s.analytics.analytics_lock_timeout_s,
                           maxlen=s.core.bus_maxlen)
        self.history = History()
        self.bars = Bars(s.core.bars_dir)
        self.close_cfg = CloseConfig.from_settings(s, self.code)
        self.trade_memo: dict[tuple[object, ...], object] = {}
        self.lines: dict[tuple[str, bytes, bytes], bytes] = {}  # canonical ledger lines by (key, record, provenance)
        self.fsync = s.core.artifacts_fsync

    def locked(self, date: str):
        return self.store.locked(date)

    def sync_history(self) -> None:
        """Read the history logged since the last call (every replica's ingests)."""
        self.history.extend(*self.store.history_since(self.history.pos))
