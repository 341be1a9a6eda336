"""The stream bus: publishing versioned messages, and what a handler is given and may answer (DESIGN §2).

``Bus`` publishes (``XADD``, trimmed ``MAXLEN ~``) and opens a handler's unit of work
(``shared.unit_of_work``); ``Delivery`` says where a message came from, ``Emit`` is an output,
``Handler`` what a consumer calls and ``DeadLetter`` what a handler raises to send its entry to the
DLQ at once. Entries are handled in publication order (``publication_order``); every consumer
keeps a heartbeat key (``write_heartbeat``, ``live_consumers``). The consuming side, with its
delivery contract, is ``shared.consumer``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import redis

from shared import streams as st
from shared.schemas import Message
from shared.unit_of_work import Committed, UnitOfWork, attempts, fields_of

# Entries of one read are handled in publication order ACROSS streams (XREADGROUP groups them
# by stream). Same-millisecond ties: the inputs (clock, bars) before what reacts to them.
STREAM_RANK = {st.CLOCK: 0, st.BARS_1M: 1, st.BARS_1D: 2, st.CANDIDATES: 3, st.PORTFOLIO: 4, st.INTENTS: 5,
               st.ORDERS: 6, st.REJECTIONS: 7, st.EXITS: 8, st.BROKER: 9, st.ALERTS: 10}


def entry_id(raw: bytes | str | None) -> tuple[int, int]:
    """A stream entry id as (ms, sequence), the order Redis gives them ((0, 0) for none)."""
    if not raw:
        return (0, 0)
    ms, _, seq = (raw.decode() if isinstance(raw, bytes) else raw).partition("-")
    return int(ms or 0), int(seq or 0)


def publication_order(entry: tuple) -> tuple[int, int, int]:
    """Sort key of an ``(stream, entry_id, ...)`` tuple: entry time, stream rank, sequence."""
    ms, seq = entry_id(entry[1])
    return ms, STREAM_RANK.get(entry[0], 99), seq


HEARTBEAT_PREFIX = "avwap:hb"
DEFAULT_MAXLEN = 200_000

Emit = tuple[str, Message]


@dataclass(frozen=True)
class Delivery:
    """Where a message came from: stream, entry id, and how often it has been delivered."""

    stream: str
    entry_id: str
    deliveries: int
    consumer: str


Handler = Callable[[Message, Delivery], Iterable[Emit] | Committed | None]


def as_str(value: bytes | str) -> str:
    """A Redis reply (bytes, or str from a decoding client) as str."""
    return value.decode() if isinstance(value, bytes) else value


class DeadLetter(Exception):  # noqa: N818 - an outcome, not an error
    """Raised by a handler: the entry goes to the DLQ at once (no retry) with reason ``<code>: <detail>``,
    committing nothing of the handler's work."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}")


class Bus:
    """Publishing side. ``maxlen`` trims streams approximately (``MAXLEN ~``)."""

    def __init__(self, r: redis.Redis, maxlen: int = DEFAULT_MAXLEN) -> None:
        self.r = r
        self.maxlen = maxlen

    def publish(self, stream: str, msg: Message) -> str:
        return as_str(self.r.xadd(stream, fields_of(msg), maxlen=self.maxlen, approximate=True))  # type: ignore[arg-type]

    def publish_many(self, items: Sequence[Emit]) -> list[str]:
        """Publish several messages in one round trip (pipelined, not transactional)."""
        if not items:
            return []
        pipe = self.r.pipeline(transaction=False)
        for stream, msg in items:
            pipe.xadd(stream, fields_of(msg), maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        return [as_str(x) for x in pipe.execute()]

    def unit_of_work(self, group: str, d: Delivery | None, *, watch: Sequence[str] = (),
                     crash_points: tuple[str, str] | None = None) -> Iterator[UnitOfWork]:
        """The attempts of one handler's unit of work (``shared.unit_of_work``): ``for uow in ...: with uow:``."""
        return attempts(self.r, group, d, watch=watch, maxlen=self.maxlen, crash_points=crash_points)


def live_consumers(r: redis.Redis, group: str | None = None) -> list[tuple[str, str]]:
    """Sorted ``(group, consumer)`` of every live heartbeat key ``avwap:hb:<group>:<consumer>``
    (of one ``group`` when given): the consumers that ran a loop within their heartbeat TTL."""
    out = []
    pattern = f"{HEARTBEAT_PREFIX}:{group}:*" if group else f"{HEARTBEAT_PREFIX}:*"
    for k in r.scan_iter(pattern, count=500):
        g, _, consumer = as_str(k)[len(HEARTBEAT_PREFIX) + 1:].partition(":")
        out.append((g, consumer))
    return sorted(out)


def write_heartbeat(r: redis.Redis, group: str, name: str, ttl_s: int, handled: int = 0) -> None:
    """SET ``avwap:hb:<group>:<name>`` (TTL ``ttl_s``): what ``live_consumers``/``avwap health`` read.
    Consumers call it from their loop; a process that is not a consumer (the feed) from its own."""
    payload = json.dumps({"pid": os.getpid(), "handled": handled, "ts": time.time()})
    r.set(f"{HEARTBEAT_PREFIX}:{group}:{name}", payload, ex=ttl_s)


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"
