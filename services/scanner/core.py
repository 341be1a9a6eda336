"""The scan's decisions: filters, candidates, the market gate, ranking, the batch (pure).

``symbol_results`` scans a panel (any subset of the universe: a shard) into one
``SymbolResult`` per symbol: either the first filter it failed, with the values that failed,
or its unranked candidate. ``merge`` concatenates shards, applies the market gate, ranks by
(-score, symbol), cuts to ``scan_top_n`` and builds the ``CandidateBatch`` and the rejects
document. ``scan`` is both in one process. No Redis, no clock, no environment.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields

import msgspec
import numpy as np

from shared.alerts import make_alert
from shared.artifacts import provenance
from shared.bars import Panel
from shared.ids import stable_id
from shared.market import equal_weight_index
from shared.schemas import Alert, Candidate, CandidateBatch
from shared.settings import ScannerSettings

from .compute import ANCHORS, BAND_KS, Computed, compute_blocks

# Reject codes, in the order the filters apply (a symbol gets the first that fails).
NO_BARS = "NO_BARS"
NO_BAR_LAST_SESSION = "NO_BAR_LAST_SESSION"
INSUFFICIENT_HISTORY = "INSUFFICIENT_HISTORY"
PRICE_BELOW_MIN = "PRICE_BELOW_MIN"
AVG_VOLUME_LOW = "AVG_VOLUME_LOW"
AVG_DOLLAR_VOLUME_LOW = "AVG_DOLLAR_VOLUME_LOW"
WEEKLY_TREND_DOWN = "WEEKLY_TREND_DOWN"
DAILY_TREND_FAIL = "DAILY_TREND_FAIL"
ATR_BELOW_MIN = "ATR_BELOW_MIN"
ATR_PCT_ABOVE_MAX = "ATR_PCT_ABOVE_MAX"
ATR_PCT_ABOVE_MEDIAN = "ATR_PCT_ABOVE_MEDIAN"
NO_QUALIFYING_ANCHOR = "NO_QUALIFYING_ANCHOR"
STOP_NOT_BELOW_ENTRY = "STOP_NOT_BELOW_ENTRY"  # the structural stop is at or above the AVWAP entry: untradeable long
MARKET_GATE_CLOSED = "MARKET_GATE_CLOSED"
BELOW_TOP_N = "BELOW_TOP_N"
REJECT_CODES = (NO_BARS, NO_BAR_LAST_SESSION, INSUFFICIENT_HISTORY, PRICE_BELOW_MIN, AVG_VOLUME_LOW,
                AVG_DOLLAR_VOLUME_LOW, WEEKLY_TREND_DOWN, DAILY_TREND_FAIL, ATR_BELOW_MIN, ATR_PCT_ABOVE_MAX,
                ATR_PCT_ABOVE_MEDIAN, NO_QUALIFYING_ANCHOR, STOP_NOT_BELOW_ENTRY, MARKET_GATE_CLOSED, BELOW_TOP_N)
CANDIDATE = "CANDIDATE"

# Market gate reason codes (``market_gate_reason`` is "CODE: detail").
GATE_OPEN = "ABOVE_SMA"
GATE_OFF = "GATE_OFF"
GATE_BELOW = "MARKET_BELOW_SMA"
GATE_MISSING = "MARKET_SYMBOL_MISSING"
GATE_STALE = "MARKET_SYMBOL_STALE"
GATE_SHORT = "MARKET_HISTORY_SHORT"
BARS_STALE = "BARS_STALE"

SETUPS = ("RECLAIM", "PULLBACK", "BAND1", "CONFLUENCE")
PRICE_DECIMALS = 4  # prices and scores in messages (docs/ARCHITECTURE.md "Money")


class SymbolResult(msgspec.Struct, frozen=True, kw_only=True):
    """One symbol's outcome: ``code`` is "" for a candidate (``candidate`` set, unranked)."""

    symbol: str
    code: str
    values: dict[str, object] = {}
    candidate: Candidate | None = None


@dataclass(frozen=True)
class Gate:
    ok: bool
    reason: str


@dataclass
class ScanResult:
    batch: CandidateBatch
    rejects: dict[str, object]  # the rejects document (canonical-JSON ready)
    results: list[SymbolResult]


