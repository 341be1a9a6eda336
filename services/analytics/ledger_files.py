"""The per-date ledger files (shell): ``<ledger_dir>/analytics/<D>.jsonl`` (ledger of record) and
``<D>.journal.jsonl`` (intents, clock, alerts, bar summaries), always rewritten whole from the
sorted records.

Ledger files of a day still open are rewritten when the worker is idle and at the day's CLOSE
(not on every message); a closed day's files are rewritten at once. The ingest marks a file dirty
in the same unit of work that stores the record, so files a dead worker left unwritten are rewritten at
the next start.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from shared.artifacts import under, write_atomic
from shared.settings import Settings

from .ledger import ledger_file_of, ledger_line
from .state import LINES_MAX, State


def ledger_path(s: Settings, date: str, name: str) -> Path:
    return under(s.core.ledger_dir, "analytics", f"{date}.jsonl" if name == "ledger" else f"{date}.journal.jsonl")


def _line(st: State, key: str, rec: bytes, prov: bytes) -> bytes:
    got = st.lines.get((key, rec, prov))
    if got is None:
        if len(st.lines) > LINES_MAX:
            st.lines.clear()
        got = st.lines[(key, rec, prov)] = ledger_line(key, rec, prov)
    return got


def write_ledger(st: State, date: str, records: dict[str, bytes], provs: dict[str, bytes],
                 which: Iterable[str] = ("ledger", "journal")) -> None:
    """One canonical line per record, sorted by key (``ledger.ledger_line``)."""
    for name in which:
        lines = [_line(st, k, v, provs.get(k, b"{}")) for k, v in sorted(records.items()) if ledger_file_of(k) == name]
        path = ledger_path(st.ctx.settings, date, name)
        if lines or path.exists():
            write_atomic(path, b"".join(lines), fsync=st.fsync)


def flush_ledgers(st: State, date: str, which: Iterable[str] = ("ledger", "journal"),
                  records: dict[str, bytes] | None = None, staged: Mapping[str, bytes] | None = None) -> None:
    """Rewrite ledger files of ``date`` (the caller holds the date's lock). A file is marked clean
    before its records are read, so a record ingested meanwhile marks it dirty again. ``staged``: records
    the caller's unit of work stores with this worker's provenance (``DayWork.put_record``), written too."""
    which = tuple(which)
    st.store.mark_clean(date, which)
    recs = records if records is not None else st.store.day(date)
    provs = st.store.day_provenance(date)
    if staged:
        recs = {**recs, **{k: v for k, v in staged.items() if k not in recs}}
        provs = {**{k: st.store.prov for k in staged}, **provs}
    write_ledger(st, date, recs, provs, which)


def flush_dirty(st: State) -> None:
    """Rewrite every ledger file marked dirty, each under its date's lock (never a sealed date's: its records are gone)."""
    for date, names in sorted(st.store.dirty().items()):
        with st.locked(date):
            if st.store.sealed(date):
                st.store.mark_clean(date, tuple(sorted(names)))
            else:
                flush_ledgers(st, date, sorted(names))


def retire(st: State, date: str, keep: int) -> None:
    """After ``date``'s artifacts were written: seal the closed dates older than the ``keep`` newest closed
    ones (their records leave Redis; ``store.seal``), each under its own lock (older than the one the
    caller may hold, so locks are always taken newest first)."""
    for old in st.store.to_seal(date, keep):
        with st.locked(old):
            st.store.seal(old)
