#!/usr/bin/env python3
"""A tiny consumer process for the bus tests: echoes each Alert from ``IN`` to ``OUT``.

Usage: bus_consumer.py REDIS_URL GROUP IN OUT NAME [--hang] [--slow SECONDS] [--claim-idle-ms N]

- ``--hang``: the handler records the entry it holds in ``test:inhand`` and then blocks forever
  (the test SIGKILLs the process mid-message).
- ``--slow S``: the handler records ``test:inhand`` and sleeps S seconds per message
  (the test SIGTERMs the process with a batch in hand).
Exits with ``Consumer.run``'s normal path: 0 after SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from shared.bus import Delivery, Emit  # noqa: E402
from shared.consumer import Consumer  # noqa: E402
from shared.schemas import Alert, Message, replace  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    for a in ("url", "group", "stream_in", "stream_out", "name"):
        ap.add_argument(a)
    ap.add_argument("--hang", action="store_true")
    ap.add_argument("--slow", type=float, default=0.0)
    ap.add_argument("--claim-idle-ms", type=int, default=30_000)
    ap.add_argument("--heartbeat-ttl-s", type=int, default=30)
    args = ap.parse_args()
    r = redis.Redis.from_url(args.url)

    def handle(msg: Message, d: Delivery) -> list[Emit]:
        assert isinstance(msg, Alert)
        r.rpush("test:inhand", d.entry_id)
        if args.hang:
            while True:
                time.sleep(1)
        if args.slow:
            time.sleep(args.slow)
        return [(args.stream_out, replace(msg, source=d.consumer))]

    c = Consumer(r, args.group, [args.stream_in], handle, name=args.name, block_ms=200,
                 claim_idle_ms=args.claim_idle_ms, heartbeat_ttl_s=args.heartbeat_ttl_s)
    c.ensure_groups()
    c.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