class Columns:
    """A ``Computed`` as Python lists (``tolist``: the same values as Python floats, ints and bools), for
    the per-symbol decisions: indexing a list is many times cheaper than making a numpy scalar."""

    def __init__(self, cp: Computed) -> None:
        for f in fields(cp):
            setattr(self, f.name, getattr(cp, f.name).tolist())

    def __getattr__(self, name: str) -> list:  # the fields set above (for type checkers)
        raise AttributeError(name)


def _f(x: float | np.floating) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _r(x: float | np.floating, d: int = PRICE_DECIMALS) -> float:
    x = float(x)
    return round(x, d) + 0.0 if math.isfinite(x) else 0.0


def trend_tier(score: float, p: ScannerSettings) -> str:
    if score >= p.scan_tier_strong:
        return "STRONG"
    return "MODERATE" if score >= p.scan_tier_moderate else "WEAK"


def _anchor_detail(cp: Columns, j: int, k: int, dates: list[str], p: ScannerSettings) -> dict[str, object]:
    kind = ANCHORS[k][0]
    if not cp.anchor_ok[k][j]:
        return {"kind": kind, "fail": "NONE"}
    av, dist, slope, rec = cp.avwap[k][j], cp.dist[k][j], cp.slope[k][j], bool(cp.reclaim[k][j])
    if not cp.close[j] > av:
        fail = "CLOSE_NOT_ABOVE_AVWAP"
    elif not (slope >= p.scan_min_slope_pct or rec):
        fail = "SLOPE_TOO_NEGATIVE"
    elif not dist <= p.scan_max_dist_pct:
        fail = "TOO_FAR_ABOVE_AVWAP"
    elif not cp.qualifies[k][j]:
        fail = "SCORE_UNDEFINED"
    else:
        fail = ""
    return {"kind": kind, "date": dates[int(cp.anchor_row[k][j])], "avwap": _f(av), "dist_pct": _f(dist),
            "slope_pct": _f(slope), "reclaim": rec, "score": _f(cp.score[k][j]), "fail": fail}


def _first_failure(cp: Columns, j: int, dates: list[str], last_session: str, p: ScannerSettings
                   ) -> tuple[str, dict[str, object]]:
    """The first failing filter of column ``j`` and the values that failed ("" when none)."""
    last = int(cp.last_row[j])
    last_date = dates[last] if last >= 0 else ""
    if last_date != last_session:
        return NO_BAR_LAST_SESSION, {"last_bar": last_date, "expected": last_session}
    n = int(cp.bars[j])
    if n < p.scan_min_history:
        return INSUFFICIENT_HISTORY, {"bars": n, "min": p.scan_min_history}
    close = cp.close[j]
    if not close >= p.scan_min_price:
        return PRICE_BELOW_MIN, {"close": _f(close), "min": p.scan_min_price}
    if not cp.avg_volume[j] >= p.scan_min_avg_volume:
        return AVG_VOLUME_LOW, {"avg_volume": _f(cp.avg_volume[j]), "min": p.scan_min_avg_volume}
    if not cp.avg_dollar_volume[j] >= p.scan_min_avg_dollar_volume:
        return AVG_DOLLAR_VOLUME_LOW, {"avg_dollar_volume": _f(cp.avg_dollar_volume[j]),
                                       "min": p.scan_min_avg_dollar_volume}
    if not cp.sma_w_fast[j] > cp.sma_w_slow[j]:
        return WEEKLY_TREND_DOWN, {"sma_w_fast": _f(cp.sma_w_fast[j]), "sma_w_slow": _f(cp.sma_w_slow[j])}
    if not (close > cp.sma20[j] >= cp.sma50[j]):
        return DAILY_TREND_FAIL, {"close": _f(close), "sma20": _f(cp.sma20[j]), "sma50": _f(cp.sma50[j]),
                                  "sma200": _f(cp.sma200[j])}
    if not cp.atr[j] >= p.scan_min_atr:
        return ATR_BELOW_MIN, {"atr": _f(cp.atr[j]), "min": p.scan_min_atr}
    if not cp.atr_pct[j] <= p.scan_max_atr_pct:
        return ATR_PCT_ABOVE_MAX, {"atr_pct": _f(cp.atr_pct[j]), "max": p.scan_max_atr_pct}
    if not cp.atr_pct[j] <= cp.atr_pct_median[j]:
        return ATR_PCT_ABOVE_MEDIAN, {"atr_pct": _f(cp.atr_pct[j]), "median": _f(cp.atr_pct_median[j])}
    if cp.best[j] < 0:
        return NO_QUALIFYING_ANCHOR, {"close": _f(close), "trend_score": _f(cp.trend_score[j]),
                                      "anchors": [_anchor_detail(cp, j, k, dates, p) for k in range(len(ANCHORS))]}
    return "", {}


