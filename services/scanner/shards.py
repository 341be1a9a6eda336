"""Sharded scans on rq: the universe split into N jobs that any rq worker picks up.

Per-symbol computation is independent (``core.symbol_results`` over a column subset gives the
same bytes as over the whole), so a shard is just a slice of the sorted universe with its bars.
A job carries everything it needs as one base64 text of msgpack bytes (bars, universe slice,
scanner settings), so an rq worker on another host needs no shared disk, and the job is plain JSON
(``shared.jobs.job_queue``: rq's JSON serializer, never pickle); it returns its ``SymbolResult`` list
the same way. Its payload is decoded against ``ShardPayload`` (typed), never executed. The caller merges (``core.merge``: concatenate, gate, rank, cut), byte-identical to the
unsharded scan. A shard that fails or is not done within ``SCAN_SHARD_TIMEOUT_S`` is computed
in the calling process instead (same function, same bytes): a dead rq fleet slows a scan down,
it never loses a session's batch.

Workers: ``rq worker -w avwap.rqworker.Worker avwap-scan`` (or ``rq worker-pool -w avwap.rqworker.Worker
-n 2 avwap-scan``, see docker-compose.yml): JSON jobs on the allowlist only.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Sequence

import msgspec
import numpy as np
import redis

from shared.bars import FIELDS, Panel
from shared.jobs import job_queue
from shared.settings import ScannerSettings

from .core import SymbolResult, symbol_results

log = logging.getLogger(__name__)

POLL_S = 0.02


class ShardPayload(msgspec.Struct, frozen=True):
    dates: list[str]
    symbols: list[str]
    arrays: list[bytes]  # open, high, low, close, volume: float64 (T, S) C-order
    ts: list[int]
    universe: list[str]
    sectors: dict[str, str]
    scan_date: str
    last_session: str
    settings: dict[str, object]


_RESULTS = msgspec.msgpack.Decoder(list[SymbolResult])
_PAYLOAD = msgspec.msgpack.Decoder(ShardPayload)


def split(universe: Sequence[str], n: int) -> list[list[str]]:
    """The sorted universe in ``n`` contiguous, near-equal slices (no empty slice)."""
    syms = sorted(universe)
    n = max(1, min(n, len(syms)))
    return [list(part) for part in np.array_split(np.array(syms, dtype=object), n)] if syms else [[]]


def encode_payload(panel: Panel, universe: Sequence[str], sectors: dict[str, str], scan_date: str,
                   last_session: str, p: ScannerSettings) -> str:
    sub = panel.select(universe)
    return _b64(msgspec.msgpack.encode(ShardPayload(
        dates=list(sub.dates), symbols=list(sub.symbols),
        arrays=[np.ascontiguousarray(getattr(sub, f), dtype=np.float64).tobytes() for f in FIELDS],
        ts=[int(x) for x in sub.ts], universe=sorted(universe), sectors={s: sectors.get(s, "") for s in universe},
        scan_date=scan_date, last_session=last_session, settings=p.model_dump())))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def run_shard(payload: str) -> str:
    """The rq job: one shard's ``SymbolResult`` list (base64 msgpack text, as is its payload)."""
    sp = _PAYLOAD.decode(base64.b64decode(payload, validate=True))
    t, s = len(sp.dates), len(sp.symbols)
    arrs = [np.frombuffer(b, dtype=np.float64).reshape(t, s).copy() for b in sp.arrays]
    panel = Panel(dates=sp.dates, symbols=sp.symbols, open=arrs[0], high=arrs[1], low=arrs[2], close=arrs[3],
                  volume=arrs[4], ts=np.array(sp.ts, dtype=np.int64))
    p = ScannerSettings(**sp.settings)  # type: ignore[arg-type]
    return _b64(msgspec.msgpack.encode(symbol_results(panel, sp.universe, sp.sectors, sp.scan_date, sp.last_session, p)))


def sharded_results(r: redis.Redis, panel: Panel, universe: Sequence[str], sectors: dict[str, str], scan_date: str,
                    last_session: str, p: ScannerSettings, shards: int | None = None,
                    timeout_s: float | None = None) -> list[SymbolResult]:
    """Run the scan's per-symbol part as rq jobs and collect the results (local fallback per shard)."""
    from rq.job import JobStatus

    parts = split(universe, shards or p.scan_shards)
    payloads = [encode_payload(panel, part, sectors, scan_date, last_session, p) for part in parts]
    q = job_queue(p.scan_rq_queue, r)
    timeout = p.scan_shard_timeout_s if timeout_s is None else timeout_s
    jobs = [q.enqueue(run_shard, pl, job_timeout=max(30, int(timeout * 2)), result_ttl=300, failure_ttl=3600,
                      description=f"avwap scan {scan_date} shard {i + 1}/{len(parts)}")
            for i, pl in enumerate(payloads)]
    done: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(jobs) and time.monotonic() < deadline:
        for i, job in enumerate(jobs):
            if i in done:
                continue
            status = job.get_status(refresh=True)
            if status == JobStatus.FINISHED:
                done[i] = job.return_value(refresh=True)
            elif status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                log.warning("scan %s shard %d/%d %s on rq; computing it here", scan_date, i + 1, len(jobs), status)
                done[i] = run_shard(payloads[i])
        if len(done) < len(jobs):
            time.sleep(POLL_S)
    for i, job in enumerate(jobs):
        if i not in done:
            log.warning("scan %s shard %d/%d not done in %.0fs on rq; computing it here", scan_date, i + 1,
                        len(jobs), timeout)
            try:
                job.cancel()
            except Exception as exc:  # noqa: BLE001 - a job that finished meanwhile cannot be cancelled
                log.info("shard %d cancel: %s", i + 1, exc)
            done[i] = run_shard(payloads[i])
    out: list[SymbolResult] = []
    for i in range(len(jobs)):
        out.extend(_RESULTS.decode(base64.b64decode(done[i])))
    return out
