"""A close of day (shell): load D's records, the history and the bars, call ``core.close_day``,
then write D's artifacts (and report) into files and stage the snapshot on the day's unit of work; the
messages to publish are returned to the worker, which commits them with the snapshot."""

from __future__ import annotations

from pathlib import Path

from shared.artifacts import under, write_json_artifact

from .core import Emit, close_day, close_snapshot, trades_through, unmarked_open
from .ledger_files import flush_ledgers
from .report import build_report
from .state import MEMO_MAX, State
from .store import DayWork


def process_close(st: State, date: str, work: DayWork) -> list[Emit]:
    """Write every artifact of ``date`` from the stored records and stage the snapshot on ``work`` (the caller
    holds D's lock); returns the messages to publish."""
    store, bars, cfg = st.store, st.bars, st.close_cfg
    art = Path(st.ctx.settings.core.artifacts_dir)
    bars.refresh(date)
    records = store.day(date)
    snap = close_snapshot(records)
    flush_ledgers(st, date, records=records)
    if snap is None:
        return []
    st.sync_history()
    if len(st.trade_memo) > MEMO_MAX:
        st.trade_memo.clear()
    trades = trades_through(st.history, date, snap.ts, bars.source(), cfg, st.trade_memo)
    marks = bars.closes(date)
    for symbol in unmarked_open(trades, marks):
        c = bars.last_close(symbol, date)
        if c is not None:
            marks[symbol] = c
    prior = [p.equity for d, p in store.snapshots().items() if d < date]
    out = close_day(date, snap, records, st.history, trades, marks, prior, cfg)
    work.put_snapshot(date, out.portfolio)
    for folder, artifact in (("portfolio_snapshots", out.portfolio), ("reconciliation", out.reconciliation),
                             ("trades", out.trades), ("rejections", out.rejections)):
        write_json_artifact(under(art, folder, f"{date}.json"), artifact, fsync=st.fsync)
    if cfg.report_on_close:
        build_report(art, date, fsync=st.fsync)
    return out.emits