def _candidate(cp: Columns, j: int, symbol: str, sector: str, dates: list[str], scan_date: str,
               p: ScannerSettings) -> Candidate:
    k = int(cp.best[j])
    kind, prio = ANCHORS[k]
    av, sig = float(cp.avwap[k][j]), float(cp.sigma[k][j])
    close, hi, lo = float(cp.close[j]), float(cp.high[j]), float(cp.low[j])
    pivot = (hi + lo + close) / 3.0
    stop = min(float(cp.sma5[j]), float(cp.low5[j])) * p.scan_stop_mult
    dist = float(cp.dist[k][j])
    ts = float(cp.trend_score[j])
    setups = []
    if cp.reclaim[k][j]:
        setups.append("RECLAIM")
    if p.scan_near_min_pct <= dist <= p.scan_near_max_pct:
        setups.append("PULLBACK")
    if close <= av + sig:
        setups.append("BAND1")
    if sum(q[j] for q in cp.qualifies) >= 2:
        setups.append("CONFLUENCE")
    bands = {f"{side}{n}": _r(av + sgn * n * sig) for n in BAND_KS for side, sgn in (("L", -1), ("U", 1))}
    return Candidate(
        candidate_id="", scan_date=scan_date, symbol=symbol, trend_tier=trend_tier(ts, p), price=_r(close),
        anchor=kind, anchor_date=dates[int(cp.anchor_row[k][j])], avwap=_r(av), entry_level=_r(av),
        entry_dist_pct=_r(dist), stop_loss=_r(stop), target_r1=_r(2 * pivot - lo), target_r2=_r(pivot + (hi - lo)),
        trend_score=_r(ts), avwap_slope=_r(cp.slope[k][j]), score=_r(cp.score[k][j]), sector=sector, setups=setups,
        band_sigma=_r(sig), bands=bands, anchor_priority=prio, reclaim=bool(cp.reclaim[k][j]), atr=_r(cp.atr[j]),
        atr_pct=_r(cp.atr_pct[j]), adx=_r(cp.adx[j]))


def symbol_results(panel: Panel, universe: Sequence[str], sectors: Mapping[str, str], scan_date: str,
                   last_session: str, p: ScannerSettings) -> list[SymbolResult]:
    """Scan the ``universe`` symbols of ``panel`` (a shard or the whole); one result per symbol, sorted."""
    out: list[SymbolResult] = []
    have = set(panel.symbols)
    for sym in sorted(set(universe) - have):
        out.append(SymbolResult(symbol=sym, code=NO_BARS, values={"bars": 0}))
    sub = panel.select(universe)
    if sub.symbols and panel.dates:
        cp = Columns(compute_blocks(sub.open, sub.high, sub.low, sub.close, sub.volume, panel.dates, p))
        for i, sym in enumerate(sub.symbols):
            code, values = _first_failure(cp, i, panel.dates, last_session, p)
            if code:
                out.append(SymbolResult(symbol=sym, code=code, values=values))
                continue
            cand = _candidate(cp, i, sym, sectors.get(sym, ""), panel.dates, scan_date, p)
            if not cand.stop_loss < cand.entry_level:  # a long whose stop is not below its entry cannot be traded
                out.append(SymbolResult(symbol=sym, code=STOP_NOT_BELOW_ENTRY, values={
                    "entry_level": cand.entry_level, "stop_loss": cand.stop_loss, "anchor": cand.anchor,
                    "anchor_date": cand.anchor_date, "close": cand.price}))
            else:
                out.append(SymbolResult(symbol=sym, code="", candidate=cand))
    else:
        for sym in sub.symbols:
            out.append(SymbolResult(symbol=sym, code=NO_BAR_LAST_SESSION,
                                    values={"last_bar": "", "expected": last_session}))
    return sorted(out, key=lambda r: r.symbol)


