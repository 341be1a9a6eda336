"""Benchmark: the analytics worker over a long, busy replay (real daily bars, a realistic message mix).

Every session carries what the five services publish in a PAPER_SIM replay: clock events, the
pre-market / open / close broker snapshots (with the positions and live stops held), a candidate
batch, entry and stop intents, order events (accepted + filled) for entries and stop-outs, exit
events (resolve / ratchet every session for every open position / trigger / close), rejections,
executor alerts and the daily bar batch of every symbol. Up to ``--positions`` positions are open
at a time, each held ``--hold`` sessions unless its ratcheted stop is hit first.

The worker runs as live, on a real Redis (a private redis-server, or ``--redis-url`` pointing at an EMPTY
database): each session's messages are published, then its consumer reads, handles and commits them.
Reference, measured in the same run on the same messages: the ingest alone (each record stored once in
its unit of work, which any analytics worker must do) — the ratio is the cost of everything else
(reading the streams, decisions, ledgers, snapshot, reconciliation, trades, rejections).
``growth`` = mean CLOSE time of the last 50 sessions / the first 50: ~1 means a CLOSE costs the
same on session 750 as on session 1 (no reload of the whole history).

    make bench-analytics          # or: python bench/bench_analytics.py [--sessions 750] [--report]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.analytics.store import Store, record_of  # noqa: E402
from services.analytics.worker import SPEC  # noqa: E402
from shared.alerts import make_alert  # noqa: E402
from shared.bars import BarStore, frame_to_rows, load_bars  # noqa: E402
from shared.bus import Bus, Delivery  # noqa: E402
from shared.clock import calendar, dt_to_ns, ny_datetime  # noqa: E402
from shared.ids import client_order_id, stable_id  # noqa: E402
from shared.redis_conn import connect, start_redis_server  # noqa: E402
from shared.schemas import (  # noqa: E402
    BarBatch,
    BrokerOrder,
    BrokerPosition,
    BrokerSnapshot,
    Candidate,
    CandidateBatch,
    EntryIntent,
    ExitEvent,
    Message,
    OrderEvent,
    Rejection,
    SessionEvent,
    StopIntent,
)
from shared.service import make_consumer, make_context  # noqa: E402
from shared.settings import load_settings  # noqa: E402
from shared.streams import BARS_1D, BROKER, CANDIDATES, CLOCK, EXITS, INTENTS, ORDERS, REJECTIONS  # noqa: E402

DAILY = ROOT / "data" / "reference" / "sp500_daily_2015_2018.csv.gz"


def at(d: str, hhmm: str) -> int:
    return dt_to_ns(ny_datetime(d, hhmm))


class Position:
    def __init__(self, symbol: str, qty: int, price: float, stop: float, opened: int, intent_id: str) -> None:
        self.symbol, self.qty, self.price, self.stop, self.opened, self.intent_id = symbol, qty, price, stop, opened, intent_id
        self.stop_intent = ""


def order(intent_id: str, sym: str, side: str, kind: str, qty: int, event: str, price: float | None, d: str, ts: int,
          stop: float | None = None, order_type: str = "market") -> OrderEvent:
    coid = client_order_id(intent_id)
    tid = stable_id("t", coid, event) if event == "filled" else ""
    return OrderEvent(event_id=stable_id("oe", coid, event, ts), event=event, mode="PAPER_SIM", intent_id=intent_id,
                      client_order_id=coid, broker_order_id=f"b-{coid[:12]}", symbol=sym, side=side, kind=kind, qty=qty,
                      order_type=order_type, stop_price=stop, filled_qty=qty if event == "filled" else 0,
                      fill_qty=qty if event == "filled" else 0, fill_price=price if event == "filled" else None,
                      avg_fill_price=price if event == "filled" else None, trade_id=tid,
                      fees=round(0.005 * qty, 4) if event == "filled" else 0.0, trade_date=d, ts=ts)


def workload(store: BarStore, days: list[str], max_positions: int, hold: int):
    """Yield (session, [(stream, message), ...]) for every session, in publication order."""
    cal = calendar()
    held: dict[str, Position] = {}
    prev: dict[str, float] = {}
    for i, d in enumerate(days):
        frame = store.read_day("1d", d)
        rows = frame_to_rows(frame)
        bar = {r.symbol: r for r in rows}
        close_ts = cal.open_close_ns(d)[1]
        msgs: list[tuple[str, Message]] = []

        def snap(reason: str, ts: int, d=d, bar=bar) -> BrokerSnapshot:
            pos = [BrokerPosition(symbol=p.symbol, qty=p.qty, avg_entry_price=p.price) for p in sorted(held.values(), key=lambda p: p.symbol)]
            stops = [BrokerOrder(client_order_id=client_order_id(p.stop_intent), broker_order_id="b", symbol=p.symbol, side="sell",
                                 order_type="stop", qty=p.qty, status="new", stop_price=p.stop)
                     for p in sorted(held.values(), key=lambda p: p.symbol) if p.stop_intent]
            return BrokerSnapshot(snapshot_id=stable_id("bs", d, reason), mode="PAPER_SIM", trade_date=d, ts=ts, equity=1e5,
                                  cash=1e5, buying_power=1e5, positions=pos, open_orders=stops, reason=reason)

        msgs += [(CLOCK, SessionEvent(trade_date=d, phase="PRE_MARKET", ts=at(d, "08:30"))), (BROKER, snap("pre_market", at(d, "08:30")))]
        syms = sorted(s for s in bar if s in prev)
        picks = [syms[(i * 7 + k * 31) % len(syms)] for k in range(10)] if syms else []
        cands = [Candidate(candidate_id=stable_id("cd", d, s), scan_date=d, symbol=s, price=prev[s], anchor="YTD",
                           anchor_date=d[:4] + "-01-02", avwap=prev[s], entry_level=prev[s], entry_dist_pct=0.5,
                           stop_loss=round(prev[s] * 0.95, 2), target_r1=prev[s] * 1.05, target_r2=prev[s] * 1.1,
                           trend_score=5.0, avwap_slope=0.1, score=100.0 - k) for k, s in enumerate(dict.fromkeys(picks))]
        msgs.append((CANDIDATES, CandidateBatch(batch_id=stable_id("cb", d), scan_date=d, market_gate_ok=True, candidates=cands)))
        entries: list[Candidate] = []
        for c in cands:
            if len(entries) < 2 and len(held) + len(entries) < max_positions and c.symbol not in held:
                entries.append(c)
            else:
                msgs.append((REJECTIONS, Rejection(rejection_id=stable_id("rj", c.candidate_id), source="risk", symbol=c.symbol,
                                                   trade_date=d, reasons=["MAX_CONCURRENT_POSITIONS"], candidate_id=c.candidate_id,
                                                   ts=at(d, "08:30"))))
        intents = [EntryIntent(intent_id=stable_id("in", c.candidate_id), candidate_id=c.candidate_id, symbol=c.symbol, trade_date=d,
                               qty=max(1, int(10_000 / c.entry_level)), entry_level=c.entry_level, stop_price=c.stop_loss,
                               risk_per_share=c.entry_level - c.stop_loss, notional=10_000.0, ts=at(d, "08:30")) for c in entries]
        msgs += [(INTENTS, e) for e in intents]
        msgs += [(CLOCK, SessionEvent(trade_date=d, phase="OPEN", ts=at(d, "09:30"))), (BROKER, snap("open", at(d, "09:30")))]
        opened_now: list[Position] = []
        for e in intents:
            px = bar[e.symbol].open
            ts = at(d, "09:31")
            msgs += [(ORDERS, order(e.intent_id, e.symbol, "buy", "entry", e.qty, "accepted", None, d, ts, stop=e.stop_price)),
                     (ORDERS, order(e.intent_id, e.symbol, "buy", "entry", e.qty, "filled", px, d, ts + 1, stop=e.stop_price))]
            msgs.append(("avwap:alerts", make_alert("executor", "order_filled", f"Bought {e.qty} {e.symbol}", fields={"price": f"{px:.2f}"},
                                                    trade_date=d, ts=ts + 1)))
            p = Position(e.symbol, e.qty, px, e.stop_price, i, e.intent_id)
            msgs.append((EXITS, ExitEvent(event_id=stable_id("xe", e.intent_id, "resolve"), kind="STOP_RESOLVED", symbol=e.symbol,
                                          position_id=stable_id("xp", e.intent_id), trade_date=d, ts=ts + 2, stop_price=p.stop,
                                          source="initial", qty=p.qty)))
            opened_now.append(p)
        msgs.append((CLOCK, SessionEvent(trade_date=d, phase="WINDOW_OPEN", ts=at(d, "09:35"))))
        for p in held.values():  # stops go live at the first window after the entry session
            if not p.stop_intent:
                si = StopIntent(intent_id=stable_id("si", p.intent_id, d), symbol=p.symbol, trade_date=d, action="place", qty=p.qty,
                                stop_price=p.stop, ts=at(d, "09:35"))
                p.stop_intent = si.intent_id
                msgs += [(INTENTS, si), (ORDERS, order(si.intent_id, p.symbol, "sell", "stop", p.qty, "accepted", None, d, at(d, "09:35") + 1,
                                                       stop=p.stop, order_type="stop"))]
        for p in opened_now:
            held[p.symbol] = p
        msgs.append((BARS_1D, BarBatch(tf="1d", trade_date=d, bars=rows, source="replay", final=True)))
        for sym, p in sorted(held.items()):
            b = bar.get(sym)
            if b is None:
                continue
            pos_id = stable_id("xp", p.intent_id)
            if p.stop_intent and (b.low <= p.stop or i - p.opened >= hold):
                px = p.stop if b.low <= p.stop else b.close
                sell_id = p.stop_intent if b.low <= p.stop else stable_id("xi", p.intent_id)
                kind = "stop" if b.low <= p.stop else "exit"
                msgs += [(ORDERS, order(sell_id, sym, "sell", kind, p.qty, "filled", px, d, close_ts - 2)),
                         (EXITS, ExitEvent(event_id=stable_id("xe", p.intent_id, "trig"), kind="STOP_TRIGGERED", symbol=sym,
                                           position_id=pos_id, trade_date=d, ts=close_ts - 1, stop_price=p.stop, exit_price=px)),
                         (EXITS, ExitEvent(event_id=stable_id("xe", p.intent_id, "closed"), kind="POSITION_CLOSED", symbol=sym,
                                           position_id=pos_id, trade_date=d, ts=close_ts - 1, exit_price=px)),
                         ("avwap:alerts", make_alert("executor", "order_filled", f"Sold {p.qty} {sym}", trade_date=d, ts=close_ts - 2))]
                del held[sym]
                continue
            new_stop = round(max(p.stop, b.close * 0.97), 2)
            if new_stop > p.stop:
                msgs.append((EXITS, ExitEvent(event_id=stable_id("xe", p.intent_id, d), kind="STOP_RATCHET", symbol=sym, position_id=pos_id,
                                              trade_date=d, ts=close_ts, stop_price=new_stop, previous_stop=p.stop, source="daily_swing_low")))
                p.stop = new_stop
        msgs += [(CLOCK, SessionEvent(trade_date=d, phase="CLOSE", ts=close_ts)), (BROKER, snap("close", close_ts))]
        prev = {s: r.close for s, r in bar.items()}
        yield d, msgs


def ingest_once(store: Store, m: Message) -> None:
    """Store one message's record as the worker's ingest does (its unit of work without an input entry)."""
    rec = record_of(m)
    if rec is None:
        return
    for uow in store.unit():
        with uow:
            store.stage(uow, rec, store.seen(rec, uow, guess=uow.attempt == 0))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=750)
    ap.add_argument("--start", default="2016-01-04")
    ap.add_argument("--positions", type=int, default=8)
    ap.add_argument("--hold", type=int, default=6)
    ap.add_argument("--report", action="store_true", help="also write the daily report after each CLOSE")
    ap.add_argument("--redis-url", default="", help="an EMPTY Redis database (default: a private redis-server)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-analytics-"))
    t0 = time.perf_counter()
    res = load_bars(DAILY)
    store = BarStore(tmp / "bars")
    store.import_result(res)
    days = [d for d in store.dates("1d") if d >= args.start][: args.sessions]
    sessions = list(workload(store, days, args.positions, args.hold))
    n_msgs = sum(len(m) for _, m in sessions)
    load_s = time.perf_counter() - t0
    emb = None if args.redis_url else start_redis_server()
    url = args.redis_url or emb.url  # type: ignore[union-attr]
    try:
        r = connect(url)
        if r.dbsize():
            raise SystemExit(f"bench_analytics: {url} is not empty")
        # reference: the idempotent ingestion alone (each record's unit of work, no input entry)
        ingest = Store(r)
        c0 = time.process_time()
        t0 = time.perf_counter()
        for _, msgs in sessions:
            for _, m in msgs:
                ingest_once(ingest, m)
        ref_s = time.perf_counter() - t0
        ref_cpu_s = time.process_time() - c0
        r.flushdb()
        settings = load_settings(artifacts_dir=str(tmp / "art"), ledger_dir=str(tmp / "ledger"), bars_dir=str(tmp / "bars"),
                                 report_on_close=args.report, execution_mode="PAPER_SIM")
        ctx = make_context("analytics", settings, r)
        consumer = make_consumer(SPEC, ctx, consumer_name="bench")
        consumer.ensure_groups()
        inner = consumer.handler
        closes: list[float] = []

        def timed(m: Message, d: Delivery):  # noqa: ANN202
            t1 = time.perf_counter()
            out = inner(m, d)
            if isinstance(m, BrokerSnapshot) and m.reason == "close":
                closes.append(time.perf_counter() - t1)
            return out

        consumer.handler = timed
        bus = Bus(r)
        c0 = time.process_time()
        t0 = time.perf_counter()
        for _, msgs in sessions:  # a session published at once, then read, handled and committed as live
            bus.publish_many(msgs)
            while consumer.step(block=False):
                pass
        total_s = time.perf_counter() - t0
        cpu_s = time.process_time() - c0
        trades = json.loads(sorted((tmp / "art" / "trades").glob("*.json"))[-1].read_bytes())["trades"]
    finally:
        if emb is not None:
            emb.stop()
    n = len(closes)
    w = min(50, n)
    first, last = sum(closes[:w]) / w, sum(closes[-w:]) / w
    print(f"workload: {n} sessions {days[0]}..{days[-1]}, {len(res.symbols())} symbols, {n_msgs} messages "
          f"(built in {load_s:.1f}s); open trades at the end {sum(1 for t in trades if t['status'] == 'open')}")
    print(f"analytics: {total_s:.2f}s total ({cpu_s:.2f}s cpu in this process), {n_msgs / total_s:.0f} msgs/s; CLOSE mean {1000 * sum(closes) / n:.1f} ms, "
          f"first {w} {1000 * first:.1f} ms, last {w} {1000 * last:.1f} ms (growth x{last / first:.2f})")
    print(f"reference (the ingest alone) {ref_s:.2f}s ({ref_cpu_s:.2f}s cpu); ratio analytics/reference {total_s / ref_s:.1f}; report={args.report}")
    print(json.dumps({"sessions": n, "messages": n_msgs, "total_s": round(total_s, 3), "cpu_s": round(cpu_s, 3), "reference_cpu_s": round(ref_cpu_s, 3), "msgs_per_s": round(n_msgs / total_s, 1),
                      "close_ms_mean": round(1000 * sum(closes) / n, 2), "close_ms_first": round(1000 * first, 2),
                      "close_ms_last": round(1000 * last, 2), "growth": round(last / first, 3), "reference_s": round(ref_s, 3),
                      "ratio": round(total_s / ref_s, 2), "report": args.report}, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
