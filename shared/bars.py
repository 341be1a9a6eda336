"""The bar store: daily and 1-minute OHLCV, validated on the way in.

One way to read bars for every service:

- ``load_bars(path)`` reads a vendor file (CSV, CSV.gz or Parquet in the format of
  ``data/reference/``), validates every row and returns the good rows plus one ``Reject``
  (with a reason) per bad row. It never raises on a bad row.
- ``validate_rows(rows)`` applies the same rules to bars arriving from a feed.
- ``BarStore(root)`` keeps bars on disk, one append-only CSV per timeframe and NY trade date
  (``<root>/<tf>/<YYYY-MM-DD>.csv``, rows ``symbol,ts,open,high,low,close,volume`` without a header,
  written and read by the ``csv`` module: a field that could break a row is quoted, and ``append``
  refuses a symbol outside ``SYMBOL_PATTERN`` or a non-finite price anyway). ``append`` is idempotent (a re-appended bar replaces the
  earlier copy of the same ``(symbol, ts)`` on read) and crash-safe (a torn last line is
  skipped on read). ``daily_panel(before=D)`` returns aligned numpy arrays of the sessions
  strictly before ``D`` — the scan for ``D`` cannot see ``D`` or later.

Timestamps: ``BarRow.ts`` is the bar's END in UTC epoch ns; a daily bar's ts is its session
close (early closes respected), a 1-minute bar's the end of its minute.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import math
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from shared.artifacts import fsync_default, under
from shared.clock import calendar, ny_trade_date
from shared.schemas import BarRow
from shared.schemas.types import PRICE_MAX, VOLUME_MAX, is_symbol

TIMEFRAMES = ("1d", "1m")
INF = float("inf")
FIELDS = ("open", "high", "low", "close", "volume")

# Reject reasons, in the order they are checked (a row gets the first that applies).
R_UNPARSABLE = "UNPARSABLE"
R_BAD_SYMBOL = "BAD_SYMBOL"  # not SYMBOL_PATTERN (upper-case letters, digits, '.', '-'; shared.schemas.types)
R_NAN = "NAN_VALUE"
R_NON_FINITE = "NON_FINITE_VALUE"  # inf, -inf, or a number too large for a float (1e400)
R_NON_POSITIVE = "NON_POSITIVE_PRICE"
R_OUT_OF_RANGE = "VALUE_OUT_OF_RANGE"  # a price above PRICE_MAX or a volume above VOLUME_MAX
R_NEGATIVE_VOLUME = "NEGATIVE_VOLUME"
R_HIGH_LT_LOW = "HIGH_BELOW_LOW"
R_OPEN_OUTSIDE = "OPEN_OUTSIDE_RANGE"
R_CLOSE_OUTSIDE = "CLOSE_OUTSIDE_RANGE"
R_NOT_SESSION = "NOT_A_SESSION"
R_DUPLICATE = "DUPLICATE_TIMESTAMP"
REJECT_REASONS = (R_UNPARSABLE, R_BAD_SYMBOL, R_NAN, R_NON_FINITE, R_NON_POSITIVE, R_OUT_OF_RANGE,
                  R_NEGATIVE_VOLUME, R_HIGH_LT_LOW, R_OPEN_OUTSIDE, R_CLOSE_OUTSIDE, R_NOT_SESSION, R_DUPLICATE)


class BarFileError(ValueError):
    """A bar file that cannot be read at all (corrupt or truncated compression, not CSV/Parquet): one line naming it."""


@dataclass(frozen=True)
class Reject:
    """One refused row: where it was, what it was, and why."""

    line: int  # 1-based data line in the source (0 when not from a file)
    symbol: str
    when: str  # the row's date/timestamp as written
    reason: str


@dataclass
class LoadResult:
    """Good rows as a frame (columns symbol, ts, trade_date, open..volume; sorted by ts, symbol)."""

    tf: str
    frame: pd.DataFrame
    rejects: list[Reject] = field(default_factory=list)
    source: str = ""

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rejects:
            out[r.reason] = out.get(r.reason, 0) + 1
        return dict(sorted(out.items()))

    @property
    def zero_volume(self) -> int:
        return int((self.frame["volume"] == 0).sum())

    def rows(self) -> list[BarRow]:
        return frame_to_rows(self.frame)

    def by_date(self) -> Iterator[tuple[str, list[BarRow]]]:
        for d, part in self.frame.groupby("trade_date", sort=True):
            yield str(d), frame_to_rows(part)

    def symbols(self) -> list[str]:
        return sorted(self.frame["symbol"].unique().tolist())


def frame_to_rows(frame: pd.DataFrame) -> list[BarRow]:
    cols = [frame[c].to_numpy() for c in ("symbol", "ts", *FIELDS)]
    return [BarRow(symbol=str(s), ts=int(t), open=float(o), high=float(h), low=float(lo), close=float(c),
                   volume=float(v)) for s, t, o, h, lo, c, v in zip(*cols, strict=True)]


def rows_to_frame(rows: Sequence[BarRow]) -> pd.DataFrame:
    frame = pd.DataFrame({
        "symbol": [r.symbol for r in rows],
        "ts": np.array([r.ts for r in rows], dtype=np.int64),
        **{f: np.array([getattr(r, f) for r in rows], dtype=np.float64) for f in FIELDS},
    })
    frame["trade_date"] = [ny_trade_date(int(t)) for t in frame["ts"]] if len(frame) else []
    return frame


def _daily_close_ns(dates: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Session close ns per date string, and a mask of which dates are sessions."""
    cal = calendar()
    uniq = dates.unique()
    close = {}
    for d in uniq:
        if cal.is_session(d):
            close[d] = cal.open_close_ns(d)[1]
    mapped = dates.map(close)
    ok = mapped.notna().to_numpy(dtype=bool)
    ts = mapped.fillna(0).to_numpy(dtype=np.int64)
    return ts, ok


