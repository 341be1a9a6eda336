"""The bar store: daily and 1-minute OHLCV, validated on the way in.

One way to read bars for every service:

- ``load_bars(path)`` reads a vendor file (CSV, CSV.gz or Parquet in the format of
  ``data/reference/``), validates every row and returns the good rows plus one ``Reject``
  (with a reason) per bad row. It never raises on a bad row.
- ``validate_rows(rows)`` applies the same rules to bars arriving from a feed.
- ``BarStore(root)`` keeps bars on disk, one append-only CSV per timeframe and NY trade date
  (``<root>/<tf>/<YYYY-MM-DD>.csv``). ``append`` is idempotent (a re-appended bar replaces the
  earlier copy of the same ``(symbol, ts)`` on read) and crash-safe (a torn last line is
  skipped on read). ``daily_panel(before=D)`` returns aligned numpy arrays of the sessions
  strictly before ``D`` — the scan for ``D`` cannot see ``D`` or later.

Timestamps: ``BarRow.ts`` is the bar's END in UTC epoch ns; a daily bar's ts is its session
close (early closes respected), a 1-minute bar's the end of its minute.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from shared.clock import calendar, ny_trade_date
from shared.schemas import BarRow

TIMEFRAMES = ("1d", "1m")
FIELDS = ("open", "high", "low", "close", "volume")

# Reject reasons, in the order they are checked (a row gets the first that applies).
R_UNPARSABLE = "UNPARSABLE"
R_NAN = "NAN_VALUE"
R_NON_POSITIVE = "NON_POSITIVE_PRICE"
R_NEGATIVE_VOLUME = "NEGATIVE_VOLUME"
R_HIGH_LT_LOW = "HIGH_BELOW_LOW"
R_OPEN_OUTSIDE = "OPEN_OUTSIDE_RANGE"
R_CLOSE_OUTSIDE = "CLOSE_OUTSIDE_RANGE"
R_NOT_SESSION = "NOT_A_SESSION"
R_DUPLICATE = "DUPLICATE_TIMESTAMP"
REJECT_REASONS = (R_UNPARSABLE, R_NAN, R_NON_POSITIVE, R_NEGATIVE_VOLUME, R_HIGH_LT_LOW, R_OPEN_OUTSIDE,
                  R_CLOSE_OUTSIDE, R_NOT_SESSION, R_DUPLICATE)


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

    with np.errstate(invalid="ignore"):
        mark(np.isnan(vals).any(axis=1), R_NAN)
        mark((o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0), R_NON_POSITIVE)
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
    syms = frame["symbol"].to_numpy()
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
    raw = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p, dtype=str, keep_default_na=False)
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
    if o != o or h != h or lo != lo or c != c or v != v:  # NaN
        return R_NAN
    if o <= 0 or h <= 0 or lo <= 0 or c <= 0:
        return R_NON_POSITIVE
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
        for f in FIELDS:
            h.update(np.ascontiguousarray(getattr(self, f), dtype=np.float64).tobytes())
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
        self._day_arrays: dict[str, tuple[tuple[int, int, int], np.ndarray, np.ndarray, int]] = {}
        self._sym_index: dict[str, int] = {}

    # -- writing --------------------------------------------------------------------------
    def path(self, tf: str, trade_date: str) -> Path:
        return self.root / tf / f"{trade_date}.csv"

    def append(self, tf: str, rows: Iterable[BarRow]) -> int:
        """Append bars (grouped by NY trade date). Returns the number of rows written."""
        if tf not in TIMEFRAMES:
            raise ValueError(f"unknown timeframe {tf!r}")
        by_date: dict[str, list[str]] = {}
        for r in rows:
            d = ny_trade_date(r.ts)
            by_date.setdefault(d, []).append(
                f"{r.symbol},{r.ts},{r.open!r},{r.high!r},{r.low!r},{r.close!r},{r.volume!r}\n")
        n = 0
        for d, lines in by_date.items():
            p = self.path(tf, d)
            p.parent.mkdir(parents=True, exist_ok=True)
            with open(p, "a+b") as fh:
                fh.seek(0, os.SEEK_END)
                if fh.tell() > 0:
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) != b"\n":
                        fh.write(b"\n")  # a torn last line stays torn (skipped on read); start clean
                fh.write("".join(lines).encode())
                fh.flush()
                os.fsync(fh.fileno())
            n += len(lines)
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
        return sorted(n[:-4] for n in names if n.endswith(".csv") and not n.startswith("."))

    def read_day(self, tf: str, trade_date: str) -> pd.DataFrame:
        """The bars of one session (last copy of each (symbol, ts) wins; torn lines skipped)."""
        p = self.path(tf, trade_date)
        try:
            size = _version(p.stat())
        except FileNotFoundError:
            return _empty_frame()
        key = (tf, trade_date)
        hit = self._cache.get(key)
        if hit is not None and hit[0] == size:
            return hit[1]
        frame = _parse_day(p.read_bytes())
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
        size = _version(os.stat(os.path.join(self.root, "1d", f"{d}.csv")))
        hit = self._day_arrays.get(d)
        if hit is not None and hit[0] == size:
            return hit[1], hit[2], hit[3]
        f = self.read_day("1d", d)
        idx = np.array([self._sym_index.setdefault(s, len(self._sym_index)) for s in f["symbol"]], dtype=np.int64)
        vals = np.ascontiguousarray(f[list(FIELDS)].to_numpy(dtype=np.float64).T)
        ts = int(f["ts"].iloc[0]) if len(f) else 0
        self._day_arrays[d] = (size, idx, vals, ts)
        return idx, vals, ts

    def daily_panel(self, symbols: Sequence[str] | None = None, before: str | None = None,
                    through: str | None = None, lookback: int | None = None) -> Panel:
        """Daily bars of the selected sessions as aligned arrays (symbols sorted)."""
        ds = self._select_dates("1d", before, through, lookback)
        parts = [self._day_array(d) for d in ds]
        every = symbols is None
        if symbols is None:
            seen = np.zeros(len(self._sym_index), dtype=bool)
            for idx, _, _ in parts:
                seen[idx] = True
            names = {i: s for s, i in self._sym_index.items()}
            symbols = sorted(names[int(i)] for i in np.flatnonzero(seen))
        symbols = list(symbols)
        col = np.full(max(len(self._sym_index), 1), -1, dtype=np.int64)
        for j, s in enumerate(symbols):
            i = self._sym_index.get(s)
            if i is not None:
                col[i] = j
        t, s = len(ds), len(symbols)
        cube = np.full((5, t, s), np.nan)
        ts = np.zeros(t, dtype=np.int64)
        for k, (idx, vals, day_ts) in enumerate(parts):
            j = col[idx]
            if every:
                cube[:, k, j] = vals
            else:
                keep = j >= 0
                cube[:, k, j[keep]] = vals[:, keep]
            ts[k] = day_ts
        return Panel(dates=ds, symbols=symbols, open=cube[0], high=cube[1], low=cube[2], close=cube[3],
                     volume=cube[4], ts=ts)


def _version(st: os.stat_result) -> tuple[int, int, int]:
    """What identifies a day file's content for the caches: appends grow it; a rewrite (the backfill's
    purge after a split, an atomic replace) is a new inode and mtime even at the same size."""
    return st.st_size, st.st_mtime_ns, st.st_ino


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame({"symbol": pd.Series([], dtype=object), "ts": pd.Series([], dtype=np.int64),
                         **{f: pd.Series([], dtype=np.float64) for f in FIELDS}})


def _parse_day(data: bytes) -> pd.DataFrame:
    syms: list[str] = []
    ts: list[int] = []
    vals: list[tuple[float, ...]] = []
    for raw in data.split(b"\n"):
        parts = raw.split(b",")
        if len(parts) != 7:
            continue  # empty or torn line
        try:
            t = int(parts[1])
            v = tuple(float(x) for x in parts[2:])
        except ValueError:
            continue
        syms.append(parts[0].decode())
        ts.append(t)
        vals.append(v)
    if not syms:
        return _empty_frame()
    arr = np.array(vals, dtype=np.float64)
    frame = pd.DataFrame({"symbol": syms, "ts": np.array(ts, dtype=np.int64),
                          **{f: arr[:, i] for i, f in enumerate(FIELDS)}})
    frame = frame.drop_duplicates(["symbol", "ts"], keep="last")
    return frame.sort_values(["ts", "symbol"], kind="stable").reset_index(drop=True)