# the filters that make a symbol unfit for a universe (no bars, stale, short history, price, liquidity)
LIQUIDITY_FAILURES = (NO_BARS, NO_BAR_LAST_SESSION, INSUFFICIENT_HISTORY, PRICE_BELOW_MIN, AVG_VOLUME_LOW,
                      AVG_DOLLAR_VOLUME_LOW)


def liquidity(panel: Panel, symbols: Sequence[str], last_session: str, p: ScannerSettings) -> dict[str, str]:
    """symbol -> "" when it passes the scan's own price and liquidity filters on ``panel`` (bars through
    ``last_session``), else the first one it fails (``LIQUIDITY_FAILURES``). Trend and setup filters are
    the scan's daily business, not the universe's."""
    return {r.symbol: r.code if r.code in LIQUIDITY_FAILURES else ""
            for r in symbol_results(panel, symbols, {}, last_session, last_session, p)}


def market_gate(panel: Panel, universe: Sequence[str], last_session: str, p: ScannerSettings) -> Gate:
    """The market gate over the full panel (``panel`` includes the gate symbol when it has bars)."""
    if not panel.dates or panel.dates[-1] != last_session:
        got = panel.dates[-1] if panel.dates else "none"
        return Gate(False, f"{BARS_STALE}: last daily bar {got}, expected {last_session}")
    mode, n = p.scan_market_gate, p.scan_market_sma
    if mode == "off":
        return Gate(True, f"{GATE_OFF}: market gate disabled (SCAN_MARKET_GATE=off)")
    if mode == "symbol":
        sym = p.scan_market_symbol
        if sym not in panel.symbols:
            return Gate(False, f"{GATE_MISSING}: no {sym} bars in the history window")
        c = panel.close[:, panel.column(sym)]
        if math.isnan(c[-1]):
            return Gate(False, f"{GATE_STALE}: {sym} has no bar on {last_session}")
        series, label = c[~np.isnan(c)], sym
    else:
        series, label = equal_weight_index(panel.select(universe).close), "universe proxy"
    if len(series) < n:
        return Gate(False, f"{GATE_SHORT}: {label} has {len(series)} bars, SMA{n} needs {n}")
    last, sma = float(series[-1]), float(series[-n:].sum() / n)
    if last >= sma:
        return Gate(True, f"{GATE_OPEN}: {label} close {last:.4f} >= SMA{n} {sma:.4f}")
    return Gate(False, f"{GATE_BELOW}: {label} close {last:.4f} < SMA{n} {sma:.4f}")


def failed_scan(scan_date: str, reason: str, p: ScannerSettings, prov: dict[str, str]) -> ScanResult:
    """The batch of a session whose scan could not run (e.g. an unreadable universe file): gate closed."""
    return merge([], Gate(False, reason), scan_date, 0, prov, p)


def scan_alert(batch: CandidateBatch, ts: int = 0) -> Alert:
    """The Slack summary of a batch (one per session: its id is stable for the batch)."""
    top = ", ".join(f"{c.symbol} ({c.anchor})" for c in batch.candidates[:5]) or "-"
    gate = "open" if batch.market_gate_ok else "CLOSED"
    title = f"scan {batch.scan_date}: {len(batch.candidates)} candidates, market gate {gate}"
    counts = ", ".join(f"{k} {v}" for k, v in batch.counts.items() if k != CANDIDATE) or "-"
    return make_alert("scanner", "scan_summary", title, severity="info" if batch.market_gate_ok else "warning",
                      text=f"top: {top}\ngate: {batch.market_gate_reason}\nrejected: {counts}",
                      fields={"candidates": str(len(batch.candidates)), "gate": batch.market_gate_reason,
                              "universe": str(batch.universe_size), "top": top, "batch_id": batch.batch_id},
                      trade_date=batch.scan_date, ts=ts, dedup=f"scan:{batch.scan_date}:{batch.batch_id}",
                      runbook="scanner")


def universe_hash(universe: Sequence[str], sectors: Mapping[str, str]) -> str:
    return stable_id("", [[s, sectors.get(s, "")] for s in sorted(universe)], length=64)