def _validate(frame: pd.DataFrame, line: np.ndarray, when: pd.Series, reasons: np.ndarray) -> tuple[pd.DataFrame, list[Reject]]:
    """Apply the row rules to ``frame``; ``reasons`` holds reasons already found (or "")."""
    vals = frame[list(FIELDS)].to_numpy(dtype=np.float64)
    o, h, lo, c, v = vals.T

    def mark(mask: np.ndarray, reason: str) -> None:
        reasons[(reasons == "") & mask] = reason

    syms = frame["symbol"].to_numpy()
    ok_sym = {s: is_symbol(s) for s in pd.unique(syms)}
    mark(~np.fromiter((ok_sym[s] for s in syms), dtype=bool, count=len(syms)), R_BAD_SYMBOL)
    with np.errstate(invalid="ignore"):
        mark(np.isnan(vals).any(axis=1), R_NAN)
        mark(np.isinf(vals).any(axis=1), R_NON_FINITE)
        mark((o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0), R_NON_POSITIVE)
        mark((vals[:, :4] > PRICE_MAX).any(axis=1) | (v > VOLUME_MAX), R_OUT_OF_RANGE)
        mark(v < 0, R_NEGATIVE_VOLUME)
        mark(h < lo, R_HIGH_LT_LOW)
        mark((o < lo) | (o > h), R_OPEN_OUTSIDE)
        mark((c < lo) | (c > h), R_CLOSE_OUTSIDE)
    # Duplicates among otherwise good rows: the first copy wins.
    good = reasons == ""
    dup = np.zeros(len(frame), dtype=bool)
    if good.any():
        keys = frame.loc[good, ["symbol", "ts"]]
        dup[np.flatnonzero(good)] = keys.duplicated(keep="first").to_numpy()
    mark(dup, R_DUPLICATE)
    bad = np.flatnonzero(reasons != "")
    whens = when.to_numpy()
    rejects = [Reject(int(line[i]), str(syms[i]), str(whens[i]), str(reasons[i])) for i in bad]
    out = frame.loc[reasons == ""].sort_values(["ts", "symbol"], kind="stable").reset_index(drop=True)
    return out, rejects


