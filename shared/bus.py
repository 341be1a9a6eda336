"""The stream bus: publish versioned messages, consume them reliably (DESIGN §2).

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

import hashlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import redis

from shared import lease, metrics
from shared.schemas import (
    BarBatch,
    CandidateBatch,
    EntryIntent,
    Message,
    PortfolioDecisionBatch,
    PortfolioSnapshot,
    SchemaError,
    SessionEvent,
    decode,
    type_name_of,
)
from shared.streams import (
    ALERTS,
    BARS_1D,
    BARS_1M,
    BROKER,
    CANDIDATES,
    CLOCK,
    DLQ,
    EXITS,
    INTENTS,
    ORDERS,
    PORTFOLIO,
    REJECTIONS,
)
from shared.unit_of_work import COMMIT_LUA, Block, Committed, UnitOfWork, attempts, commit_args, fields_of

# Entries of one read are handled in publication order ACROSS streams (XREADGROUP groups them
# by stream). Same-millisecond ties: the inputs (clock, bars) before what reacts to them.
STREAM_RANK = {CLOCK: 0, BARS_1M: 1, BARS_1D: 2, CANDIDATES: 3, PORTFOLIO: 4, INTENTS: 5, ORDERS: 6, REJECTIONS: 7,
               EXITS: 8, BROKER: 9, ALERTS: 10}


def entry_id(raw: bytes | str | None) -> tuple[int, int]:
    """A stream entry id as (ms, sequence), the order Redis gives them ((0, 0) for none)."""
    if not raw:
        return (0, 0)
    ms, _, seq = (raw.decode() if isinstance(raw, bytes) else raw).partition("-")
    return int(ms), int(seq or 0)


def publication_order(entry: tuple) -> tuple[int, int, int]:
    """Sort key of an ``(stream, entry_id, ...)`` tuple: entry time, stream rank, sequence."""
    ms, seq = entry_id(entry[1])
    return ms, STREAM_RANK.get(entry[0], 99), seq

log = logging.getLogger(__name__)

HEARTBEAT_PREFIX = "avwap:hb"
DEFAULT_MAXLEN = 200_000
DEFAULT_MAX_PAYLOAD = 4 * 1024 * 1024  # bytes of one entry's ``data`` (BUS_MAX_PAYLOAD_BYTES)
DLQ_KEEP_BYTES = 4096  # of an oversized payload, the DLQ keeps this much (and its size and sha256)
NS_PER_DAY = 86_400 * 1_000_000_000

# The session date of each message that drives a session (consumers check it is an NYSE session).
_SESSION_DATE: dict[type, str] = {SessionEvent: "trade_date", BarBatch: "trade_date", CandidateBatch: "scan_date",
                                  PortfolioDecisionBatch: "date", PortfolioSnapshot: "date", EntryIntent: "trade_date"}


def session_problem(msg: Message, now_ns: int | None = None, horizon_days: int = 0) -> str | None:
    """Why the session date of ``msg`` is not acceptable, as ``CODE: detail``, or None.

    ``NOT_A_SESSION``: not a real date, or not an NYSE session; ``DATE_OUT_OF_HORIZON``: with
    ``horizon_days`` > 0, more than that many days from ``now_ns`` (live services; replays set 0).
    Messages without a session date (alerts, order events...) pass: their dates are checked for
    form at decode (``shared.schemas.types.TradeDate``).
    """
    attr = _SESSION_DATE.get(type(msg))
    if attr is None:
        return None
    d = getattr(msg, attr)
    from shared.clock import calendar, dt_to_ns, ny_datetime

    if not calendar().is_session(d):
        return f"NOT_A_SESSION: {type_name_of(msg)}.{attr}={d!r} is not an NYSE session"
    if horizon_days > 0 and now_ns is not None:
        off = abs(dt_to_ns(ny_datetime(d, "12:00")) - now_ns)
        if off > horizon_days * NS_PER_DAY:
            return (f"DATE_OUT_OF_HORIZON: {type_name_of(msg)}.{attr}={d} is more than {horizon_days} days "
                    "from now (MESSAGE_DATE_HORIZON_DAYS)")
    return None

Emit = tuple[str, Message]

Entry = tuple[str, str, "dict | None", int]  # stream, entry id, fields (None: deleted), deliveries (-1: look up)

@dataclass(frozen=True)
class Delivery:
    """Where a message came from: stream, entry id, and how often it has been delivered."""

    stream: str
    entry_id: str
    deliveries: int
    consumer: str


Handler = Callable[[Message, Delivery], Iterable[Emit] | Committed | None]


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class _TooLarge(SchemaError):
    code = "PAYLOAD_TOO_LARGE"


class _Refused(SchemaError):
    """A decoded message that a consumer-side check refused (``code`` from the check)."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        super().__init__(detail)


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
        return _s(self.r.xadd(stream, fields_of(msg), maxlen=self.maxlen, approximate=True))  # type: ignore[arg-type]

    def publish_many(self, items: Sequence[Emit]) -> list[str]:
        """Publish several messages in one round trip (pipelined, not transactional)."""
        if not items:
            return []
        pipe = self.r.pipeline(transaction=False)
        for stream, msg in items:
            pipe.xadd(stream, fields_of(msg), maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        return [_s(x) for x in pipe.execute()]

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
        g, _, consumer = _s(k)[len(HEARTBEAT_PREFIX) + 1:].partition(":")
        out.append((g, consumer))
    return sorted(out)


def write_heartbeat(r: redis.Redis, group: str, name: str, ttl_s: int, handled: int = 0) -> None:
    """SET ``avwap:hb:<group>:<name>`` (TTL ``ttl_s``): what ``live_consumers``/``avwap health`` read.
    Consumers call it from their loop; a process that is not a consumer (the feed) from its own."""
    payload = json.dumps({"pid": os.getpid(), "handled": handled, "ts": time.time()})
    r.set(f"{HEARTBEAT_PREFIX}:{group}:{name}", payload, ex=ttl_s)


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
    lost_races: int = 0  # entries another consumer committed first (their outputs were dropped)
    trimmed: int = 0  # pending entries whose message was trimmed or deleted before it was handled
    redis_errors: int = 0
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
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
        check: Callable[[Message], str | None] | None = session_problem,
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
    def ensure_groups(self) -> None:
        """Create the group on every input stream (idempotent; from id 0; creates the stream)."""
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

    def _take_over_pending(self) -> None:
        """Claim every pending entry of the group (any consumer, any idle time); read them first."""
        n = 0
        for stream in self.streams:
            cursor = "0-0"
            while True:
                try:
                    resp = self.r.xautoclaim(stream, self.group, self.name, 0, start_id=cursor, count=500)
                except redis.ResponseError as exc:
                    if self._nogroup(exc):
                        return
                    raise
                n += len(resp[1])
                cursor = _s(resp[0])
                if cursor in ("0-0", "0"):
                    break
        if n:
            self.stats.claimed += n
            log.info("%s/%s took the group's lease and %d pending entries", self.group, self.name, n)
        self._backlog = True

    def _nogroup(self, exc: redis.ResponseError) -> bool:
        """A stream or group deleted under us: re-create it (the loop reads again)."""
        if "NOGROUP" not in str(exc):
            return False
        log.warning("%s/%s: group missing (%s); re-creating it", self.group, self.name, exc)
        self.ensure_groups()
        self._backlog = True
        return True

    def _read(self, ids: dict[str, str], block: int | None, count: int | None = None) -> list[Entry]:
        self.stats.reads += 1
        try:
            resp = self.r.xreadgroup(self.group, self.name, ids, count=count or self.count, block=block)  # type: ignore[arg-type]
        except redis.ResponseError as exc:
            if self._nogroup(exc):
                return []
            raise
        out: list[Entry] = []
        pending_read = all(v == "0" for v in ids.values())
        for stream, entries in resp or []:
            for entry_id, fields in entries:
                out.append((_s(stream), _s(entry_id), fields or None, -1 if pending_read else 1))
        out.sort(key=publication_order)
        return out

    def _claim(self) -> list[Entry]:
        """Take over up to ``count`` entries idle longer than ``claim_idle_ms`` (any owner)."""
        out: list[Entry] = []
        for stream in self.streams:
            room = self.count - len(out)
            if room <= 0:
                break
            try:
                resp = self.r.xautoclaim(stream, self.group, self.name, self.claim_idle_ms,
                                         start_id=self._claim_cursor[stream], count=room)
            except redis.ResponseError as exc:
                if self._nogroup(exc):
                    out.sort(key=publication_order)
                    return out
                raise
            self._claim_cursor[stream] = _s(resp[0])
            for entry_id, fields in resp[1]:
                out.append((stream, _s(entry_id), fields or None, -1))
            if len(resp) > 2 and resp[2]:  # Redis 7: deleted entries, already removed from the PEL
                log.warning("%s: %d claimed entries were trimmed from %s", self.group, len(resp[2]), stream)
        if any(c not in ("0-0", "0") for c in self._claim_cursor.values()):
            self._next_claim = 0.0  # more to scan: continue on the next step
        if out:
            self.stats.claimed += len(out)
            log.info("%s/%s claimed %d stale entries", self.group, self.name, len(out))
        out.sort(key=publication_order)
        return out

    def _reclaim(self, stream: str, entry_id: str) -> list[Entry]:
        """Deliver one of our pending entries to ourselves again (XCLAIM counts the delivery)."""
        got = self.r.xclaim(stream, self.group, self.name, 0, [entry_id])
        return [(stream, _s(eid), fields or None, -1) for eid, fields in got if eid is not None]

    def _lookup_deliveries(self, batch: list[Entry]) -> dict[tuple[str, str], int]:
        """Delivery counts of re-read or claimed entries (one pipelined XPENDING round trip)."""
        want = [(s, e) for s, e, f, d in batch if d < 0 and f is not None]
        if not want:
            return {}
        pipe = self.r.pipeline(transaction=False)
        for stream, entry_id in want:
            pipe.xpending_range(stream, self.group, min=entry_id, max=entry_id, count=1)
        return {k: int(info[0]["times_delivered"]) if info else 1 for k, info in zip(want, pipe.execute(), strict=True)}

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
            raw = fields.get(b"data", fields.get("data"))
            try:
                if raw is None:
                    raise SchemaError("entry has no 'data' field")
                if len(raw) > self.max_payload_bytes:
                    size = len(raw)
                    data = raw.encode() if isinstance(raw, str) else raw
                    fields = {**{k: v for k, v in fields.items() if _s(k) != "data"}, "data": data[:DLQ_KEEP_BYTES],
                              "dlq_data_bytes": size, "dlq_data_sha256": hashlib.sha256(data).hexdigest()}
                    raise _TooLarge(f"{size} bytes > BUS_MAX_PAYLOAD_BYTES={self.max_payload_bytes} (not decoded; "
                                    f"the DLQ keeps the first {DLQ_KEEP_BYTES})")
                msg = decode(raw)
                problem = self.check(msg) if self.check is not None else None
                if problem:
                    code, _, detail = problem.partition(": ")
                    raise _Refused(code, detail)
            except SchemaError as exc:
                self._flush(blocks)
                blocks = []
                self._dead_letter(stream, entry_id, fields, f"{exc.code}: {exc.detail}", deliveries)
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
        self._commit_blocks([(stream, entry_id, [], [(self.dlq, record)])])
        self.stats.dead_lettered += 1
        metrics.dead_lettered(self.group, stream)
        log.error("%s: dead-lettered %s %s: %s", self.group, stream, entry_id, reason)
