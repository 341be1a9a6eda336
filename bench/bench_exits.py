#!/usr/bin/env python3
"""Exits core benchmark: the whole intraday file through ``services.exits.core`` with a position in every symbol.

24 symbols x 5 sessions of real 1-minute bars (``data/reference/intraday_1min_2019-02-11_15.csv.gz``),
one BarBatch per minute, as the replay driver publishes them. Every symbol is bought at its first
bar (the tracker seeded from nothing, so the stops come from the bars as they arrive), every stop
intent is answered at once (accepted / replaced, through ``core.on_order``), and no stop fills, so all
24 positions stay open the whole week (the worst case). A WINDOW_OPEN starts each session.

Reference, same run: a bare loop over the same batches doing the least per-bar work (a dict lookup,
a compare, a min) -> ``ratio`` = exits / reference (machine-independent). Also: the batch form of the
stop rules (``shared.stops.candidate_stop``, recomputed from the bars at every bar) on a sample, to
show what the incremental tracker saves.

    .venv/bin/python bench/bench_exits.py [--repeat 3]

The last line is one JSON object (``exits_s``, ``bars_per_s``, ``us_per_bar``, ``ratio``, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.exits import core  # noqa: E402
from shared.bars import load_bars  # noqa: E402
from shared.clock import ny_trade_date  # noqa: E402
from shared.schemas import BarBatch, BarRow  # noqa: E402
from shared.stops import StopRules, candidate_stop  # noqa: E402
from tests.exits_helpers import entry_fill, session, stop_event  # noqa: E402

DATA = ROOT / "data" / "reference" / "intraday_1min_2019-02-11_15.csv.gz"
TARGET_S = 1.0


def batches(rows: list[BarRow]) -> list[BarBatch]:
    by_ts: dict[int, list[BarRow]] = {}
    for b in rows:
        by_ts.setdefault(b.ts, []).append(b)
    return [BarBatch(tf="1m", trade_date=ny_trade_date(ts), bars=sorted(v, key=lambda b: b.symbol), source="bench")
            for ts, v in sorted(by_ts.items())]


def run_exits(bs: list[BarBatch]) -> tuple[float, dict[str, int]]:
    p = core.Params()
    index = core.ExitsIndex()
    positions = {}
    first: dict[str, BarRow] = {}
    for b in bs:
        for bar in b.bars:
            first.setdefault(bar.symbol, bar)
    for sym, bar in sorted(first.items()):  # opened before the replay starts: not timed
        d = ny_trade_date(bar.ts)
        res = core.on_order(index, None, entry_fill(sym, 100, bar.close, bar.ts - 1, d, stop=round(bar.close * 0.9, 2)), p,
                            core.History())
        positions.update(res.changed)
    n_intents = n_events = 0

    def answer(res: core.Result) -> None:
        nonlocal n_intents, n_events
        n_intents += len(res.intents)
        n_events += len(res.events)
        for it in res.intents:
            r2 = core.on_order(index, positions[it.symbol], stop_event(it, "accepted" if it.action == "place" else "replaced"), p)
            n_events += len(r2.events)

    days_seen: set[str] = set()
    t0 = time.perf_counter()
    for b in bs:
        if b.trade_date not in days_seen:
            days_seen.add(b.trade_date)
            answer(core.on_session(index, positions, session(b.trade_date, "WINDOW_OPEN"), p))
        answer(core.on_bars(index, positions, b, p))
    dt = time.perf_counter() - t0
    open_now = sum(1 for x in positions.values() if not x.closed)
    return dt, {"intents": n_intents, "events": n_events, "positions_open": open_now}


def run_reference(bs: list[BarBatch]) -> float:
    """The floor: look each bar's position up and keep its lowest low."""
    lows: dict[str, float] = {}
    t0 = time.perf_counter()
    for b in bs:
        for bar in b.bars:
            cur = lows.get(bar.symbol)
            if cur is None or bar.low < cur:
                lows[bar.symbol] = bar.low
    return time.perf_counter() - t0


def batch_rules_us_per_bar(rows: list[BarRow], symbol: str = "AAPL", n: int = 400) -> float:
    """``candidate_stop`` recomputed from all the bars so far at each of the symbol's first ``n`` bars."""
    mine = [b for b in rows if b.symbol == symbol][:n]
    rules = StopRules()
    days: list[str] = []
    t0 = time.perf_counter()
    for i, b in enumerate(mine):
        d = ny_trade_date(b.ts)
        if d not in days:
            days.append(d)
        candidate_stop([], mine[: i + 1], days, rules)
    return (time.perf_counter() - t0) / len(mine) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    args = ap.parse_args()
    t = time.perf_counter()
    res = load_bars(DATA)
    rows = res.rows()
    bs = batches(rows)
    load_s = time.perf_counter() - t
    n_bars = sum(len(b.bars) for b in bs)
    runs = [run_exits(bs) for _ in range(max(args.repeat, 1))]
    exits_s, info = min(runs, key=lambda x: x[0])
    ref_s = min(run_reference(bs) for _ in range(max(args.repeat, 1)))
    batch_us = batch_rules_us_per_bar(rows)
    us = exits_s / n_bars * 1e6
    ok = exits_s <= TARGET_S
    print(f"bars: {n_bars} 1-minute bars, {len({b.symbol for b in rows})} symbols, {len(bs)} batches, "
          f"{len({b.trade_date for b in bs})} sessions (loaded in {load_s:.1f}s; {len(res.rejects)} rejected)")
    print(f"exits core: {exits_s:.3f}s = {n_bars / exits_s:,.0f} bars/s, {us:.1f} us/bar "
          f"(best of {len(runs)}: {', '.join(f'{r[0]:.3f}' for r in runs)}); {info['intents']} intents, "
          f"{info['events']} exit events, {info['positions_open']} positions open at the end")
    print(f"reference (bare loop over the same bars): {ref_s:.4f}s; ratio exits/reference {exits_s / ref_s:.0f}")
    print(f"batch rules (recomputed from the bars at every bar, first 400 AAPL bars): {batch_us:,.0f} us/bar "
          f"-> the incremental tracker is {batch_us / us:,.0f}x cheaper per bar")
    print(f"target: <= {TARGET_S:.1f}s for the whole file -> {'OK' if ok else 'MISSED'} "
          "(2 shared cores: figures are noisy while others run)")
    print(json.dumps({"exits_s": round(exits_s, 4), "bars_per_s": round(n_bars / exits_s), "us_per_bar": round(us, 2),
                      "bars": n_bars, "batches": len(bs), "reference_s": round(ref_s, 5), "ratio": round(exits_s / ref_s, 1),
                      "batch_rules_us_per_bar": round(batch_us, 1), "intents": info["intents"], "events": info["events"],
                      "positions_open": info["positions_open"], "target_s": TARGET_S, "ok": ok}))


if __name__ == "__main__":
    main()
