"""Stream retention by session: the streams keep the last ``BUS_KEEP_SESSIONS`` sessions, not the past
(the bar streams the last ``BUS_KEEP_SESSIONS_BARS``).

``BUS_MAXLEN`` caps a stream by entry count: about 200,000 entries of a daily stream is centuries of
history that Redis keeps in memory (the whole universe's daily bars are one ~57 KB entry a session),
so a droplet's Redis would grow for years (live, a minute batch of the universe is as large, 390
times a session: ~11 GB before the count cap). Every consumer keeps what it needs from the past in its
own state or files (the bar store, analytics' history, the artifacts). So once a session has
closed, entries older than the first clock event of the oldest kept session can go.

``cut_id`` finds that entry on ``avwap:clock`` (whose ids, like every stream's, are the Redis
server's clock). ``trim_before`` never trims an entry a consumer group still needs: a pending entry
(read, not acked) or one not yet delivered. A stream without any consumer group is left alone
(a group created later would start from its beginning). The dead-letter stream and the control
stream (operators' actions) are never trimmed here. Trimming changes no decision: a consumer reads
only what it has not acked.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import msgspec
import redis

from shared.bus import entry_id
from shared.streams import ALL_STREAMS, BARS_1D, BARS_1M, CLOCK, CONTROL, DLQ

log = logging.getLogger(__name__)

TRIMMED = tuple(s for s in ALL_STREAMS if s not in (DLQ, CONTROL))
BAR_STREAMS = (BARS_1D, BARS_1M)
PAGE = 200


class _Event(msgspec.Struct):
    trade_date: str = ""


_DEC = msgspec.json.Decoder(_Event)


def _text(i: tuple[int, int]) -> str:
    return f"{i[0]}-{i[1]}"


def cut_id(r: redis.Redis, keep_sessions: int) -> str | None:
    """The id of the oldest clock event of the last ``keep_sessions`` sessions on the clock stream, read
    newest first (None: the stream holds no more sessions than that, nothing to trim)."""
    kept: set[str] = set()
    oldest_kept: str | None = None
    end = "+"
    while True:
        page = r.xrevrange(CLOCK, max=end, min="-", count=PAGE)
        for eid, fields in page:
            try:
                date = _DEC.decode(fields.get(b"data", b"{}")).trade_date
            except msgspec.DecodeError:
                continue  # not an event (the bus dead-letters it); it does not decide the cut
            if not date:
                continue
            if date not in kept:
                if len(kept) == keep_sessions:
                    return oldest_kept  # an event of an older session: everything before the kept ones goes
                kept.add(date)
            oldest_kept = eid.decode() if isinstance(eid, bytes) else eid
        if len(page) < PAGE:
            return None
        end = "(" + _text(entry_id(page[-1][0]))


def _floor(r: redis.Redis, stream: str, groups: list[dict]) -> tuple[int, int] | None:
    """The oldest entry of ``stream`` one of its ``groups`` still needs (pending or not yet delivered);
    None when it has no group (then nothing is trimmed)."""
    floor: tuple[int, int] | None = None
    for g in groups:
        need = entry_id(g["last-delivered-id"])
        if g["pending"]:
            low = r.xpending(stream, g["name"])["min"]
            if low is not None:
                need = min(need, entry_id(low))
        floor = need if floor is None else min(floor, need)
    return floor


def trim_before(r: redis.Redis, cut: str, streams: Sequence[str] = TRIMMED) -> int:
    """XTRIM each stream to entries at or after ``cut`` and after what its groups still need. Returns the
    number of entries removed. Two pipelined round trips (the groups of every stream, then the trims), plus
    one XPENDING per group that holds pending entries."""
    pipe = r.pipeline(transaction=False)
    for s in streams:
        pipe.xinfo_groups(s)
    infos = pipe.execute(raise_on_error=False)  # a stream that does not exist answers an error: skipped
    pipe = r.pipeline(transaction=False)
    n = 0
    for s, groups in zip(streams, infos, strict=True):
        if isinstance(groups, Exception) or not groups:
            continue
        floor = _floor(r, s, groups)
        if floor is None:
            continue
        # ids are (server ms, sequence within the stream): across streams only the ms compares, so the cut
        # keeps the whole millisecond of the kept session's first event
        minid = min((entry_id(cut)[0], 0), floor)
        pipe.xtrim(s, minid=_text(minid), approximate=False)
        n += 1
    return sum(int(x) for x in pipe.execute()) if n else 0


def trim_history(r: redis.Redis, keep_sessions: int, keep_bar_sessions: int) -> int:
    """Trim the streams to the last ``keep_sessions`` sessions and the bar streams to the last
    ``keep_bar_sessions`` (0: that retention is off). Returns the entries removed. Errors are logged,
    never raised: retention must not stop the worker that runs it."""
    removed = 0
    try:
        for keep, streams in ((keep_sessions, [s for s in TRIMMED if s not in BAR_STREAMS]), (keep_bar_sessions, BAR_STREAMS)):
            cut = cut_id(r, keep) if keep > 0 else None
            if cut is not None:
                removed += trim_before(r, cut, streams)
    except redis.RedisError as exc:
        log.warning("stream retention skipped: %s", exc)
    return removed