def scan_provenance(panel: Panel, universe: Sequence[str], sectors: Mapping[str, str], p: ScannerSettings,
                    code: str | None = None) -> dict[str, str]:
    """Provenance of a scan: content hashes of what it read, the scanner settings hash (no paths, no run ids).

    ``code``: the code version, given by the shell (``shared.artifacts.provenance``'s default otherwise)."""
    used = set(universe) | ({p.scan_market_symbol} if p.scan_market_gate == "symbol" else set())
    hist = f"{panel.dates[0]}..{panel.dates[-1]}" if panel.dates else ""
    read = panel.select(sorted(used))
    return provenance(p.strategy_hash(), {"bars": read.content_hash(),
                                          "universe": universe_hash(universe, sectors)}, code=code, history=hist)


def merge(results: Iterable[SymbolResult], gate: Gate, scan_date: str, universe_size: int,
          prov: dict[str, str], p: ScannerSettings, bars_through: str = "") -> ScanResult:
    """Shards -> one batch: gate, rank by (-score, symbol), cut to ``scan_top_n``."""
    results = sorted(results, key=lambda r: r.symbol)
    passed = sorted((r for r in results if not r.code), key=lambda r: (-r.candidate.score, r.symbol))  # type: ignore[union-attr]
    final: dict[str, SymbolResult] = {r.symbol: r for r in results if r.code}
    cands: list[Candidate] = []
    for rank, r in enumerate(passed, start=1):
        c = r.candidate
        assert c is not None
        if not gate.ok:
            final[r.symbol] = msgspec.structs.replace(r, code=MARKET_GATE_CLOSED, values={
                "gate": gate.reason, "score": c.score, "rank": rank})
        elif rank > p.scan_top_n:
            final[r.symbol] = msgspec.structs.replace(r, code=BELOW_TOP_N, values={
                "rank": rank, "top_n": p.scan_top_n, "score": c.score})
        else:
            cid = stable_id("cd", scan_date, c.symbol, c.anchor, c.anchor_date)
            c = msgspec.structs.replace(c, candidate_id=cid, rank=rank)
            cands.append(c)
            final[r.symbol] = msgspec.structs.replace(r, candidate=c)
    counts: dict[str, int] = {}
    for r in final.values():
        counts[r.code or CANDIDATE] = counts.get(r.code or CANDIDATE, 0) + 1
    counts = dict(sorted(counts.items()))
    batch_id = stable_id("cb", scan_date, prov.get("settings_hash", ""), prov.get("input:bars", ""),
                         prov.get("input:universe", ""), gate.ok, [c.candidate_id for c in cands])
    batch = CandidateBatch(batch_id=batch_id, scan_date=scan_date, market_gate_ok=gate.ok,
                           market_gate_reason=gate.reason, candidates=cands, universe_size=universe_size,
                           provenance=prov, counts=counts, market_gate_mode=p.scan_market_gate,
                           bars_through=bars_through)
    rejects = {
        "scan_date": scan_date, "batch_id": batch_id, "market_gate_ok": gate.ok, "market_gate_reason": gate.reason,
        "universe_size": universe_size, "counts": counts, "provenance": prov,
        "rejects": {s: {"code": r.code, "values": r.values} for s, r in sorted(final.items()) if r.code},
    }
    return ScanResult(batch=batch, rejects=rejects, results=[final[s] for s in sorted(final)])


def scan(panel: Panel, universe: Sequence[str] | None, sectors: Mapping[str, str], scan_date: str,
         last_session: str, p: ScannerSettings, results: list[SymbolResult] | None = None,
         code: str | None = None) -> ScanResult:
    """The whole scan. ``universe`` None: every symbol of the panel. ``results``: the per-symbol
    results when computed elsewhere (shards); else computed here in one process."""
    uni = sorted(panel.symbols) if universe is None else sorted(set(universe))
    if results is None:
        results = symbol_results(panel, uni, sectors, scan_date, last_session, p)
    gate = market_gate(panel, uni, last_session, p)
    prov = scan_provenance(panel, uni, sectors, p, code)
    return merge(results, gate, scan_date, len(uni), prov, p, bars_through=panel.dates[-1] if panel.dates else "")
