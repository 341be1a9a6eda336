"""The unit of work: the one way a handler commits (DESIGN §2; docs/bus.md, "The unit of work").

Every commit of the system goes through ``COMMIT_LUA``, one script run atomically: for each block
it XACKs the input entry and, only if that XACK removed it from the group's pending list, makes
the block's state writes and publishes its outputs ("first committer wins"). The consumer uses it
for a batch of stateless handlers (``Consumer._flush``); a handler that keeps state in Redis uses
``Bus.unit_of_work``::

    for uow in ctx.bus.unit_of_work(GROUP, d, watch=[STATE_KEY]):
        with uow:
            state = decode(uow.r.get(STATE_KEY))      # reads go through the WATCHing pipeline
            new, outputs = core.step(state, msg)      # pure
            uow.set(STATE_KEY, encode(new))
            for m in outputs:
                uow.emit(INTENTS, m)
    return uow.result                                 # Committed: the bus neither acks nor publishes

Leaving the ``with`` block commits state, outputs and the XACK in one MULTI/EXEC of the script.
A concurrent commit to a watched key aborts the EXEC: the loop runs the block again on the new
state (up to ``retries`` times). An exception inside the block commits nothing (the entry stays
pending and is redelivered). ``uow.result.lost_race`` is true only when the XACK found the entry
already acked by another consumer (a real race: nothing of this commit was written); the consumer
counts those. ``checkpoint()`` commits what is queued so far without the XACK (the executor's
outbox, written before a broker call leaves the process); ``leave_pending()`` makes the unit's commit leave
the entry pending for a second unit of the same handler (analytics stores a record before the day's work).

Reads may also be optimistic instead of WATCHed: ``uow.expect(cmd, key, *args, answer=...)`` says what the
block assumed, and the commit script checks each such guard before it writes anything; one that answers
otherwise fails the commit, and the block runs again (``uow.attempt`` > 0: the block reads for real). A
handler that can guess what it would read (analytics' ingest: a new record of an open day) commits in one
round trip.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import redis

from shared import metrics
from shared.crash import crash_point
from shared.reads import evalsha
from shared.schemas import Message, encode, type_name_of

if TYPE_CHECKING:
    from shared.bus import Delivery

MAX_TXN_RETRIES = 200


def fields_of(msg: Message) -> dict[str, bytes | str | int]:
    """The stream entry of a message: ``type``, ``v`` and ``data`` (the JSON of the message)."""
    return {"type": type_name_of(msg), "v": msg.v, "data": encode(msg)}


# Commit a batch atomically. KEYS: every key touched. ARGV: group, maxlen, number of guards, the guards, number
# of blocks, the blocks. A guard: command, key index, number of arguments, arguments, the answer expected (a nil
# answer reads as ""): every guard is checked first, and one answering otherwise fails the whole commit with an
# AVWAP_GUARD error before anything is written. A block: key index of the input stream (0: no input, commit
# unconditionally), entry id, number of state writes, number of emits, then per write: command, key index, number
# of arguments, arguments; per emit: key index of the output stream, number of field pairs, pairs.
# A block's writes and emits are made only if its XACK removed the entry from the pending list
# (first committer wins). Returns {entries acked, entries already acked elsewhere, emits published}.
COMMIT_LUA = """
local group, maxlen = ARGV[1], ARGV[2]
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  local ki, na = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local args = {ARGV[i], KEYS[ki]}
  for f = i + 3, i + 2 + na do args[#args + 1] = ARGV[f] end
  local got = redis.call(unpack(args))
  if got == false then got = '' end
  if tostring(got) ~= ARGV[i + 3 + na] then
    return redis.error_reply('AVWAP_GUARD ' .. ARGV[i] .. ' ' .. KEYS[ki] .. ' answers otherwise')
  end
  i = i + 4 + na
end
local acked, lost, emitted = 0, 0, 0
local blocks = tonumber(ARGV[i])
i = i + 1
for _ = 1, blocks do
  local si, id, nw, k = tonumber(ARGV[i]), ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  i = i + 4
  local ok = true
  if si > 0 then
    ok = redis.call('XACK', KEYS[si], group, id) == 1
    if ok then acked = acked + 1 else lost = lost + 1 end
  end
  for _ = 1, nw do
    local cmd, ki, na = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
    i = i + 3
    if ok then
      local args = {cmd, KEYS[ki]}
      for f = i, i + na - 1 do args[#args + 1] = ARGV[f] end
      redis.call(unpack(args))
    end
    i = i + na
  end
  for _ = 1, k do
    local oi, nf = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
    i = i + 2
    if ok then
      local args = {'XADD', KEYS[oi], 'MAXLEN', '~', maxlen, '*'}
      for f = i, i + 2 * nf - 1 do args[#args + 1] = ARGV[f] end
      redis.call(unpack(args))
      emitted = emitted + 1
    end
    i = i + 2 * nf
  end
end
return {acked, lost, emitted}
"""
COMMIT_SHA = hashlib.sha1(COMMIT_LUA.encode()).hexdigest()

Value = bytes | str | int
# a state write of a commit: command (SET, DEL, HSET, HSETNX, HDEL, HINCRBY, INCR, SADD, SREM, RPUSH, ZADD,
# ZREM), key, arguments
Write = tuple[str, str, tuple[Value, ...]]
# one block of a commit: input stream ("" for none), entry id, state writes, emits (stream, fields)
Block = tuple[str, str, list[Write], list[tuple[str, dict]]]
# a guard of a commit: command, key, arguments, the answer it must give (nil as "")
Guard = tuple[str, str, tuple[Value, ...], str]
GUARD_ERROR = "AVWAP_GUARD"


def commit_args(group: str, maxlen: int, work: Sequence[Block],
                guards: Sequence[Guard] = ()) -> tuple[list[str], list[Value]]:
    """KEYS and ARGV of ``COMMIT_LUA`` for ``work`` (``guards``: checked before anything is written)."""
    keys: dict[str, int] = {}

    def key(name: str) -> int:
        if name not in keys:
            keys[name] = len(keys) + 1
        return keys[name]

    args: list[Value] = [group, maxlen, len(guards)]
    for cmd, name, gargs, answer in guards:
        args += [cmd, key(name), len(gargs), *gargs, answer]
    args.append(len(work))
    for stream, entry_id, writes, outs in work:
        args += [key(stream) if stream else 0, entry_id or "-", len(writes), len(outs)]
        for cmd, name, wargs in writes:
            args += [cmd, key(name), len(wargs), *wargs]
        for out, fields in outs:
            args += [key(out), len(fields)]
            for k, v in fields.items():
                args += [k, v]
    return list(keys), args


@dataclass(frozen=True)
class Committed:
    """A handler's answer when its ``UnitOfWork`` committed the entry (state, outputs and XACK).

    The bus then does not ack the entry and publishes nothing for it. ``lost_race``: the XACK
    found the entry already acked by another consumer, so nothing of the commit was written;
    the bus counts it in ``stats.lost_races``.
    """

    lost_race: bool = False


class UnitOfWork:
    """One attempt at one handler's commit: the writes and outputs it queues, then the script.

    ``r`` is what the handler reads through: the WATCHing pipeline (immediate mode) when keys are
    watched, else the client. ``crash_points``: the names of the ``shared.crash`` points just before
    and after the final EXEC (restart tests).
    """

    def __init__(self, r: redis.Redis, group: str, d: Delivery | None, *, watch: Sequence[str] = (),
                 maxlen: int, crash_points: tuple[str, str] | None = None, attempt: int = 0) -> None:
        self._client = r
        self.attempt = attempt  # 0 for the first attempt; the next ones follow a lost WATCH or a failed guard
        self.group = group
        self.delivery = d
        self.maxlen = maxlen
        self._watch = list(watch)
        self._crash = crash_points
        self._pipe: redis.client.Pipeline | None = None
        self.r: redis.Redis = r
        self.writes: list[Write] = []
        self.emits: list[tuple[str, Message]] = []
        self.guards: list[Guard] = []
        self.result: Committed | None = None  # set once committed

    # -- reads ----------------------------------------------------------------------------
    def watch(self, *keys: str) -> None:
        """Watch more keys (read after the first ones, e.g. the positions an index names)."""
        if keys:
            self._pipeline().watch(*keys)

    def _pipeline(self) -> redis.client.Pipeline:
        if self._pipe is None:
            self._pipe = self._client.pipeline(transaction=True)
            self.r = self._pipe  # type: ignore[assignment]
        return self._pipe

    def expect(self, cmd: str, key: str, *args: Value, answer: bytes | str | int | None) -> None:
        """Commit only if ``cmd key args`` still answers ``answer`` at the commit (an optimistic read: what the
        block assumed, checked in the commit script instead of WATCHed; nil answers compare as ""). If it
        answers otherwise, nothing is written and the block runs again (``attempt`` counts up)."""
        if isinstance(answer, bytes):
            answer = answer.decode()
        self.guards.append((cmd, key, args, "" if answer is None else str(answer)))

    # -- writes (made only if the entry's XACK wins) ----------------------------------------
    def set(self, key: str, value: bytes | str) -> None:
        self.writes.append(("SET", key, (value,)))

    def delete(self, key: str) -> None:
        self.writes.append(("DEL", key, ()))

    def hset(self, key: str, field: str, value: bytes | str) -> None:
        self.writes.append(("HSET", key, (field, value)))

    def hincrby(self, key: str, field: str, n: int) -> None:
        self.writes.append(("HINCRBY", key, (field, n)))

    def sadd(self, key: str, *members: str) -> None:
        self.writes.append(("SADD", key, members))

    def srem(self, key: str, *members: str) -> None:
        self.writes.append(("SREM", key, members))

    def rpush(self, key: str, *values: bytes | str) -> None:
        self.writes.append(("RPUSH", key, values))

    def hsetnx(self, key: str, field: str, value: bytes | str) -> None:
        self.writes.append(("HSETNX", key, (field, value)))

    def hdel(self, key: str, *fields: str) -> None:
        self.writes.append(("HDEL", key, fields))

    def incr(self, key: str) -> None:
        self.writes.append(("INCR", key, ()))

    def zadd(self, key: str, member: str, score: int, *, nx: bool = False) -> None:
        self.writes.append(("ZADD", key, ("NX", score, member) if nx else (score, member)))

    def zrem(self, key: str, *members: str) -> None:
        self.writes.append(("ZREM", key, members))

    def emit(self, stream: str, msg: Message) -> None:
        self.emits.append((stream, msg))

    # -- commit -------------------------------------------------------------------------------
    def leave_pending(self) -> None:
        """Commit this unit without the XACK: the entry stays pending, and a later unit of work of the same
        handler (same delivery) commits the rest with the XACK (analytics: the record is stored before the
        day's work that reads it). A crash in between redelivers the entry."""
        self.delivery = None

    def checkpoint(self) -> None:
        """Commit what is queued so far, unconditionally and without the XACK (an outbox write). It ends
        the WATCH: a unit that checkpoints reads nothing it must watch afterwards (the executor watches none)."""
        self._run(None)

    def _run(self, d: Delivery | None, final: bool = False) -> Committed:
        if d is None and not self.writes and not self.emits:
            return Committed()  # nothing to commit
        block: Block = (d.stream if d else "", d.entry_id if d else "", self.writes,
                        [(out, fields_of(m)) for out, m in self.emits])
        keys, args = commit_args(self.group, self.maxlen, [block], self.guards)
        if final and self._crash:
            crash_point(self._crash[0])
        try:
            if self._pipe is None:  # nothing watched: the script alone is atomic (EVALSHA, loaded on NOSCRIPT)
                _acked, lost, _emitted = evalsha(self._client, COMMIT_LUA, COMMIT_SHA, keys, args)
            else:
                _acked, lost, _emitted = self._exec_watched(self._pipe, keys, args)
        except redis.ResponseError as e:
            if not str(e).startswith(GUARD_ERROR):
                raise
            raise redis.WatchError(str(e)) from None  # a guard failed: nothing was written, run again
        if final and self._crash:
            crash_point(self._crash[1])
        answer = Committed(lost_race=int(lost) > 0)
        if not answer.lost_race:
            metrics.published(self.group, self.emits)
        self.writes, self.emits, self.guards = [], [], []
        self._pipe = None
        self.r = self._client
        return answer

    def _exec_watched(self, pipe: redis.client.Pipeline, keys: list[str], args: list[Value]) -> list[int]:
        """MULTI, EVALSHA, EXEC on the WATCHing pipeline: one round trip (not ``Script`` in a pipeline, which
        asks SCRIPT EXISTS first). A server without the script (restarted, flushed) ran nothing: load it and
        raise ``WatchError`` so the block runs again on fresh reads (its WATCH ended with the EXEC)."""
        pipe.multi()
        pipe.execute_command("EVALSHA", COMMIT_SHA, len(keys), *keys, *args)
        try:
            return pipe.execute()[-1]
        except redis.exceptions.NoScriptError:
            self._client.script_load(COMMIT_LUA)
            raise redis.WatchError("commit script not loaded; loaded it, run again") from None

    def __enter__(self) -> UnitOfWork:
        if self._watch:
            self._pipeline().watch(*self._watch)
        return self

    def __exit__(self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        try:
            if et is None:
                self.result = self._run(self.delivery, final=True)
            return et is redis.WatchError  # a watched key changed under the reads: try again
        except redis.WatchError:
            return True
        finally:
            if self._pipe is not None:
                self._pipe.reset()
                self._pipe = None


def attempts(r: redis.Redis, group: str, d: Delivery | None, *, watch: Sequence[str] = (), maxlen: int,
             retries: int = MAX_TXN_RETRIES, crash_points: tuple[str, str] | None = None) -> Iterator[UnitOfWork]:
    """Fresh ``UnitOfWork``s until one commits (a lost WATCH starts the next); see the module doc."""
    for attempt in range(retries):
        uow = UnitOfWork(r, group, d, watch=watch, maxlen=maxlen, crash_points=crash_points, attempt=attempt)
        yield uow
        if uow.result is not None:
            return
    raise RuntimeError(f"{group}: state transaction kept conflicting")