def load_bars(path: str | os.PathLike[str], tf: str | None = None) -> LoadResult:
    """Read and validate a vendor bar file. ``tf`` is inferred from the header when omitted.

    Daily files have ``date,symbol,open,high,low,close,volume``; intraday files
    ``timestamp_et,...`` with naive America/New_York END-of-minute timestamps.
    """
    p = Path(path)
    raw = _read_raw(p)
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    if p.suffix == ".parquet":
        raw = _parquet_as_text(raw)
    if tf is None:
        tf = "1m" if "timestamp_et" in raw.columns else "1d"
    if tf not in TIMEFRAMES:
        raise ValueError(f"unknown timeframe {tf!r}; expected one of {TIMEFRAMES}")
    time_col = "date" if tf == "1d" else "timestamp_et"
    missing = [c for c in (time_col, "symbol", *FIELDS) if c not in raw.columns]
    if missing:
        raise ValueError(f"{p}: missing columns {missing}")
    n = len(raw)
    reasons = np.full(n, "", dtype=object)
    frame = pd.DataFrame({"symbol": raw["symbol"].astype(str).str.strip()})
    for f in FIELDS:
        col = pd.to_numeric(raw[f], errors="coerce")
        unparsable = col.isna().to_numpy() & ~raw[f].astype(str).str.strip().str.lower().isin(["nan", ""]).to_numpy()
        reasons[(reasons == "") & unparsable] = R_UNPARSABLE
        frame[f] = col.astype(np.float64)
    when = raw[time_col].astype(str).str.strip()
    if tf == "1d":
        dates = pd.to_datetime(when, format="%Y-%m-%d", errors="coerce")
        bad_time = dates.isna().to_numpy().copy()
        dstr = dates.dt.strftime("%Y-%m-%d").where(~dates.isna(), "")
        ts, is_session = _daily_close_ns(dstr)
        frame["ts"] = ts
        frame["trade_date"] = dstr.to_numpy()
    else:
        stamps = pd.to_datetime(when, format="%Y-%m-%d %H:%M:%S", errors="coerce")
        bad_time = stamps.isna().to_numpy().copy()
        local = stamps.dt.tz_localize("America/New_York", ambiguous="NaT", nonexistent="NaT")
        bad_time |= local.isna().to_numpy()
        frame["ts"] = local.dt.tz_convert("UTC").dt.as_unit("ns").astype("int64").where(~local.isna(), 0).to_numpy(dtype=np.int64)
        frame["trade_date"] = stamps.dt.strftime("%Y-%m-%d").where(~stamps.isna(), "").to_numpy()
        cal = calendar()
        sessions = {d: True for d in frame["trade_date"].unique() if d and cal.is_session(d)}
        is_session = frame["trade_date"].map(sessions).notna().to_numpy(dtype=bool)
    reasons[(reasons == "") & bad_time] = R_UNPARSABLE
    reasons[(reasons == "") & (frame["symbol"] == "").to_numpy()] = R_UNPARSABLE
    reasons[(reasons == "") & ~is_session] = R_NOT_SESSION
    line = np.arange(1, n + 1)
    good, rejects = _validate(frame, line, when, reasons)
    return LoadResult(tf=tf, frame=good[["symbol", "ts", "trade_date", *FIELDS]], rejects=rejects, source=str(p))


