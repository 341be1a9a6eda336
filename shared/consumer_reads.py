"""How a consumer takes entries from its group: new ones, its own pending ones, stale ones of others.

``ConsumerReads`` is the reading half of ``shared.consumer.Consumer``: it creates the group on every
input stream (from id 0), reads new entries (``>``) and re-reads its own pending ones (``0``),
takes over entries idle longer than ``claim_idle_ms`` (XAUTOCLAIM, resuming the scan across steps),
claims every pending entry of the group when it takes the group's lease (exclusive consumers),
re-creates a group deleted under it, and looks up the delivery counts of re-read entries. Every
batch it returns is sorted in publication order (``shared.bus.publication_order``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import redis

from shared.bus import as_str, publication_order

if TYPE_CHECKING:
    from shared.consumer import ConsumerStats

log = logging.getLogger(__name__)

Entry = tuple[str, str, "dict | None", int]  # stream, entry id, fields (None: deleted), deliveries (-1: look up)


class ConsumerReads:
    """The reads of one consumer ``name`` of ``group`` on ``streams`` (state kept on the consumer)."""

    r: redis.Redis
    group: str
    name: str
    streams: list[str]
    count: int
    claim_idle_ms: int
    stats: ConsumerStats
    _ready: bool
    _backlog: bool  # read our own pending entries (``0``) before new ones
    _next_claim: float  # monotonic time of the next XAUTOCLAIM scan
    _claim_cursor: dict[str, str]  # where each stream's XAUTOCLAIM scan resumes

    def ensure_groups(self) -> None:
        """Create the group on every input stream (idempotent; from id 0; creates the stream)."""
        for stream in self.streams:
            try:
                self.r.xgroup_create(stream, self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._ready = True

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
                cursor = as_str(resp[0])
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
                out.append((as_str(stream), as_str(entry_id), fields or None, -1 if pending_read else 1))
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
            self._claim_cursor[stream] = as_str(resp[0])
            for entry_id, fields in resp[1]:
                out.append((stream, as_str(entry_id), fields or None, -1))
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
        return [(stream, as_str(eid), fields or None, -1) for eid, fields in got if eid is not None]

    def _lookup_deliveries(self, batch: list[Entry]) -> dict[tuple[str, str], int]:
        """Delivery counts of re-read or claimed entries (one pipelined XPENDING round trip)."""
        want = [(s, e) for s, e, f, d in batch if d < 0 and f is not None]
        if not want:
            return {}
        pipe = self.r.pipeline(transaction=False)
        for stream, entry_id in want:
            pipe.xpending_range(stream, self.group, min=entry_id, max=entry_id, count=1)
        return {k: int(info[0]["times_delivered"]) if info else 1 for k, info in zip(want, pipe.execute(), strict=True)}
