#!/usr/bin/env python3
"""Bus benchmark: shared.bus throughput vs raw redis-py, and one-hop latency at a paced rate.

Throughput: N messages published with ``Bus.publish_many`` (chunks of ``--batch``) then
consumed by a ``Consumer`` (decode, handler, ack) until idle; against raw redis-py pipelined
XADD of the same bytes + XREADGROUP + XACK, in the same run on the same Redis.
Latency: a Consumer in a separate process, messages published one at a time at a paced
``--rate`` msg/s; one hop = publish call start -> handler call (wall-clock ns, same host).

Redis: REDIS_URL, else redis://127.0.0.1:6379/0. Only keys under ``bench:bus:<pid>:`` are
touched and they are deleted afterwards (never FLUSH). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from shared.bus import Bus, Delivery, fields_of  # noqa: E402
from shared.consumer import Consumer  # noqa: E402
from shared.schemas import Message, OrderEvent  # noqa: E402

TARGET_MSGS_PER_S = 10_000
TARGET_RATIO = 0.5
TARGET_P99_MS = 5.0


def sample(i: int, ts: int = 0) -> OrderEvent:
    """A realistic mid-sized message (an entry fill)."""
    return OrderEvent(event_id=f"ev-{i:08d}", event="filled", mode="PAPER_SIM", intent_id=f"in-{i:08d}",
                      client_order_id=f"av-{i:032d}", symbol="AAPL", side="buy", kind="entry", qty=100,
                      filled_qty=100, fill_qty=100, fill_price=187.4321, stop_price=181.25,
                      trade_date="2019-02-11", ts=ts or i)


def bench_bus(r: redis.Redis, prefix: str, n: int, batch: int) -> float:
    stream, group = f"{prefix}:bus", "bench"
    bus = Bus(r)
    seen = 0

    def handle(msg: Message, d: Delivery) -> None:
        nonlocal seen
        seen += 1

    consumer = Consumer(r, group, [stream], handle, name="bench-bus", count=batch, block_ms=100,
                        heartbeat_ttl_s=5, claim_idle_ms=600_000)
    consumer.ensure_groups()
    msgs = [sample(i) for i in range(n)]
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        bus.publish_many([(stream, m) for m in msgs[i:i + batch]])
    consumer.run(install_signals=False, until_idle=True)
    dt = time.perf_counter() - t0
    assert seen == n, (seen, n)
    assert r.xpending(stream, group)["pending"] == 0
    return n / dt


def bench_raw(r: redis.Redis, prefix: str, n: int, batch: int) -> float:
    stream, group = f"{prefix}:raw", "bench"
    r.xgroup_create(stream, group, id="0", mkstream=True)
    payloads = [fields_of(sample(i)) for i in range(n)]
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        pipe = r.pipeline(transaction=False)
        for f in payloads[i:i + batch]:
            pipe.xadd(stream, f, maxlen=200_000, approximate=True)  # type: ignore[arg-type]
        pipe.execute()
    got = 0
    while True:
        resp = r.xreadgroup(group, "raw", {stream: ">"}, count=batch)
        if not resp:
            break
        ids = [eid for _, entries in resp for eid, _ in entries]
        got += len(ids)
        r.xack(stream, group, *ids)
    dt = time.perf_counter() - t0
    assert got == n, (got, n)
    return n / dt


LATENCY_CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
import redis
from shared.consumer import Consumer
lat = []
want = {n}
def handle(msg, d):
    lat.append(time.time_ns() - msg.ts)
    if len(lat) >= want:
        c.request_stop()
r = redis.Redis.from_url({url!r})
c = Consumer(r, "bench", [{stream!r}], handle, name="bench-lat", block_ms=1000, heartbeat_ttl_s=5,
             claim_idle_ms=600_000)
c.ensure_groups()
r.set({ready!r}, 1)
c.run()
print(json.dumps(lat))
"""


