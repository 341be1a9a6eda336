"""The stream bus: publish versioned messages, consume them reliably (DESIGN §2).

Delivery contract
- One consumer group per consuming service; groups are created idempotently (from id 0,
  so nothing published before a service first started is missed).
- On start a consumer re-reads its own pending entries, then new ones (``>``).
- Entries of dead consumers idle longer than ``claim_idle_ms`` are taken over with XAUTOCLAIM.
- A message that does not decode goes to ``avwap:dlq`` at once; one whose handler fails
  ``max_deliveries`` times goes there too, with the reason and the original fields.
- A batch's outputs are published and its entries acked in one MULTI/EXEC, only after
  every handler in it succeeded: a crash before EXEC redelivers the batch, a crash after
  it leaves nothing pending. Handlers must be idempotent for any other side effect.
- SIGTERM/SIGINT: finish the message in hand, flush, exit the loop (the process exits 0).
- Never busy-spins: a blocking read that returns at once with nothing (fakeredis does
  this when COUNT is set) backs off before the next read.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import redis

from shared.schemas import Message, SchemaError, decode, encode, type_name_of

log = logging.getLogger(__name__)

DLQ = "avwap:dlq"
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


Handler = Callable[[Message, Delivery], Iterable[Emit] | None]


def fields_of(msg: Message) -> dict[str, bytes | str | int]:
    return {"type": type_name_of(msg), "v": msg.v, "data": encode(msg)}


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Bus:
    """Publishing side. ``maxlen`` trims streams approximately (``MAXLEN ~``)."""

    def __init__(self, r: redis.Redis, maxlen: int = DEFAULT_MAXLEN) -> None:
        self.r = r
        self.maxlen = maxlen

    def publish(self, stream: str, msg: Message) -> str:
        return _s(self.r.xadd(stream, fields_of(msg), maxlen=self.maxlen, approximate=True))  # type: ignore[arg-type]

    def publish_many(self, items: Sequence[Emit]) -> list[str]:
        if not items:
            return []
        pipe = self.r.pipeline(transaction=False)
        for stream, msg in items:
            pipe.xadd(stream, fields_of(msg), maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        return [_s(x) for x in pipe.execute()]


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class ConsumerStats:
    handled: int = 0
    failed: int = 0
    dead_lettered: int = 0
    claimed: int = 0
    reads: int = 0
    empty_reads: int = 0
    last_error: str = ""
    started: float = field(default_factory=time.monotonic)


class Consumer:
    """Consumes ``streams`` in consumer group ``group`` and calls ``handler`` per message."""

    def __init__(
        self,
        r: redis.Redis,
        group: str,
        streams: Sequence[str],
        handler: Handler,
        *,
        name: str | None = None,
        max_deliveries: int = 5,
        block_ms: int = 1000,
        count: int = 100,
        claim_idle_ms: int = 30_000,
        heartbeat_ttl_s: int = 30,
        maxlen: int = DEFAULT_MAXLEN,
        dlq: str = DLQ,
        on_idle: Callable[[], Iterable[Emit] | None] | None = None,
    ) -> None:
        self.r = r
        self.group = group
        self.streams = list(streams)
        self.handler = handler
        self.name = name or default_consumer_name()
        self.max_deliveries = max_deliveries
        self.block_ms = block_ms
        self.count = count
        self.claim_idle_ms = claim_idle_ms
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.maxlen = maxlen
        self.dlq = dlq
        self.on_idle = on_idle
        self.stats = ConsumerStats()
        self._stop = threading.Event()
        self._backlog = True
        self._retrying = False
        self._next_claim = 0.0
        self._next_heartbeat = 0.0
        self._idle_sleep = 0.0
        self._failure_backoff = 0.0
        self._ready = False

    # -- setup ---------------------------------------------------------------
    def ensure_groups(self) -> None:
        for stream in self.streams:
            try:
                self.r.xgroup_create(stream, self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._ready = True

    @property
    def heartbeat_key(self) -> str:
        return f"{HEARTBEAT_PREFIX}:{self.group}:{self.name}"

    def heartbeat(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_heartbeat:
            return
        self._next_heartbeat = now + max(1.0, self.heartbeat_ttl_s / 3)
        payload = json.dumps({"pid": os.getpid(), "handled": self.stats.handled, "ts": time.time()})
        self.r.set(self.heartbeat_key, payload, ex=self.heartbeat_ttl_s)

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    # -- loop ----------------------------------------------------------------
    def run(self, install_signals: bool = True, until_idle: bool = False) -> ConsumerStats:
        """Consume until stopped (or, with ``until_idle``, until nothing is left to read)."""
        if install_signals:
            self.install_signal_handlers()
        if not self._ready:
            self.ensure_groups()
        while not self._stop.is_set():
            n = self.step(block=not until_idle)
            if until_idle and n == 0 and not self._backlog:
                break
        self.r.delete(self.heartbeat_key)
        return self.stats

    def step(self, block: bool = True) -> int:
        """One read-handle-flush round. Returns the number of entries read."""
        if not self._ready:
            self.ensure_groups()
        self.heartbeat()
        if self._failure_backoff:
            self._stop.wait(self._failure_backoff)
            self._failure_backoff = 0.0
        if self._backlog:
            # after a failure re-read only the failed entry, so the entries behind it are not
            # charged a delivery they never got
            count = 1 if self._retrying else self.count
            batch = self._read({s: "0" for s in self.streams}, block=None, count=count)
            self._retrying = False
            if not batch:
                self._backlog = False
            else:
                self._process(batch)
                return len(batch)
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + max(0.1, self.claim_idle_ms / 2000)
            claimed = self._claim()
            if claimed:
                self._process(claimed)
                return len(claimed)
        t0 = time.monotonic()
        batch = self._read({s: ">" for s in self.streams}, block=self.block_ms if block else None)
        if batch:
            self._idle_sleep = 0.0
            self._process(batch)
            return len(batch)
        self.stats.empty_reads += 1
        if self.on_idle is not None:
            self._flush([], list(self.on_idle() or []))
        if block:
            elapsed_ms = (time.monotonic() - t0) * 1000
            if elapsed_ms < self.block_ms / 2:  # the backend did not block: back off, never spin
                self._idle_sleep = min(max(self._idle_sleep * 2, 0.005), self.block_ms / 4000)
                self._stop.wait(self._idle_sleep)
        return 0

    # -- internals -----------------------------------------------------------
    def _read(self, ids: dict[str, str], block: int | None, count: int | None = None) -> list[tuple[str, str, dict | None, int]]:
        self.stats.reads += 1
        resp = self.r.xreadgroup(self.group, self.name, ids, count=count or self.count, block=block)  # type: ignore[arg-type]
        out: list[tuple[str, str, dict | None, int]] = []
        pending_read = all(v == "0" for v in ids.values())
        for stream, entries in resp or []:
            for entry_id, fields in entries:
                out.append((_s(stream), _s(entry_id), fields or None, -1 if pending_read else 1))
        return out

    def _claim(self) -> list[tuple[str, str, dict | None, int]]:
        out: list[tuple[str, str, dict | None, int]] = []
        for stream in self.streams:
            start = "0-0"
            while True:
                resp = self.r.xautoclaim(stream, self.group, self.name, self.claim_idle_ms, start_id=start, count=self.count)
                next_id, entries = resp[0], resp[1]
                deleted = resp[2] if len(resp) > 2 else []
                for entry_id, fields in entries:
                    out.append((stream, _s(entry_id), fields or None, -1))
                if deleted:
                    log.warning("%s: %d claimed entries were trimmed from %s", self.group, len(deleted), stream)
                if _s(next_id) in ("0-0", "0") or len(entries) == 0:
                    break
                start = _s(next_id)
        if out:
            self.stats.claimed += len(out)
            log.info("%s/%s claimed %d stale entries", self.group, self.name, len(out))
        return out

    def _deliveries(self, stream: str, entry_id: str) -> int:
        info = self.r.xpending_range(stream, self.group, min=entry_id, max=entry_id, count=1)
        return int(info[0]["times_delivered"]) if info else 1

    def _process(self, batch: list[tuple[str, str, dict | None, int]]) -> None:
        acks: list[tuple[str, str]] = []
        emits: list[Emit] = []
        for stream, entry_id, fields, deliveries in batch:
            if fields is None:  # trimmed or deleted while pending: nothing to handle
                acks.append((stream, entry_id))
                continue
            raw = fields.get(b"data", fields.get("data"))
            try:
                if raw is None:
                    raise SchemaError("entry has no 'data' field")
                msg = decode(raw)
            except SchemaError as exc:
                self._dead_letter(stream, entry_id, fields, f"{exc.code}: {exc.detail}", max(deliveries, 1))
                continue
            if deliveries < 0:
                deliveries = self._deliveries(stream, entry_id)
            delivery = Delivery(stream, entry_id, deliveries, self.name)
            try:
                out = self.handler(msg, delivery)
            except Exception as exc:  # noqa: BLE001 - any handler failure is counted, never fatal
                self.stats.failed += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                if deliveries >= self.max_deliveries:
                    log.error("%s: %s %s failed %d times, to DLQ: %s", self.group, stream, entry_id, deliveries, exc)
                    self._flush(acks, emits)
                    acks, emits = [], []
                    self._dead_letter(stream, entry_id, fields, f"HANDLER_FAILED after {deliveries} deliveries: {self.stats.last_error}", deliveries)
                    continue
                log.warning("%s: %s %s failed (delivery %d): %s", self.group, stream, entry_id, deliveries, exc)
                # keep order: stop here; the failed entry and the rest stay pending and are re-read
                self._backlog = True
                self._retrying = True
                self._failure_backoff = min(0.05 * (2 ** (deliveries - 1)), 1.0)
                break
            if out:
                emits.extend(out)
            acks.append((stream, entry_id))
            self.stats.handled += 1
            if self._stop.is_set():
                # finish the message in hand, leave the rest of the batch pending for a successor
                self._backlog = True
                break
        self._flush(acks, emits)

    def _flush(self, acks: list[tuple[str, str]], emits: list[Emit]) -> None:
        if not acks and not emits:
            return
        pipe = self.r.pipeline(transaction=True)
        for stream, msg in emits:
            pipe.xadd(stream, fields_of(msg), maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        by_stream: dict[str, list[str]] = {}
        for stream, entry_id in acks:
            by_stream.setdefault(stream, []).append(entry_id)
        for stream, ids in by_stream.items():
            pipe.xack(stream, self.group, *ids)
        pipe.execute()

    def _dead_letter(self, stream: str, entry_id: str, fields: dict, reason: str, deliveries: int) -> None:
        record: dict[str, bytes | str | int] = {_s(k): v for k, v in fields.items()}
        record.update(
            {
                "dlq_reason": reason,
                "dlq_source_stream": stream,
                "dlq_source_id": entry_id,
                "dlq_group": self.group,
                "dlq_consumer": self.name,
                "dlq_deliveries": deliveries,
            }
        )
        pipe = self.r.pipeline(transaction=True)
        pipe.xadd(self.dlq, record, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        pipe.xack(stream, self.group, entry_id)
        pipe.execute()
        self.stats.dead_lettered += 1
        log.error("%s: dead-lettered %s %s: %s", self.group, stream, entry_id, reason)
