"""History backfill: the bar store filled from Alpaca's market-data API (``avwap data backfill``; the feed at start).

In the executor package because it uses the broker keys. Bars come through alpaca-py's
``StockHistoricalDataClient`` (``services.executor.feed.AlpacaData``: paginated by alpaca-py with
``next_page_token``, ``adjustment`` = FEED_ADJUSTMENT (split-adjusted by default), ``feed`` =
FEED_DATA_FEED (iex or sip), every request under the shared broker rate limit), only for sessions
that have closed, validated by ``shared.bars.validate_rows`` exactly as the feed validates (bad rows
rejected with their reason and reported), then appended to the bar store.

Idempotent and resumable. A manifest (``<BARS_DIR>/backfill.json``, written atomically after each
chunk's bars are fsynced) records per timeframe and symbol the contiguous range of sessions fetched
(a session without a bar from the vendor counts as fetched). A run plans only the sessions outside
that range (``plan``, pure); a rerun after success fetches nothing. A crash loses nothing (the
manifest never claims bars that are not on disk) and duplicates nothing: before appending, rows
whose (symbol, ts) the store already holds are dropped, and the store reads a torn last line as absent.

Corporate actions. ``adjustment=split`` history is adjusted as of the request, so after a split the
stored bars of the symbol no longer match what Alpaca serves. Each daily run re-fetches the last
BACKFILL_CHECK_SESSIONS stored sessions of every covered symbol and compares closes
(``adjustment_factor``, pure). A symbol whose stored closes differ is purged from the store (every
timeframe; the purge is recorded in the manifest first and completed on the next run after a crash)
and re-fetched whole, never mixed; the factor (stored / new, 2.0 for a 2:1 split) is reported and
alerted (``history_adjusted``) so an open position's stop and exit state are re-based by it
(``avwap exits rebase``, docs/runbook.md#corporate-actions).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from shared.alerts import make_alert
from shared.bars import BarStore, Reject, validate_rows
from shared.clock import NS, Clock, TradingCalendar, WallClock, calendar, ny_trade_date
from shared.schemas import Alert, BarRow

log = logging.getLogger(__name__)

MANIFEST = "backfill.json"
ADJUST_TOLERANCE = 1e-4  # relative difference of closes that counts as the same bar


class Manifest(msgspec.Struct, kw_only=True):
    """What the backfill has fetched: ``covered[tf][symbol] = [first, last]`` session (inclusive);
    ``purge[tf]``: symbols whose stored rows must go before anything else (a crash mid-purge)."""

    v: int = 1
    covered: dict[str, dict[str, list[str]]] = {}
    purge: dict[str, list[str]] = {}


@dataclass(frozen=True)
class Chunk:
    """One unit of work: ``symbols``' bars of ``tf`` for sessions ``start`` .. ``end`` (inclusive)."""

    tf: str
    symbols: tuple[str, ...]
    start: str
    end: str


@dataclass
class Report:
    chunks: int = 0
    fetched: int = 0  # rows the API returned (good ones)
    written: int = 0  # rows appended to the store (new ones)
    rejects: list[Reject] = field(default_factory=list)
    adjusted: dict[str, float] = field(default_factory=dict)  # symbol -> factor (stored / re-fetched)

    def reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rejects:
            out[r.reason] = out.get(r.reason, 0) + 1
        return dict(sorted(out.items()))


# -- planning (pure) --------------------------------------------------------------------------
def _runs(sessions: Sequence[str], missing: set[str]) -> list[tuple[str, str]]:
    """The maximal runs of consecutive ``sessions`` that are in ``missing``, as (first, last)."""
    out: list[tuple[str, str]] = []
    start = prev = None
    for d in sessions:
        if d in missing:
            start = start or d
            prev = d
        elif start is not None:
            out.append((start, prev))  # type: ignore[arg-type]
            start = None
    if start is not None:
        out.append((start, prev))  # type: ignore[arg-type]
    return out


