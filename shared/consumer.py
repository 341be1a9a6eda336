"""The consumer: reads a consumer group, calls the handler per message, commits (DESIGN §2; docs/bus.md).

Delivery contract
- One consumer group per consuming service; groups are created idempotently (from id 0,
  so nothing published before a service first started is missed).
- On start a consumer re-reads its own pending entries, then new ones (``>``).
- Entries of dead consumers idle longer than ``claim_idle_ms`` are taken over with XAUTOCLAIM.
- A message that does not decode goes to ``avwap:dlq`` at once; one whose handler fails
  ``max_deliveries`` times goes there too, with the reason and the original fields. So does a
  ``data`` field longer than ``max_payload_bytes`` (``PAYLOAD_TOO_LARGE``: not decoded; the DLQ
  keeps its first ``DLQ_KEEP_BYTES`` and its size and sha256), and a message whose dates fail
  ``check`` (default ``session_problem``: ``NOT_A_SESSION`` / ``DATE_OUT_OF_HORIZON``), and an
  entry whose handler raises ``DeadLetter(code, detail)`` (at once, reason ``<code>: <detail>``).
- Every commit is one script (``shared.unit_of_work.COMMIT_LUA``, atomic like MULTI/EXEC),
  run only after the handlers succeeded: a crash before it redelivers the entries, a crash after
  it leaves nothing pending. It is "first committer wins" per entry: an entry's state writes and
  outputs are made only if its XACK removed it from the group's pending list, so when a slow (not
  dead) consumer and the consumer that claimed its entry both finish it, it lands once. Handlers
  must be idempotent for any other side effect (key it by stable ids).
- A stateless handler returns its outputs; the consumer commits a batch of them in one script.
  A handler that keeps state in Redis commits state + outputs + its entry's XACK itself in a
  ``Bus.unit_of_work`` (WATCH the state, read, decide, write; a lost WATCH runs it again) and
  returns the unit's ``Committed``: the consumer then neither acks the entry again nor counts
  it as a lost race, unless ``Committed.lost_race`` says the XACK found the entry already acked.
- ``exclusive``: one consumer of the group at a time holds a lease (``avwap:lease:<group>``,
  renewed every step) and reads; the others stand by. A new holder first takes over every pending
  entry of the group, so the group applies its entries in publication order (exits).
- SIGTERM/SIGINT: finish the batch in hand (already delivered to this consumer), commit it,
  exit the loop (the process exits 0) with nothing of it left pending.
- Never busy-spins: a blocking read that returns at once with nothing (fakeredis does
  this when COUNT is set) backs off before the next read.
- Survives Redis hiccups: a lost connection is retried with backoff (never a crash loop);
  a group or stream deleted under a running consumer is re-created.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import redis

from shared import lease, metrics
from shared.bus import (
    DEFAULT_MAXLEN,
    HEARTBEAT_PREFIX,
    DeadLetter,
    Delivery,
    Emit,
    Handler,
    default_consumer_name,
    write_heartbeat,
)
from shared.consumer_reads import ConsumerReads, Entry
from shared.intake import DEFAULT_MAX_PAYLOAD, Check, TooLarge, admit, dead_letter_record, session_problem
from shared.schemas import SchemaError
from shared.streams import DLQ
from shared.unit_of_work import COMMIT_LUA, Block, Committed, commit_args, fields_of

log = logging.getLogger(__name__)


@dataclass
class ConsumerStats:
    handled: int = 0
    failed: int = 0
    dead_lettered: int = 0
    claimed: int = 0
    reads: int = 0
    empty_reads: int = 0
    lost_races: int = 0  # entries another consumer committed first (their outputs were dropped)
    trimmed: int = 0  # pending entries whose message was trimmed or deleted before it was handled
    redis_errors: int = 0
    last_error: str = ""
    started: float = field(default_factory=time.monotonic)


class Consumer(ConsumerReads):
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
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
        check: Check | None = session_problem,
        exclusive: bool = False,
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
        self.max_payload_bytes = max_payload_bytes
        self.check = check
        # exclusive: only the holder of the group's lease (for claim_idle_ms after its last renewal) reads
        self.exclusive = exclusive
        self.lease_key = lease.lease_key(group)
        self._next_renew = 0.0
        self._leader = False
        self.stats = ConsumerStats()
        self._stop = threading.Event()
        self._backlog = True
        self._retry: tuple[str, str] | None = None  # the failed entry to retry alone
        self._held: list[Entry] = []  # the rest of its batch, still pending for us
        self._next_claim = 0.0
        self._claim_cursor = {s: "0-0" for s in self.streams}
        self._next_heartbeat = 0.0
        self._idle_sleep = 0.0
        self._failure_backoff = 0.0
        self._next_idle = 0.0  # on_idle runs on every empty read, and at least this often while busy
        self._ready = False
        self._commit = r.register_script(COMMIT_LUA)

    # -- setup ---------------------------------------------------------------
    @property
    def heartbeat_key(self) -> str:
        return f"{HEARTBEAT_PREFIX}:{self.group}:{self.name}"

    def heartbeat(self, force: bool = False) -> None:
        """Refresh ``avwap:hb:<group>:<consumer>`` (TTL ``heartbeat_ttl_s``) at most every TTL/3."""
        now = time.monotonic()
        if not force and now < self._next_heartbeat:
            return
        metrics.heartbeat(self.group, self.name, time.time())
        self._next_heartbeat = now + max(1.0, self.heartbeat_ttl_s / 3)
        write_heartbeat(self.r, self.group, self.name, self.heartbeat_ttl_s, self.stats.handled)

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` unless a stop is requested; True if one was."""
        return self._stop.wait(seconds)

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    # -- loop ----------------------------------------------------------------
    def run(self, install_signals: bool = True, until_idle: bool = False) -> ConsumerStats:
        """Consume until stopped (or, with ``until_idle``, until nothing is left to read).

        A lost Redis connection is retried with backoff (up to 5 s apart) until it comes back
        or a stop is requested; it never ends the loop.
        """
        if install_signals:
            self.install_signal_handlers()
        backoff = 0.0
        while not self._stop.is_set():
            try:
                if not self._ready:
                    self.ensure_groups()
                n = self.step(block=not until_idle)
                backoff = 0.0
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self.stats.redis_errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                backoff = min(max(backoff * 2, 0.1), 5.0)
                log.warning("%s/%s: Redis unavailable (%s); retrying in %.1fs", self.group, self.name, exc, backoff)
                self._backlog = True  # re-read what we hold once it is back
                self._retry, self._held = None, []
                self._stop.wait(backoff)
                continue
            if until_idle and n == 0 and not self._backlog:
                break
        try:
            self.r.delete(self.heartbeat_key)
            if self.exclusive and self._leader:  # a standby takes over at once, not after the lease ran out
                lease.release(self.r, self.lease_key, self.name)
                self._leader = False
        except redis.RedisError as exc:  # the keys expire by themselves
            log.warning("%s/%s: could not delete heartbeat/lease: %s", self.group, self.name, exc)
        return self.stats

    def step(self, block: bool = True) -> int:
        """One read-handle-commit round. Returns the number of entries read.

        ``on_idle`` runs after every empty read and, while every read returns entries (a backlog the
        consumer is working through), at least once per ``block_ms``: the periodic work it does (the
        executor's trade updates and broker polls, the notifier's watchdog) is never starved by a busy
        stream."""
        n = self._step(block)
        if n and self.on_idle is not None and time.monotonic() >= self._next_idle and not self._stop.is_set():
            self._run_idle()
        return n

    def _run_idle(self) -> None:
        assert self.on_idle is not None
        self._next_idle = time.monotonic() + self.block_ms / 1000
        self._flush([], list(self.on_idle() or []))

    def _step(self, block: bool) -> int:
        if not self._ready:
            self.ensure_groups()
        self.heartbeat()
        if self.exclusive and not self._lead(force=False):
            if block:
                self._stop.wait(self.block_ms / 1000)
            return 0
        if self._retry is not None:
            # retry the failed entry alone (after a backoff), then the rest of its batch from
            # memory: order is kept and the entries behind it are not charged extra deliveries
            self._stop.wait(self._failure_backoff)
            if self._stop.is_set():
                return 0  # the failed entry and the held ones stay pending for a successor
            batch = self._reclaim(*self._retry) + self._held
            self._retry, self._held = None, []
            if batch:
                self._process(batch)
            return len(batch)
        if self._backlog:
            batch = self._read({s: "0" for s in self.streams}, block=None, count=self.count)
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
            self._run_idle()
        if block and not self._stop.is_set():
            elapsed_ms = (time.monotonic() - t0) * 1000
            if elapsed_ms < self.block_ms / 2:  # the backend did not block: back off, never spin
                self._idle_sleep = min(max(self._idle_sleep * 2, 0.005), self.block_ms / 4000)
                self._stop.wait(self._idle_sleep)
        return 0

    # -- internals -----------------------------------------------------------
    def _lead(self, force: bool = False) -> bool:
        """Hold the group's lease (exclusive consumers): True while this consumer may read.

        Renewed at most every ``claim_idle_ms``/3 (``force``: due or not). On taking the lease over,
        every entry still pending in the group (the previous holder's) is claimed at once and read
        first, so the group goes on in publication order."""
        now = time.monotonic()
        if self._leader and not force and now < self._next_renew:
            return True
        got = lease.hold(self.r, self.lease_key, self.name, self.claim_idle_ms)
        self._next_renew = now + self.claim_idle_ms / 3000
        if got == lease.HELD_ELSEWHERE:
            if self._leader:
                log.warning("%s/%s: lost the group's lease; standing by", self.group, self.name)
            self._leader = False
            self._retry, self._held = None, []  # the new holder takes them over
            return False
        if got == lease.ACQUIRED:
            self._take_over_pending()
        self._leader = True
        return True

    def _process(self, batch: list[Entry]) -> None:
        # one block per entry: (stream, entry id, emits); committed together
        blocks: list[tuple[str, str, list[Emit]]] = []
        counts = self._lookup_deliveries(batch)
        for pos, (stream, entry_id, fields, deliveries) in enumerate(batch):
            if self.exclusive:
                self._lead()  # keep the lease through a long batch (a lost one: the new holder wins the races)
            if fields is None:  # trimmed or deleted while pending: nothing left to handle
                self.stats.trimmed += 1
                log.warning("%s/%s: pending entry %s %s was trimmed or deleted before it was handled; acking it "
                            "(raise BUS_MAXLEN if this repeats)", self.group, self.name, stream, entry_id)
                blocks.append((stream, entry_id, []))
                continue
            if deliveries < 0:
                deliveries = counts.get((stream, entry_id), 1)
            try:
                msg = admit(fields, self.max_payload_bytes, self.check)
            except SchemaError as exc:
                self._flush(blocks)
                blocks = []
                kept = exc.fields if isinstance(exc, TooLarge) else fields
                self._dead_letter(stream, entry_id, kept, f"{exc.code}: {exc.detail}", deliveries)
                continue
            delivery = Delivery(stream, entry_id, deliveries, self.name)
            t0 = time.perf_counter()
            try:
                out = self.handler(msg, delivery)
            except DeadLetter as exc:
                self._flush(blocks)
                blocks = []
                self._dead_letter(stream, entry_id, fields, str(exc), deliveries)
                continue
            except Exception as exc:  # noqa: BLE001 - any handler failure is counted, never fatal
                metrics.failed(self.group, stream, time.perf_counter() - t0)
                self.stats.failed += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                if deliveries >= self.max_deliveries:
                    log.error("%s: %s %s failed %d times, to DLQ: %s", self.group, stream, entry_id, deliveries, exc)
                    self._flush(blocks)
                    blocks = []
                    self._dead_letter(stream, entry_id, fields,
                                      f"HANDLER_FAILED after {deliveries} deliveries: {self.stats.last_error}", deliveries)
                    continue
                log.warning("%s: %s %s failed (delivery %d): %s", self.group, stream, entry_id, deliveries, exc)
                # keep order: stop here; retry the failed entry alone, then the rest (both pending)
                self._retry, self._held = (stream, entry_id), batch[pos + 1:]
                self._failure_backoff = min(0.05 * (2 ** (deliveries - 1)), 1.0)
                break
            self.stats.handled += 1
            metrics.handled(self.group, stream, msg, time.perf_counter() - t0)
            if isinstance(out, Committed):  # acked (and its outputs written) by the handler's own commit
                if out.lost_race:
                    self._lost(1)
                continue
            blocks.append((stream, entry_id, list(out or [])))
        self._flush(blocks)

    def _flush(self, blocks: list[tuple[str, str, list[Emit]]], emits: list[Emit] | None = None) -> None:
        """Commit: ack each entry and publish its outputs (only if the ack won), atomically.

        ``_flush([], emits)`` publishes outputs that belong to no entry (``on_idle``).
        """
        work: list[Block] = [
            (stream, entry_id, [], [(out, fields_of(m)) for out, m in outs]) for stream, entry_id, outs in blocks
        ]
        if emits:
            work.append(("", "", [], [(out, fields_of(m)) for out, m in emits]))
        if not self._commit_blocks(work):  # every ack won, so every output was published
            metrics.published(self.group, [*(e for *_, outs in blocks for e in outs), *(emits or [])])

    def _commit_blocks(self, work: list[Block]) -> int:
        """Commit ``work``; returns how many of its entries another consumer had acked first."""
        if not work:
            return 0
        keys, args = commit_args(self.group, self.maxlen, work)
        _acked, lost, _emitted = self._commit(keys=keys, args=args)
        if lost:
            self._lost(int(lost))
        return int(lost)

    def _lost(self, n: int) -> None:
        self.stats.lost_races += n
        metrics.lost_races(self.group, n)
        log.warning("%s/%s: %d entries were already committed by another consumer; their outputs dropped",
                    self.group, self.name, n)

    def _dead_letter(self, stream: str, entry_id: str, fields: dict, reason: str, deliveries: int) -> None:
        """Move an entry to the DLQ with its original fields and why; ack it (atomically)."""
        record = dead_letter_record(fields, reason, stream=stream, entry_id=entry_id, group=self.group,
                                    consumer=self.name, deliveries=deliveries)
        self._commit_blocks([(stream, entry_id, [], [(self.dlq, record)])])
        self.stats.dead_lettered += 1
        metrics.dead_lettered(self.group, stream)
        log.error("%s: dead-lettered %s %s: %s", self.group, stream, entry_id, reason)
