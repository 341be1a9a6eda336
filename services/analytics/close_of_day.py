"""A close of day (shell): load D's records, the history and the bars, call ``core.close_day``,
then write D's artifacts (and report) into files and stage the snapshot on the day's unit of work; the
messages to publish are returned to the worker, which commits them with the snapshot.

The alerts a close publishes (the daily report, a reconciliation mismatch) come back to analytics on
``avwap:alerts`` as records of D, already closed. Their records are staged with the close and written into
D's journal now, so that their ingest finds them stored and does nothing; otherwise each would rewrite the
journal once more, under D's lock, after every close. The journal's bytes are the same either way."""

from __future__ import annotations

from pathlib import Path

from shared.artifacts import under, write_json_artifact
from shared.streams import ALERTS

from .core import Emit, close_day, close_snapshot, trades_through, unmarked_open
from .ledger_files import flush_ledgers
from .report import build_report
from .state import MEMO_MAX, State
from .store import DayWork, Record, record_of

OWN_INGESTED = (ALERTS,)  # the streams analytics publishes on and also consumes (worker.SPEC)


def own_records(emits: list[Emit], date: str, stored: dict[str, bytes]) -> list[Record]:
    """The records of ``date`` that the messages in ``emits`` will be ingested as, and not yet stored."""
    recs = (record_of(m) for stream, m in emits if stream in OWN_INGESTED)
    return [r for r in recs if r is not None and r.date == date and r.key not in stored]


def process_close(st: State, date: str, work: DayWork, *, publishing: bool = True) -> list[Emit]:
    """Write every artifact of ``date`` from the stored records and stage the snapshot on ``work`` (the caller
    holds D's lock); returns the messages to publish. ``publishing``: the caller commits them (not when a late
    record rewrites a closed day's artifacts: then no record of them is staged either)."""
    store, bars, cfg = st.store, st.bars, st.close_cfg
    art = Path(st.ctx.settings.core.artifacts_dir)
    bars.refresh(date)
    records = store.day(date)
    snap = close_snapshot(records)
    if snap is None:
        flush_ledgers(st, date, records=records)
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
    own = own_records(out.emits, date, records) if publishing else []
    for rec in own:
        work.put_record(rec)
    flush_ledgers(st, date, records=records, staged={rec.key: rec.data for rec in own})
    for folder, artifact in (("portfolio_snapshots", out.portfolio), ("reconciliation", out.reconciliation),
                             ("trades", out.trades), ("rejections", out.rejections)):
        write_json_artifact(under(art, folder, f"{date}.json"), artifact, fsync=st.fsync)
    if cfg.report_on_close:
        build_report(art, date, fsync=st.fsync)
    return out.emits