def plan(manifest: Manifest, tf: str, symbols: Sequence[str], sessions: Sequence[str], *, batch: int,
         max_sessions: int) -> list[Chunk]:
    """The chunks that fetch every (symbol, session) of ``sessions`` outside the manifest's coverage:
    symbols with the same missing runs share chunks of at most ``batch`` symbols and ``max_sessions``
    sessions. Deterministic (sorted)."""
    cov = manifest.covered.get(tf, {})
    by_runs: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for sym in sorted(set(symbols)):
        lo_hi = cov.get(sym)
        missing = {d for d in sessions if not (lo_hi and lo_hi[0] <= d <= lo_hi[1])}
        runs = tuple(_runs(sessions, missing))
        if runs:
            by_runs.setdefault(runs, []).append(sym)
    index = {d: i for i, d in enumerate(sessions)}
    out: list[Chunk] = []
    for runs, syms in sorted(by_runs.items()):
        for a, b in runs:
            days = list(sessions[index[a]:index[b] + 1])
            parts = [days[i:i + max_sessions] for i in range(0, len(days), max_sessions)]
            if index[b] + 1 < len(sessions):  # the run ends where the coverage begins: grow it backwards,
                parts.reverse()               # so each chunk touches what is already covered
            for part in parts:
                for j in range(0, len(syms), batch):
                    out.append(Chunk(tf, tuple(syms[j:j + batch]), part[0], part[-1]))
    return out


def extend(cov: list[str] | None, start: str, end: str, cal: TradingCalendar) -> list[str]:
    """Coverage after fetching ``start .. end``: the union when the two overlap or touch (next sessions),
    else the new range alone (a gap between them is never claimed as fetched)."""
    if cov is None:
        return [start, end]
    touch = not (end < cov[0] or start > cov[1]) or cal.next_session(cov[1]) == start or cal.next_session(end) == cov[0]
    return [min(start, cov[0]), max(end, cov[1])] if touch else [start, end]


