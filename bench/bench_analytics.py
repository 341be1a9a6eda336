"""Analytics per-session cost over a long replay (real daily bars, synthetic fills).

Feeds the analytics handler, session by session, a candidate batch, one entry fill, one exit
fill five sessions later and the CLOSE broker snapshot, on fakeredis, and reports the time per
CLOSE (snapshot + reconciliation + trades + ledgers), with and without the daily report.

    .venv/bin/python bench/bench_analytics.py [--sessions 250] [--report]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import fakeredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.analytics.worker import SPEC  # noqa: E402
from shared.bars import BarStore, load_bars  # noqa: E402
from shared.bus import Delivery  # noqa: E402
from shared.ids import stable_id  # noqa: E402
from shared.schemas import BrokerPosition, BrokerSnapshot, CandidateBatch, OrderEvent  # noqa: E402
from shared.service import make_context  # noqa: E402
from shared.settings import load_settings  # noqa: E402

SYMBOLS = ("AAPL", "AMZN", "JPM", "MSFT", "XOM", "GE", "KO", "PFE", "INTC", "CSCO")


def fill(sym: str, side: str, price: float, ts: int, d: str, kind: str) -> OrderEvent:
    tid = stable_id("t", sym, side, ts)
    return OrderEvent(event_id=stable_id("oe", tid), event="filled", mode="PAPER_SIM", intent_id=tid, client_order_id=tid,
                      symbol=sym, side=side, kind=kind, qty=10, stop_price=price * 0.95 if side == "buy" else None,
                      filled_qty=10, fill_qty=10, fill_price=price, trade_id=tid, trade_date=d, ts=ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=250)
    ap.add_argument("--report", action="store_true", help="also write the daily report after each CLOSE")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-analytics-"))
    res = load_bars(ROOT.parent / "shared" / "data" / "sp500_daily_2015_2018.csv.gz")
    f = res.frame
    res.frame = f[f["symbol"].isin(SYMBOLS) & (f["trade_date"] >= "2017-01-01")].reset_index(drop=True)
    store = BarStore(tmp / "bars")
    store.import_result(res)
    days = store.dates("1d")[: args.sessions]
    settings = load_settings(artifacts_dir=str(tmp / "art"), ledger_dir=str(tmp / "ledger"), bars_dir=str(tmp / "bars"),
                             report_on_close=args.report)
    handle = SPEC.build(make_context("analytics", settings, fakeredis.FakeRedis()))
    held: dict[str, tuple[str, float]] = {}
    times = []
    for i, d in enumerate(days):
        closes = {s: r.close for s in SYMBOLS for r in store.daily(s, through=d, lookback=1) if r.ts}
        ts = next(iter(store.daily(SYMBOLS[0], through=d, lookback=1))).ts
        handle(CandidateBatch(batch_id=stable_id("cb", d), scan_date=d, market_gate_ok=True, candidates=[]),
               Delivery("c", "1-0", 1, "b"))
        sym = SYMBOLS[i % len(SYMBOLS)]
        if sym not in held and sym in closes:
            handle(fill(sym, "buy", closes[sym], ts, d, "entry"), Delivery("o", "1-0", 1, "b"))
            held[sym] = (d, closes[sym])
        for s, (opened, _) in list(held.items()):
            if days.index(opened) == i - 5 and s in closes:
                handle(fill(s, "sell", closes[s], ts, d, "exit"), Delivery("o", "1-0", 1, "b"))
                del held[s]
        snap = BrokerSnapshot(snapshot_id=stable_id("bs", d), mode="PAPER_SIM", trade_date=d, ts=ts, equity=0, cash=0,
                              buying_power=0, reason="close",
                              positions=[BrokerPosition(symbol=s, qty=10, avg_entry_price=p) for s, (_, p) in held.items()])
        t0 = time.perf_counter()
        handle(snap, Delivery("b", "1-0", 1, "b"))
        times.append(time.perf_counter() - t0)
    n = len(times)
    print(f"sessions={n} report={args.report} close: mean={1000 * sum(times) / n:.1f} ms "
          f"first10={1000 * sum(times[:10]) / 10:.1f} ms last10={1000 * sum(times[-10:]) / 10:.1f} ms "
          f"total={sum(times):.1f} s  artifacts in {tmp}")


if __name__ == "__main__":
    main()
