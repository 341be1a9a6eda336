"""One session's scan, whoever triggers it (the worker on PRE_MARKET, the rq cron job, the CLI).

``scan_for(panel, D, settings)`` is THE scan function: the watchlist for session D from the
daily bars dated strictly before D (``panel`` holds them: ``BarStore.daily_panel(before=D,
lookback=SCAN_HISTORY_BARS)`` or ``Panel.from_frame`` of a file, which give the same arrays).

Exactly one batch per session reaches ``avwap:candidates``: the hash ``avwap:state:scanner:published``
maps D -> "<batch_id> <owner>". The worker (owner ``clock``) records its claim and RETURNS the
batch to the bus (so a redelivery returns the same batch and the bus commits it once); the cron
job and ``avwap scan --publish`` claim and publish in one WATCH/MULTI transaction, and do nothing
when D is already claimed. The batch is deterministic, so whichever path wins, the bytes are the same.
"""

from __future__ import annotations

import logging

import redis

from shared.artifacts import code_version
from shared.bars import BarStore, Panel
from shared.bus import Emit, fields_of
from shared.clock import calendar
from shared.schemas import CandidateBatch
from shared.settings import Settings
from shared.streams import ALERTS, CANDIDATES, state_key
from shared.universe import UniverseError, read_universe

from .core import ScanResult, failed_scan, scan, scan_alert, scan_provenance

log = logging.getLogger(__name__)

CLAIM_KEY = state_key("scanner", "published")
UNIVERSE_ERROR = "UNIVERSE_ERROR"


def last_session_before(d: str) -> str:
    return calendar().previous_session(d)


def scan_for(panel: Panel, scan_date: str, settings: Settings, r: redis.Redis | None = None,
             universe_file: str | None = None, shards: int | None = None) -> ScanResult:
    """The scan for session ``scan_date`` over ``panel`` (bars < D). ``r`` is needed only for shards > 1."""
    p = settings.scanner
    ufile = universe_file if universe_file is not None else p.scan_universe_file
    universe, sectors = None, {}
    if ufile:
        try:
            sectors = read_universe(ufile)
        except UniverseError as exc:
            log.error("scan %s: %s", scan_date, exc)
            return failed_scan(scan_date, f"{UNIVERSE_ERROR}: {exc}", p, scan_provenance(panel, [], {}, p, code_version()))
        universe = list(sectors)
    last = last_session_before(scan_date)
    n = p.scan_shards if shards is None else shards
    results = None
    if n > 1:
        if r is None:
            raise ValueError("a sharded scan needs Redis (rq)")
        from .shards import sharded_results

        uni = sorted(panel.symbols) if universe is None else sorted(universe)
        results = sharded_results(r, panel, uni, sectors, scan_date, last, p, shards=n)
    return scan(panel, universe, sectors, scan_date, last, p, results=results, code=code_version())


def store_panel(store: BarStore, scan_date: str, settings: Settings) -> Panel:
    return store.daily_panel(before=scan_date, lookback=settings.scanner.scan_history_bars)


def outputs(result: ScanResult, ts: int = 0) -> list[Emit]:
    return [(CANDIDATES, result.batch), (ALERTS, scan_alert(result.batch, ts))]


def claim_of(r: redis.Redis, scan_date: str) -> tuple[str, str, str] | None:
    """(batch_id, owner, clock entry id or "") of the batch claimed for ``scan_date``, or None."""
    raw = r.hget(CLAIM_KEY, scan_date)
    if raw is None:
        return None
    parts = raw.decode().split(" ")
    return parts[0], parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else ""


def claim_for_worker(r: redis.Redis, batch: CandidateBatch, entry_id: str) -> bool:
    """The worker's claim for the PRE_MARKET entry ``entry_id``: True when it should return the batch.

    True for the first PRE_MARKET of D and for redeliveries of that same entry (the bus commits
    its outputs once); False when the cron job or the CLI published D, or another PRE_MARKET
    entry of D already claimed it (a repeated clock event gives no second batch).
    """
    mine = f"{batch.batch_id} clock {entry_id}"
    if r.hsetnx(CLAIM_KEY, batch.scan_date, mine):
        return True
    got = claim_of(r, batch.scan_date)
    if got is None or got[1] != "clock" or got[2] != entry_id:
        return False
    if got[0] != batch.batch_id:  # a redelivery after the store changed: its batch is the one to commit
        r.hset(CLAIM_KEY, batch.scan_date, mine)
    return True


def publish_once(r: redis.Redis, result: ScanResult, owner: str, ts: int = 0, maxlen: int = 200_000) -> bool:
    """Claim session D and publish its batch + alert atomically; False (nothing published) when already claimed."""
    return publish_batch_once(r, outputs(result, ts), owner, maxlen)


def publish_batch_once(r: redis.Redis, emits: list[Emit], owner: str, maxlen: int = 200_000) -> bool:
    """Claim the session of the ``CandidateBatch`` in ``emits`` and publish ``emits`` in one transaction.

    Also what a demo or a test uses to stand in for the scanner: a session it claimed gets no
    second batch from the worker.
    """
    batch = next(m for _, m in emits if isinstance(m, CandidateBatch))
    d = batch.scan_date
    with r.pipeline(transaction=True) as pipe:
        for _ in range(50):
            try:
                pipe.watch(CLAIM_KEY)
                if pipe.hexists(CLAIM_KEY, d):
                    pipe.unwatch()
                    return False
                pipe.multi()
                pipe.hset(CLAIM_KEY, d, f"{batch.batch_id} {owner}")
                for stream, msg in emits:
                    pipe.xadd(stream, fields_of(msg), maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
                pipe.execute()
                return True
            except redis.WatchError:
                continue
    raise RuntimeError(f"scanner: claim of {d} kept conflicting")