def adjustment_factor(stored: Iterable[BarRow], fetched: Iterable[BarRow]) -> float | None:
    """stored close / fetched close over the bars both hold (matched by ts), when they differ by more
    than ADJUST_TOLERANCE (the median ratio: 2.0 after a 2:1 split); None when they agree or share none."""
    new = {b.ts: b.close for b in fetched}
    ratios = sorted(b.close / new[b.ts] for b in stored if b.ts in new and new[b.ts] > 0)
    if not ratios or all(abs(x - 1.0) <= ADJUST_TOLERANCE for x in ratios):
        return None
    return ratios[len(ratios) // 2]


def closed_sessions(cal: TradingCalendar, start: str, now_ns: int) -> list[str]:
    """Sessions from ``start`` whose close is before ``now_ns`` (only finished bars are fetched)."""
    last = cal.session_on_or_before(ny_trade_date(now_ns))
    if cal.open_close_ns(last)[1] > now_ns:
        last = cal.previous_session(last)
    return cal.sessions_in_range(start, last) if start <= last else []


def history_start(cal: TradingCalendar, now_ns: int, sessions: int) -> str:
    """The first of the last ``sessions`` closed sessions before ``now_ns``."""
    d = cal.session_on_or_before(ny_trade_date(now_ns))
    if cal.open_close_ns(d)[1] > now_ns:
        d = cal.previous_session(d)
    for _ in range(sessions - 1):
        d = cal.previous_session(d)
    return d


def report_alerts(report: Report, source: str, ts: int) -> list[Alert]:
    """The operator alerts of a run: one critical ``history_adjusted`` per re-fetched symbol (with the
    re-base step), one warning for rejected bars."""
    out = [make_alert(source, "history_adjusted", f"{sym}: price history adjusted by {f:g} (split or other "
                      "corporate action); its stored history was re-fetched", severity="critical",
                      text=f"If a position in {sym} is open, re-base its exit state: docker compose stop exits; "
                      f"bin/avwap exits rebase {sym} --factor {f:g} --yes; docker compose start exits",
                      ts=ts, dedup=f"adj:{sym}:{f:.6g}", runbook="corporate-actions")
           for sym, f in sorted(report.adjusted.items())]
    if report.rejects:
        out.append(make_alert(source, "bars_rejected", f"backfill: {len(report.rejects)} bars rejected",
                              severity="warning", text=", ".join(f"{r.symbol}:{r.when}:{r.reason}" for r in report.rejects[:20]),
                              ts=ts, dedup=f"bfrej:{ts}:{len(report.rejects)}"))
    return out


# -- the shell ----------------------------------------------------------------------------------
class Backfill:
    """Fills ``store`` from ``source`` (``AlpacaData``); see the module docstring."""

    def __init__(self, source, store: BarStore, *, cal: TradingCalendar | None = None,  # noqa: ANN001 - feed.DataSource
                 clock: Clock | None = None, batch: int = 100, intraday_sessions: int = 5, check_sessions: int = 5,
                 on_chunk: Callable[[Chunk, int, int], None] | None = None) -> None:
        self.source = source
        self.store = store
        self.cal = cal or calendar()
        self.clock = clock or WallClock()
        self.batch, self.intraday_sessions, self.check_sessions = batch, intraday_sessions, check_sessions
        self.on_chunk = on_chunk  # (chunk, done, total) after each chunk: progress bar, heartbeat
        self.path = Path(store.root) / MANIFEST

    # manifest I/O: atomic replace, fsynced
    def load(self) -> Manifest:
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=Manifest)
        except FileNotFoundError:
            return Manifest()

    def save(self, m: Manifest) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write(msgspec.json.encode(m))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _window(self, tf: str, start: str, end: str) -> tuple[int, int]:
        open_ns = self.cal.open_close_ns(start)[0]
        close_ns = self.cal.open_close_ns(end)[1]
        return (open_ns - 12 * 3600 * NS, close_ns) if tf == "1d" else (open_ns, close_ns)

    def _fetch(self, tf: str, symbols: Sequence[str], start: str, end: str, report: Report) -> list[BarRow]:
        lo, hi = self._window(tf, start, end)
        rows = [b for b in self.source.bars(list(symbols), tf, lo, hi)
                if start <= ny_trade_date(b.ts) <= end and b.ts <= self.clock.now_ns()]
        good, rejects = validate_rows(rows)
        if rejects:
            log.warning("backfill: %d %s bars rejected (%s .. %s): %s", len(rejects), tf, start, end,
                        sorted({r.reason for r in rejects}))
            report.rejects.extend(rejects)
        return good

    def _write(self, tf: str, rows: Sequence[BarRow]) -> int:
        """Append the rows the store does not hold yet (by (symbol, ts)); returns how many."""
        by_day: dict[str, list[BarRow]] = {}
        for b in rows:
            by_day.setdefault(ny_trade_date(b.ts), []).append(b)
        new: list[BarRow] = []
        for d, day in sorted(by_day.items()):
            f = self.store.read_day(tf, d)
            have = set(zip(f["symbol"], f["ts"].astype("int64"), strict=True)) if len(f) else set()
            new.extend(b for b in sorted(day, key=lambda r: (r.ts, r.symbol)) if (b.symbol, b.ts) not in have)
        return self.store.append(tf, new) if new else 0

    def _purge(self, m: Manifest) -> None:
        """Complete the recorded purges: each day file rewritten without those symbols (atomic replace)."""
        for tf, syms in sorted(m.purge.items()):
            drop = set(syms)
            for d in self.store.dates(tf):
                p = self.store.path(tf, d)
                lines = p.read_bytes().splitlines(keepends=True)
                keep = [ln for ln in lines if ln.split(b",", 1)[0].decode(errors="replace") not in drop]
                if len(keep) != len(lines):
                    tmp = p.with_suffix(".tmp")
                    with open(tmp, "wb") as fh:
                        fh.write(b"".join(keep))
                        fh.flush()
                        os.fsync(fh.fileno())
                    os.replace(tmp, p)
            for s in syms:
                m.covered.get(tf, {}).pop(s, None)
        if m.purge:
            m.purge = {}
            self.save(m)

    def check_adjustments(self, m: Manifest, symbols: Sequence[str], report: Report) -> None:
        """Re-fetch the last stored sessions of every covered symbol; purge those whose history changed."""
        cov = m.covered.get("1d", {})
        groups: dict[str, list[str]] = {}
        for s in sorted(set(symbols) & set(cov)):
            groups.setdefault(cov[s][1], []).append(s)
        changed: dict[str, float] = {}
        for hi, syms in sorted(groups.items()):
            lo = hi
            for _ in range(self.check_sessions - 1):
                lo = self.cal.previous_session(lo)
            lo = max(lo, min(cov[s][0] for s in syms))
            for j in range(0, len(syms), self.batch):
                part = syms[j:j + self.batch]
                fetched = self._fetch("1d", part, lo, hi, Report())
                for s in part:
                    f = adjustment_factor(self.store.daily(s, through=hi, lookback=self.check_sessions),
                                          [b for b in fetched if b.symbol == s])
                    if f is not None:
                        changed[s] = f
        if not changed:
            return
        for s, f in sorted(changed.items()):
            log.warning("backfill: %s history changed by a corporate action (stored/new close = %.6g); "
                        "re-fetching all of it", s, f)
        m.purge = {"1d": sorted(changed), "1m": sorted(changed)}  # intraday history is adjusted the same way
        self.save(m)  # the purge is on record before a single row goes
        self._purge(m)
        report.adjusted.update(changed)

    def run(self, symbols: Sequence[str], start: str, tf: str = "1d") -> Report:
        """Fetch every missing closed session from ``start`` for ``symbols``; returns what it did."""
        report = Report()
        m = self.load()
        self._purge(m)
        if tf == "1d":
            self.check_adjustments(m, symbols, report)
        sessions = closed_sessions(self.cal, start, self.clock.now_ns())
        chunks = plan(m, tf, symbols, sessions, batch=self.batch, max_sessions=self._max_sessions(tf))
        for i, c in enumerate(chunks, start=1):
            rows = self._fetch(tf, c.symbols, c.start, c.end, report)
            report.fetched += len(rows)
            report.written += self._write(tf, rows)
            cov = m.covered.setdefault(tf, {})
            for s in c.symbols:
                cov[s] = extend(cov.get(s), c.start, c.end, self.cal)
            self.save(m)  # after the rows are on disk (append fsyncs)
            report.chunks += 1
            if self.on_chunk is not None:
                self.on_chunk(c, i, len(chunks))
        return report

    def planned(self, symbols: Sequence[str], start: str, tf: str = "1d") -> list[Chunk]:
        """The chunks ``run`` would fetch now (no adjustment check, nothing fetched)."""
        return plan(self.load(), tf, symbols, closed_sessions(self.cal, start, self.clock.now_ns()), batch=self.batch,
                    max_sessions=self._max_sessions(tf))

    def _max_sessions(self, tf: str) -> int:
        """Sessions per chunk: a daily chunk takes its whole run (alpaca-py pages through it), an
        intraday chunk BACKFILL_INTRADAY_SESSIONS (a small unit of work to lose in a crash)."""
        return 10**6 if tf == "1d" else self.intraday_sessions


