"""The audit trail: append-only, hash-chained records of every operator action and control change.

Records live in the Redis list ``avwap:audit`` (``RPUSH`` only, never trimmed), one canonical JSON
line each; ``avwap audit export`` writes them as a JSONL file. Each record carries ``prev``, the
``hash`` of the record before it (64 zeros for the first), and its own ``hash``: the sha256 of its
canonical JSON without the ``hash`` field. Changing, inserting or removing a record breaks the chain
at that record; ``verify`` recomputes it and names the first record that does not match.

Several processes append (CLI, notifier, analytics): ``stage`` reads the tip under ``WATCH`` and the
caller's commit pushes the record together with the change it records (a trading-state
transition, a breaker trip), so a record exists if and only if its change was committed.
``transact`` is that commit: the project's one optimistic-locking idiom (``shared.unit_of_work``,
a unit of work without an input entry), with the audit log always among the watched keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Literal, Protocol, TypeVar

import msgspec
import redis

from shared.artifacts import canonical_json
from shared.bus import DEFAULT_MAXLEN
from shared.schemas import Message
from shared.streams import AUDIT_KEY
from shared.unit_of_work import attempts

GENESIS = "0" * 64
AuditKind = Literal["state_change", "breaker_trip", "breaker_rearm", "flatten", "command", "confirmation", "refusal"]
MAX_TXN_RETRIES = 100

T = TypeVar("T")


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    ts: int  # UTC epoch ns of the action (event time for breakers in replay)
    kind: AuditKind
    actor: str  # cli:<user> | slack:<user id> | breaker:<name> | executor
    action: str  # e.g. "halt", "rearm daily_loss", "/avwap flatten AAPL"
    detail: dict[str, str] = {}
    prev: str
    hash: str = ""


def record_hash(rec: AuditRecord) -> str:
    body = msgspec.to_builtins(rec)
    body.pop("hash", None)
    return hashlib.sha256(canonical_json(body)).hexdigest()


def line_of(rec: AuditRecord) -> bytes:
    return canonical_json(msgspec.to_builtins(rec))


def make(tip: bytes | None, kind: AuditKind, actor: str, action: str, ts: int,
         detail: dict[str, str] | None = None) -> AuditRecord:
    """The record that follows ``tip`` (the last line of the log, or None for the first)."""
    if tip is None:
        seq, prev = 0, GENESIS
    else:
        last = msgspec.json.decode(tip, type=AuditRecord)
        seq, prev = last.seq + 1, last.hash
    rec = AuditRecord(seq=seq, ts=ts, kind=kind, actor=actor, action=action,
                      detail={k: str(v) for k, v in sorted((detail or {}).items())}, prev=prev)
    return msgspec.structs.replace(rec, hash=record_hash(rec))


def stage(pipe: redis.client.Pipeline, kind: AuditKind, actor: str, action: str, ts: int,
          detail: dict[str, str] | None = None) -> AuditRecord:
    """Inside a ``WATCH`` (``pipe`` in immediate mode, ``AUDIT_KEY`` watched): the next record.
    The caller queues it with ``push`` in the ``write`` of its ``transact`` step."""
    return make(pipe.lindex(AUDIT_KEY, -1), kind, actor, action, ts, detail)  # type: ignore[arg-type]


class Writes(Protocol):
    """What a ``transact`` step's ``write`` queues on (the unit of work's writes and outputs)."""

    def set(self, key: str, value: bytes | str) -> None: ...
    def delete(self, key: str) -> None: ...
    def rpush(self, key: str, *values: bytes | str) -> None: ...
    def emit(self, stream: str, msg: Message) -> None: ...


def push(w: Writes, rec: AuditRecord) -> None:
    w.rpush(AUDIT_KEY, line_of(rec))


Step = Callable[[redis.client.Pipeline], tuple[T, Callable[[Writes], None]]]


def transact(r: redis.Redis, step: Step[T], watch: Iterable[str] = (), *, maxlen: int = DEFAULT_MAXLEN) -> T:
    """Run ``step`` in a unit of work watching ``AUDIT_KEY + watch`` until it commits (a lost ``WATCH``
    runs it again on fresh reads; ``shared.unit_of_work.attempts``).

    ``step(pipe)`` reads what it needs through ``pipe`` (the watching pipeline, immediate mode) and
    returns ``(result, write)``; ``write(w)`` queues the writes and outputs (``Writes``), committed in
    one atomic script. An exception in either commits nothing. Streams are trimmed as the bus trims
    them (``maxlen``).
    """
    for uow in attempts(r, "audit", None, watch=(AUDIT_KEY, *watch), maxlen=maxlen, retries=MAX_TXN_RETRIES):
        with uow:
            result, write = step(uow.r)  # type: ignore[arg-type]  # uow.r is the watching pipeline
            write(uow)
    return result


def append(r: redis.Redis, kind: AuditKind, actor: str, action: str, ts: int,
           detail: dict[str, str] | None = None) -> AuditRecord:
    """Append one record on its own (a command, a confirmation, a refusal)."""
    def step(pipe: redis.client.Pipeline) -> tuple[AuditRecord, Callable[[Writes], None]]:
        rec = stage(pipe, kind, actor, action, ts, detail)
        return rec, lambda w: push(w, rec)

    return transact(r, step)


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    records: int
    first_bad: int | None = None  # index (0-based line number) of the first broken record
    why: str = ""


def verify(lines: Iterable[bytes | str]) -> Verdict:
    """Recompute the chain over the log's lines; the first record that does not decode, is out of
    sequence, does not point at its predecessor's hash, or whose hash is not its content's, breaks it."""
    prev, count = GENESIS, 0
    for n, raw in enumerate(lines):
        data = raw.encode() if isinstance(raw, str) else raw
        try:
            rec = msgspec.json.decode(data.strip(), type=AuditRecord)
        except msgspec.DecodeError as exc:
            return Verdict(ok=False, records=n, first_bad=n, why=f"record {n} does not decode: {exc}")
        if rec.seq != n:
            return Verdict(ok=False, records=n, first_bad=n, why=f"record {n} has seq {rec.seq}")
        if rec.prev != prev:
            return Verdict(ok=False, records=n, first_bad=n, why=f"record {n} does not point at record {n - 1}'s hash")
        if record_hash(rec) != rec.hash:
            return Verdict(ok=False, records=n, first_bad=n, why=f"record {n}'s hash does not match its content")
        prev, count = rec.hash, n + 1
    return Verdict(ok=True, records=count)


def read_all(r: redis.Redis) -> list[bytes]:
    return list(r.lrange(AUDIT_KEY, 0, -1))  # type: ignore[arg-type]