def _read_raw(p: Path) -> pd.DataFrame:
    """The file as a frame of text columns (Parquet: typed); an unreadable file is one ``BarFileError``."""
    try:
        if p.suffix == ".parquet":
            return pd.read_parquet(p)
        return pd.read_csv(p, dtype=str, keep_default_na=False)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise BarFileError(f"{p}: truncated or corrupt compressed file ({type(exc).__name__}: {exc})") from None
    except UnicodeDecodeError:
        raise BarFileError(f"{p}: not a text CSV bar file (bytes that are not UTF-8)") from None
    except pd.errors.EmptyDataError:
        raise BarFileError(f"{p}: empty file (expected a CSV header like date,symbol,open,high,low,close,volume)") from None
    except pd.errors.ParserError as exc:
        first = (str(exc).splitlines() or [""])[0].replace("Error tokenizing data. ", "").replace("C error: ", "")
        raise BarFileError(f"{p}: not a bar CSV file: rows do not match the header ({first})") from None
    except (OSError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
            raise
        kind = "Parquet" if p.suffix == ".parquet" else "CSV"
        raise BarFileError(f"{p}: not a readable {kind} bar file ({type(exc).__name__}: {exc})") from None


def _parquet_as_text(out: pd.DataFrame) -> pd.DataFrame:
    """A Parquet frame (columns lower-cased) in the CSV reader's shape, in place: the time column as
    text, numbers kept as numbers.

    Parquet stores dates as date/timestamp types; they become ``YYYY-MM-DD`` (daily) or
    ``YYYY-MM-DD HH:MM:SS`` (naive NY intraday) so both formats pass the same checks.
    """
    for col, fmt in (("date", "%Y-%m-%d"), ("timestamp_et", "%Y-%m-%d %H:%M:%S")):
        if col in out.columns and not pd.api.types.is_string_dtype(out[col]) and out[col].dtype != object:
            stamps = pd.to_datetime(out[col], errors="coerce")
            if getattr(stamps.dt, "tz", None) is not None:
                stamps = stamps.dt.tz_convert("America/New_York").dt.tz_localize(None)
            out[col] = stamps.dt.strftime(fmt).fillna("")
        elif col in out.columns:
            out[col] = out[col].astype(str)
    return out


def select_dates(dates: Sequence[str], before: str | None, through: str | None, lookback: int | None) -> list[str]:
    """The sorted ``dates`` dated before ``before`` and through ``through``, the last ``lookback`` of them."""
    ds = [d for d in dates if (before is None or d < before) and (through is None or d <= through)]
    if lookback is not None:
        ds = ds[-lookback:] if lookback > 0 else []
    return ds


def validate_rows(rows: Sequence[BarRow]) -> tuple[list[BarRow], list[Reject]]:
    """The load rules for bars from a feed or a stream (no calendar check: the feed knows its session)."""
    if not rows:
        return [], []
    frame = rows_to_frame(rows)
    reasons = np.full(len(frame), "", dtype=object)
    when = frame["ts"].astype(str)
    good, rejects = _validate(frame, np.zeros(len(frame), dtype=np.int64), when, reasons)
    return frame_to_rows(good), rejects


def row_problem(bar: BarRow) -> str | None:
    """The reject reason of one bar under the load rules (``validate_rows`` without the duplicate
    check), or None. The per-bar form for hot paths: same codes, no frame."""
    o, h, lo, c, v = bar.open, bar.high, bar.low, bar.close, bar.volume
    if not is_symbol(bar.symbol):
        return R_BAD_SYMBOL
    if o != o or h != h or lo != lo or c != c or v != v:  # NaN
        return R_NAN
    if INF in (abs(o), abs(h), abs(lo), abs(c), abs(v)):
        return R_NON_FINITE
    if o <= 0 or h <= 0 or lo <= 0 or c <= 0:
        return R_NON_POSITIVE
    if o > PRICE_MAX or h > PRICE_MAX or lo > PRICE_MAX or c > PRICE_MAX or v > VOLUME_MAX:
        return R_OUT_OF_RANGE
    if v < 0:
        return R_NEGATIVE_VOLUME
    if h < lo:
        return R_HIGH_LT_LOW
    if o < lo or o > h:
        return R_OPEN_OUTSIDE
    if c < lo or c > h:
        return R_CLOSE_OUTSIDE
    return None


@dataclass
class Panel:
    """Aligned daily arrays: ``dates`` (T) × ``symbols`` (S); missing bars are NaN."""

    dates: list[str]
    symbols: list[str]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    ts: np.ndarray  # (T,) session close ns
    # the version of each day's file when the panel was read from a ``BarStore`` (``BarStore.day_versions``:
    # the same versions give the same arrays), else ()
    versions: tuple[tuple[int, int, int], ...] = ()

    def column(self, symbol: str) -> int:
        return self.symbols.index(symbol)

    def select(self, symbols: Sequence[str]) -> Panel:
        """The columns of ``symbols`` that the panel has (in the panel's sorted order); the panel
        itself when that is every column (no copy: callers only read it)."""
        want = set(symbols)
        idx = [j for j, s in enumerate(self.symbols) if s in want]
        if len(idx) == len(self.symbols):
            return self
        return Panel(dates=list(self.dates), symbols=[self.symbols[j] for j in idx],
                     **{f: getattr(self, f)[:, idx] for f in FIELDS}, ts=self.ts.copy())

    def content_hash(self) -> str:
        """sha256 of exactly what a computation over this panel sees (dates, symbols, values)."""
        h = hashlib.sha256()
        h.update("\n".join(self.dates).encode() + b"\x00" + "\n".join(self.symbols).encode() + b"\x00")
        for f in FIELDS:  # the array's own buffer (no copy when it is contiguous float64 already)
            h.update(np.ascontiguousarray(getattr(self, f), dtype=np.float64).data)
        return h.hexdigest()

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, symbols: Sequence[str] | None = None, before: str | None = None,
                   through: str | None = None, lookback: int | None = None) -> Panel:
        """The panel ``BarStore.daily_panel`` would give for the same bars (a loaded file's frame)."""
        f = frame
        if before is not None:
            f = f[f["trade_date"] < before]
        if through is not None:
            f = f[f["trade_date"] <= through]
        ds = select_dates(sorted(f["trade_date"].unique().tolist()), None, None, lookback)
        f = f[f["trade_date"].isin(ds)] if lookback is not None else f
        syms = sorted(f["symbol"].unique().tolist()) if symbols is None else list(symbols)
        t, s = len(ds), len(syms)
        cube = np.full((5, t, s), np.nan)
        ts = np.zeros(t, dtype=np.int64)
        if t and s and len(f):
            row = pd.Index(ds).get_indexer(f["trade_date"])
            col = pd.Index(syms).get_indexer(f["symbol"])
            keep = (row >= 0) & (col >= 0)
            vals = f[list(FIELDS)].to_numpy(dtype=np.float64)
            cube[:, row[keep], col[keep]] = vals[keep].T
            ts[row] = f["ts"].to_numpy(dtype=np.int64)
        return cls(dates=ds, symbols=syms, open=cube[0], high=cube[1], low=cube[2], close=cube[3],
                   volume=cube[4], ts=ts)