def backfill(source, store: BarStore, symbols: Sequence[str], start: str, *, intraday: bool = False,  # noqa: ANN001
             bs=None, clock: Clock | None = None, progress: bool = False,  # noqa: ANN001 - BrokerSettings
             on_chunk: Callable[[Chunk, int, int], None] | None = None) -> dict[str, Report]:
    """Daily (and with ``intraday`` 1-minute) backfill of ``symbols`` from ``start``: what the CLI and the
    feed run. ``progress``: a rich progress bar on the terminal. Returns the report per timeframe."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    kw = {} if bs is None else {"batch": bs.backfill_batch_symbols, "intraday_sessions": bs.backfill_intraday_sessions,
                                "check_sessions": bs.backfill_check_sessions}
    out: dict[str, Report] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  disable=not progress, transient=False) as bar:
        for tf in ("1d", "1m") if intraday else ("1d",):
            task = bar.add_task(f"backfill {tf}", total=None)

            def tick(c: Chunk, i: int, n: int, task: int = task) -> None:
                bar.update(task, completed=i, total=n, description=f"backfill {c.tf} {c.start}..{c.end}")
                if on_chunk is not None:
                    on_chunk(c, i, n)

            bf = Backfill(source, store, clock=clock, on_chunk=tick, **kw)
            out[tf] = bf.run(symbols, start, tf)
            bar.update(task, total=max(out[tf].chunks, 1), completed=max(out[tf].chunks, 1))
    return out


def history_short(store: BarStore, cal: TradingCalendar, now_ns: int, need: int) -> bool:
    """True when the store holds fewer than ``need`` of the last ``need`` closed sessions (the scan's window)."""
    start = history_start(cal, now_ns, need)
    have = [d for d in store.dates("1d") if d >= start]
    return len(have) < need