def bench_latency(url: str, prefix: str, rate: int, seconds: float, warmup: int) -> list[float]:
    r = redis.Redis.from_url(url)
    stream, ready = f"{prefix}:lat", f"{prefix}:lat-ready"
    n = int(rate * seconds)
    code = LATENCY_CHILD.format(root=str(ROOT), n=n + warmup, url=url, stream=stream, ready=ready)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not r.exists(ready):
        if child.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("latency consumer did not start")
        time.sleep(0.01)
    bus = Bus(r)
    period = 1.0 / rate
    nxt = time.perf_counter()
    for i in range(n + warmup):
        now = time.perf_counter()
        if nxt > now:
            time.sleep(nxt - now)
        nxt += period
        bus.publish(stream, sample(i, ts=time.time_ns()))
    out, _ = child.communicate(timeout=60)
    lat_ns = json.loads(out.strip().splitlines()[-1])[warmup:]
    r.close()
    return [x / 1e6 for x in lat_ns]


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=int(os.environ.get("BENCH_N", "50000")), help="messages per throughput run")
    ap.add_argument("--batch", type=int, default=100, help="publish chunk and read COUNT")
    ap.add_argument("--rounds", type=int, default=3, help="throughput rounds (best of)")
    ap.add_argument("--rate", type=int, default=1000, help="paced rate for the latency run (msg/s)")
    ap.add_argument("--seconds", type=float, default=5.0, help="latency run length")
    args = ap.parse_args()

    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    r = redis.Redis.from_url(url)
    try:
        r.ping()
    except (redis.RedisError, OSError) as exc:
        print(f"bench_bus: cannot reach Redis at {url}: {exc}", file=sys.stderr)
        return 2
    prefix = f"bench:bus:{os.getpid()}"
    print(f"bench_bus: Redis {r.info('server')['redis_version']} at {url}; n={args.n} batch={args.batch} "
          f"rounds={args.rounds}")
    bus_rates, raw_rates = [], []
    try:
        for k in range(args.rounds):
            # alternate the order so neither side always runs on a warmer server
            order = ("bus", "raw") if k % 2 == 0 else ("raw", "bus")
            for which in order:
                p = f"{prefix}:{k}"
                if which == "bus":
                    bus_rates.append(bench_bus(r, p, args.n, args.batch))
                else:
                    raw_rates.append(bench_raw(r, p, args.n, args.batch))
                r.delete(f"{p}:bus", f"{p}:raw")
            print(f"  round {k + 1}: bus {bus_rates[-1]:,.0f} msg/s   raw {raw_rates[-1]:,.0f} msg/s")
        lat = bench_latency(url, prefix, args.rate, args.seconds, warmup=min(200, args.rate))
    finally:
        for key in r.scan_iter(f"{prefix}:*"):
            r.delete(key)
    bus_best, raw_best = max(bus_rates), max(raw_rates)
    ratio = bus_best / raw_best
    p50, p99 = statistics.median(lat), pct(lat, 0.99)
    ok = bus_best >= TARGET_MSGS_PER_S and ratio >= TARGET_RATIO and p99 <= TARGET_P99_MS
    print(f"throughput (best of {args.rounds}): bus {bus_best:,.0f} msg/s, raw {raw_best:,.0f} msg/s, "
          f"ratio {ratio:.2f} (targets >= {TARGET_MSGS_PER_S:,} msg/s, >= {TARGET_RATIO:.0%} of raw)")
    print(f"one-hop latency at {args.rate} msg/s over {len(lat)} msgs: p50 {p50:.3f} ms, p99 {p99:.3f} ms, "
          f"max {max(lat):.3f} ms (target p99 <= {TARGET_P99_MS} ms)")
    print(f"targets: {'MET' if ok else 'NOT MET'}")
    print(json.dumps({"bus_msgs_per_s": round(bus_best), "raw_msgs_per_s": round(raw_best), "ratio": round(ratio, 3),
                      "p50_ms": round(p50, 3), "p99_ms": round(p99, 3), "n": args.n, "batch": args.batch,
                      "rate": args.rate, "targets_met": ok}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