class BarStore:
    """Bars on disk under ``root``; see the module docstring. Safe for one writer and many readers."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._cache: dict[tuple[str, str], tuple[tuple[int, int, int], pd.DataFrame]] = {}
        self._day_arrays: dict[str, _Day] = {}
        self._sym_index: dict[str, int] = {}  # symbol -> its index in ``_sym_names`` (the per-day arrays' ``idx``)
        self._sym_names: list[str] = []
        self._daily_dir = os.path.join(self.root, "1d", "")
        # the last panels built, by symbols requested (None: every symbol): a session's panel reuses the
        # previous one's columns for every day whose file version is unchanged (a sliding window)
        self._panels: dict[tuple[str, ...] | None, _PanelCache] = {}

    # -- writing --------------------------------------------------------------------------
    def path(self, tf: str, trade_date: str) -> Path:
        return under(self.root, tf, f"{trade_date}.csv")

    def append(self, tf: str, rows: Iterable[BarRow]) -> int:
        """Append bars (grouped by NY trade date). Returns the number of rows written."""
        if tf not in TIMEFRAMES:
            raise ValueError(f"unknown timeframe {tf!r}")
        by_date: dict[str, list[BarRow]] = {}
        for r in rows:
            problem = _store_problem(r)
            if problem:
                raise ValueError(f"bar store: refusing {r.symbol!r} ts={r.ts}: {problem} (validate bars before appending)")
            by_date.setdefault(ny_trade_date(r.ts), []).append(r)
        n = 0
        for d, day_rows in by_date.items():
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerows((r.symbol, r.ts, r.open, r.high, r.low, r.close, r.volume) for r in day_rows)
            p = self.path(tf, d)
            p.parent.mkdir(parents=True, exist_ok=True)
            with open(p, "a+b") as fh:
                fh.seek(0, os.SEEK_END)
                if fh.tell() > 0:
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) != b"\n":
                        fh.write(b"\n")  # a torn last line stays torn (skipped on read); start clean
                fh.write(buf.getvalue().encode())
                fh.flush()
                if fsync_default(None):  # ARTIFACTS_FSYNC
                    os.fsync(fh.fileno())
            n += len(day_rows)
        return n

    def import_result(self, result: LoadResult) -> int:
        """Write every good row of a loaded file into the store."""
        n = 0
        for _, rows in result.by_date():
            n += self.append(result.tf, rows)
        return n

    # -- reading --------------------------------------------------------------------------
    def dates(self, tf: str = "1d") -> list[str]:
        try:
            names = os.listdir(os.path.join(self.root, tf))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted([n[:-4] for n in names if n[-4:] == ".csv" and n[:1] != "."])

    def read_day(self, tf: str, trade_date: str) -> pd.DataFrame:
        """The bars of one session (last copy of each (symbol, ts) wins; torn lines skipped)."""
        p = self._day_file(tf, trade_date)
        try:
            size = _version(os.stat(p))
        except FileNotFoundError:
            return _empty_frame()
        key = (tf, trade_date)
        hit = self._cache.get(key)
        if hit is not None and hit[0] == size:
            return hit[1]
        with open(p, "rb") as fh:
            frame = _parse_day(fh.read())
        self._cache[key] = (size, frame)
        return frame

    def daily(self, symbol: str, before: str | None = None, through: str | None = None,
              lookback: int | None = None) -> list[BarRow]:
        """One symbol's daily bars of the selected sessions (from the cached per-day arrays)."""
        out: list[BarRow] = []
        for d in self._select_dates("1d", before, through, lookback):
            idx, vals, ts = self._day_array(d)
            i = self._sym_index.get(symbol)
            if i is None:
                continue
            hit = np.flatnonzero(idx == i)
            if len(hit):
                o, h, lo, c, v = (float(x) for x in vals[:, hit[0]])
                out.append(BarRow(symbol=symbol, ts=ts, open=o, high=h, low=lo, close=c, volume=v))
        return out

    def intraday(self, symbol: str | None, start_ns: int, end_ns: int) -> list[BarRow]:
        """1-minute bars with ``start_ns <= ts <= end_ns`` (one symbol, or all when None)."""
        first, last = ny_trade_date(start_ns), ny_trade_date(end_ns)
        out: list[BarRow] = []
        for d in self.dates("1m"):
            if first <= d <= last:
                f = self.read_day("1m", d)
                m = (f["ts"] >= start_ns) & (f["ts"] <= end_ns)
                if symbol is not None:
                    m &= f["symbol"] == symbol
                out.extend(frame_to_rows(f[m]))
        return out

    def _select_dates(self, tf: str, before: str | None, through: str | None, lookback: int | None) -> list[str]:
        return select_dates(self.dates(tf), before, through, lookback)

    def _day_array(self, d: str) -> tuple[np.ndarray, np.ndarray, int]:
        """(symbol indices, OHLCV values (5, n), session ts) of one daily file, cached by its version."""
        day = self._day_part(d, listed=True)
        return day.idx, day.vals, day.ts

    def _day_file(self, tf: str, d: str) -> str:
        """The file of ``tf`` and session ``d``: joined directly for a plain date, else through ``under``
        (which refuses a name that would leave the store)."""
        return os.path.join(self.root, tf, f"{d}.csv") if _PLAIN_DATE.fullmatch(d) else str(self.path(tf, d))

    def _day_part(self, d: str, listed: bool = False) -> _Day:
        """One daily file's arrays, cached by its version (raises FileNotFoundError without a file).
        ``listed``: ``d`` is a name from this store's own listing (``dates``), joined without a check."""
        path = f"{self._daily_dir}{d}.csv" if listed else self._day_file("1d", d)
        size = _version(os.stat(path))
        hit = self._day_arrays.get(d)
        if hit is not None and hit.version == size:
            return hit
        with open(path, "rb") as fh:
            got = _parse_rows(fh.read())
        if got is not None and got[3]:  # in order: the arrays as parsed (what read_day's frame holds)
            syms, tss, vals = got[0].tolist(), got[1], np.ascontiguousarray(got[2].T)
        else:
            f = self.read_day("1d", d)
            syms, tss = f["symbol"].tolist(), f["ts"].to_numpy()
            vals = np.ascontiguousarray(f[list(FIELDS)].to_numpy(dtype=np.float64).T)
        for s in syms:
            if s not in self._sym_index:
                self._sym_index[s] = len(self._sym_names)
                self._sym_names.append(s)
        idx = np.array([self._sym_index[s] for s in syms], dtype=np.int64)
        day = _Day(size, idx, vals, int(tss[0]) if len(syms) else 0, np.asarray(tss, dtype=np.int64))
        self._day_arrays[d] = day
        return day

    def day_versions(self, before: str | None = None, through: str | None = None,
                     lookback: int | None = None) -> PanelSource:
        """The sessions ``daily_panel`` would read for the same selection, and their files' versions: equal to a
        panel's ``(dates, versions)`` exactly when that panel is what ``daily_panel`` would return now (the
        panel cache trusts the same versions), without reading or assembling anything."""
        ds = self._select_dates("1d", before, through, lookback)
        return ds, tuple(_version(os.stat(f"{self._daily_dir}{d}.csv")) for d in ds)

    def version(self, tf: str, trade_date: str) -> tuple[int, int, int] | None:
        """What identifies the content of one session's file (size, mtime, inode), or None without a file."""
        try:
            return _version(os.stat(self._day_file(tf, trade_date)))
        except FileNotFoundError:
            return None

    def daily_bars(self, trade_date: str) -> dict[str, BarRow]:
        """symbol -> its daily bar of ``trade_date``, the last copy of each symbol's rows as ``read_day``
        orders them ({} without a file); from the arrays ``daily_panel`` reads too, so a file is parsed once."""
        try:
            day = self._day_part(trade_date)
        except FileNotFoundError:
            return {}
        names = self._sym_names
        o, h, lo, c, v = day.vals.tolist()
        return {names[i]: BarRow(symbol=names[i], ts=t, open=a, high=b, low=x, close=y, volume=z)
                for i, t, a, b, x, y, z in zip(day.idx.tolist(), day.row_ts.tolist(), o, h, lo, c, v, strict=True)}

    def daily_panel(self, symbols: Sequence[str] | None = None, before: str | None = None,
                    through: str | None = None, lookback: int | None = None) -> Panel:
        """Daily bars of the selected sessions as aligned arrays (symbols sorted). The arrays are
        read-only views of a buffer the store keeps (``_PanelCache``): a window that slid on (the next
        session's) only writes its new days into the buffer's unwritten slots; another window copies
        the days it shares with the last one; a day whose file changed is assembled afresh."""
        ds = self._select_dates("1d", before, through, lookback)
        parts = [self._day_part(d, listed=True) for d in ds]
        every = symbols is None
        if symbols is None:
            seen = np.zeros(len(self._sym_index), dtype=bool)
            for day in parts:
                seen[day.idx] = True
            symbols = sorted(self._sym_names[int(i)] for i in np.flatnonzero(seen))
        symbols = list(symbols)
        t, s = len(ds), len(symbols)
        versions = [p.version for p in parts]
        key = None if every else tuple(symbols)
        prev = self._panels.get(key)
        slid = _slide(prev, symbols, ds, versions) if prev is not None else None
        if slid is not None:  # the window moved on: the new days go into the buffer's untouched slots
            c, start = slid, slid.end - t
            todo = range(t - (slid.end - prev.end), t)  # the days after the last panel's
            c.buf.flags.writeable = True
            c.tbuf.flags.writeable = True
        else:
            c = _PanelCache(dates=[], versions=[], symbols=symbols, buf=np.full((5, t + _SLACK, s), np.nan),
                            tbuf=np.zeros(t + _SLACK, dtype=np.int64), start=0, end=t)
            start = 0
            todo = range(t)
            if prev is not None and prev.symbols == symbols:  # reuse the days the two windows share
                where = {(d, v): k for k, (d, v) in enumerate(zip(prev.dates, prev.versions, strict=True))}
                reuse = [(k, prev.start + where[dv]) for k, dv in enumerate(zip(ds, versions, strict=True))
                         if dv in where]
                if reuse:
                    new_k, old_k = (np.array(x, dtype=np.int64) for x in zip(*reuse, strict=True))
                    c.buf[:, new_k, :] = prev.buf[:, old_k, :]
                    c.tbuf[new_k] = prev.tbuf[old_k]
                    done = set(new_k.tolist())
                    todo = [k for k in range(t) if k not in done]
        cube, ts = c.buf[:, start:start + t, :], c.tbuf[start:start + t]
        if todo:
            col = np.full(max(len(self._sym_index), 1), -1, dtype=np.int64)
            for j, sym in enumerate(symbols):
                i = self._sym_index.get(sym)
                if i is not None:
                    col[i] = j
            for k in todo:
                _, idx, vals, day_ts, _ = parts[k]
                j = col[idx]
                if every:
                    cube[:, k, j] = vals
                else:
                    keep = j >= 0
                    cube[:, k, j[keep]] = vals[:, keep]
                ts[k] = day_ts
        c.buf.flags.writeable = False
        c.tbuf.flags.writeable = False
        cube, ts = c.buf[:, start:start + t, :], c.tbuf[start:start + t]  # read-only views
        c.dates, c.versions, c.start = list(ds), versions, start
        self._panels.pop(key, None)
        self._panels[key] = c
        while len(self._panels) > _PANELS_KEPT:
            self._panels.pop(next(iter(self._panels)))
        return Panel(dates=list(ds), symbols=list(symbols), open=cube[0], high=cube[1], low=cube[2], close=cube[3],
                     volume=cube[4], ts=ts, versions=tuple(versions))


PanelSource = tuple[list[str], tuple[tuple[int, int, int], ...]]  # a panel's (dates, file versions)


class _Day(NamedTuple):
    """One daily file as arrays: its version, each row's symbol index, OHLCV (5, rows), the session ts
    (the first row's) and each row's ts."""

    version: tuple[int, int, int]
    idx: np.ndarray
    vals: np.ndarray
    ts: int
    row_ts: np.ndarray


_PLAIN_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_PANELS_KEPT = 4  # panels kept per store (the scanner and the regime ask for one each; analytics a few)


_SLACK = 64  # spare day slots of a panel buffer: a window sliding one day a session reallocates every 64 sessions


@dataclass
class _PanelCache:
    """A panel buffer (5, capacity, S), read-only between calls: the last panel is the view
    ``[start, start + len(dates))``; slots from ``end`` on were never written (NaN). Panels handed out
    are views of it, so a later panel only ever writes slots beyond every earlier one's range."""

    dates: list[str]
    versions: list[tuple[int, int, int]]
    symbols: list[str]
    buf: np.ndarray
    tbuf: np.ndarray
    start: int
    end: int


def _slide(prev: _PanelCache, symbols: list[str], ds: list[str], versions: list[tuple[int, int, int]]) -> _PanelCache | None:
    """``prev`` with ``end`` moved on when the window ``ds`` begins inside the last panel, matches its
    tail day by day (same file versions) and the days after it fit in the buffer's unwritten slots;
    else None (the caller assembles a new buffer)."""
    if prev.symbols != symbols or not ds or not prev.dates or prev.end != prev.start + len(prev.dates):
        return None
    try:
        j = prev.dates.index(ds[0])
    except ValueError:
        return None
    m = len(prev.dates) - j
    if m > len(ds) or prev.dates[j:] != ds[:m] or prev.versions[j:] != versions[:m]:
        return None
    end = prev.start + j + len(ds)
    if end > prev.buf.shape[1]:
        return None
    return _PanelCache(dates=prev.dates, versions=prev.versions, symbols=symbols, buf=prev.buf, tbuf=prev.tbuf,
                       start=prev.start, end=end)


def _version(st: os.stat_result) -> tuple[int, int, int]:
    """What identifies a day file's content for the caches: appends grow it; a rewrite (the backfill's
    purge after a split, an atomic replace) is a new inode and mtime even at the same size."""
    return st.st_size, st.st_mtime_ns, st.st_ino


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame({"symbol": pd.Series([], dtype=object), "ts": pd.Series([], dtype=np.int64),
                         **{f: pd.Series([], dtype=np.float64) for f in FIELDS}})


def _store_problem(r: BarRow) -> str | None:
    """Why a bar may not enter the store (a symbol outside the pattern, a non-finite value), or None."""
    if not is_symbol(r.symbol):
        return R_BAD_SYMBOL
    vals = (r.open, r.high, r.low, r.close, r.volume)
    if not all(isinstance(x, int | float) and math.isfinite(x) for x in vals):
        return R_NON_FINITE
    return None


_KNOWN_SYMBOLS: dict[str, bool] = {}  # symbol text -> matches the pattern (the store repeats a few thousand)


def _symbol_ok(s: str) -> bool:
    ok = _KNOWN_SYMBOLS.get(s)
    if ok is None:
        ok = _KNOWN_SYMBOLS[s] = is_symbol(s)
    return ok


def _columns(rows: list[list[str]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(symbols, ts int64, values (n, 5) float64) of parsed csv rows; raises ValueError on a bad number."""
    cols = list(zip(*rows, strict=True))
    return list(cols[0]), np.array(cols[1], dtype=np.int64), np.array(cols[2:], dtype=np.float64).T


def _parse_rows(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool] | None:
    """(symbols (object), ts int64, values (n, 5) float64, in order) of the good rows of one store file,
    in file order, or None when there are none. "In order": (ts, symbol) strictly increasing, i.e.
    written once, in order (no duplicate to drop, nothing to sort). Torn or malformed rows, symbols
    outside the pattern and non-finite or non-positive prices are skipped (the writer never writes
    them; a hand edit might)."""
    rows = [r for r in csv.reader(io.StringIO(data.decode("utf-8", errors="replace"))) if len(r) == 7]
    if not rows:
        return None
    try:
        syms, ts, arr = _columns(rows)
    except (ValueError, OverflowError):  # a torn or garbled row: keep the rows whose numbers parse
        good = []
        for r in rows:
            try:
                int(r[1]), [float(x) for x in r[2:]]
            except (ValueError, OverflowError):
                continue
            good.append(r)
        if not good:
            return None
        syms, ts, arr = _columns(good)
    with np.errstate(invalid="ignore"):
        keep = np.isfinite(arr).all(axis=1) & (arr[:, :4] > 0).all(axis=1)
    keep &= np.fromiter((_symbol_ok(x) for x in syms), dtype=bool, count=len(syms))
    sym_arr = np.array(syms, dtype=object)
    if not keep.all():
        sym_arr, ts, arr = sym_arr[keep], ts[keep], arr[keep]
    keys = list(zip(ts.tolist(), sym_arr.tolist(), strict=True))
    ordered = all(a < b for a, b in zip(keys, keys[1:], strict=False))
    return sym_arr, ts, arr, ordered


def _parse_day(data: bytes) -> pd.DataFrame:
    """One store file as a frame (``_parse_rows``; the last copy of each (symbol, ts) wins, sorted)."""
    got = _parse_rows(data)
    if got is None:
        return _empty_frame()
    sym_arr, ts, arr, ordered = got
    frame = pd.DataFrame({"symbol": sym_arr, "ts": ts, **{f: arr[:, i] for i, f in enumerate(FIELDS)}})
    if ordered:  # written once, in order: nothing to do
        return frame
    frame = frame.drop_duplicates(["symbol", "ts"], keep="last")
    return frame.sort_values(["ts", "symbol"], kind="stable").reset_index(drop=True)
