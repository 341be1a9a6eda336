"""The pre-market scan on rq's cron scheduler, in New York time, on NYSE sessions only.

rq's ``CronScheduler`` (rq >= 2.11) evaluates cron expressions in UTC; ``NYCronScheduler``
registers ``NYCronJob``s, whose next run is computed by croniter in America/New_York, so
``SCAN_CRON="30 8 * * 1-5"`` fires at 08:30 ET across daylight-saving changes. The scheduler
only enqueues; any rq worker on ``SCAN_RQ_QUEUE`` runs ``premarket_job``, which scans the
current NY date if it is a session (holidays are skipped) and publishes the batch unless the
session is already claimed (``session.publish_once``) — so running the cron next to the
scanner worker (which scans on the feed's PRE_MARKET) never gives a session two batches.

    avwap scan cron          # the scheduler (one process)
    rq worker avwap-scan     # workers (the cron job and the scan shards)
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime

from croniter import croniter
from rq.cron import CronJob, CronScheduler
from rq.utils import now as rq_now

from shared.bars import BarStore
from shared.clock import NY, WallClock, calendar, ny_trade_date
from shared.redis_conn import connect
from shared.service import StreamIO
from shared.settings import Settings, get_settings
from shared.streams import ALERTS, CANDIDATES

from .artifacts import write_artifacts
from .session import claim_of, publish_once, scan_for, store_panel

log = logging.getLogger(__name__)
CRON_NAME = "avwap-premarket-scan"
# ``avwap scan cron`` only enqueues; the rq workers on SCAN_RQ_QUEUE run ``premarket_job``, which publishes:
CRON_IO = StreamIO()
JOBS_IO = StreamIO(produces=(CANDIDATES, ALERTS))


def next_ny_run(expr: str, after: datetime) -> datetime:
    """The next time ``expr`` (read in America/New_York) fires strictly after ``after`` (aware)."""
    return croniter(expr, after.astimezone(NY)).get_next(datetime)


class NYCronJob(CronJob):
    """A ``CronJob`` whose cron expression is New York wall-clock time."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003 - CronJob's signature
        super().__init__(*args, **kwargs)
        if self.cron:
            self.next_enqueue_time = next_ny_run(self.cron, rq_now())

    def get_next_enqueue_time(self) -> datetime:
        if self.cron:
            return next_ny_run(self.cron, self.latest_enqueue_time or rq_now())
        return super().get_next_enqueue_time()


class NYCronScheduler(CronScheduler):
    """rq's cron scheduler with cron expressions in New York time."""

    def register(self, func, queue_name, args=None, kwargs=None, interval=None, cron=None,  # noqa: ANN001
                 job_timeout=None, result_ttl=500, ttl=None, failure_ttl=None, meta=None, webhooks=None,
                 name="") -> CronJob:
        job = NYCronJob(queue_name=queue_name, func=func, args=args, kwargs=kwargs, interval=interval, cron=cron,
                        job_timeout=job_timeout, result_ttl=result_ttl, ttl=ttl, failure_ttl=failure_ttl, meta=meta,
                        webhooks=webhooks, name=name)
        self.get_jobs().append(job)
        self.log.info("Registered %s on %s with NY cron %r (next %s)", job.func_name, queue_name, cron,
                      job.next_enqueue_time)
        return job


def run_scheduled(r, settings: Settings, now_ns: int) -> str:  # noqa: ANN001 - redis.Redis
    """The cron job's work at ``now_ns``: scan the NY date if it is a session; publish once."""
    day = ny_trade_date(now_ns)
    if not calendar().is_session(day):
        log.info("pre-market scan: %s is not an NYSE session; skipped", day)
        return f"skipped: {day} is not a session"
    if claim_of(r, day) is not None:  # the worker (or the CLI) published it: no second scan, no rewrite
        return f"already published for {day}; nothing sent"
    store = BarStore(settings.core.bars_dir)
    result = scan_for(store_panel(store, day, settings), day, settings, r=r)
    write_artifacts(settings.core.artifacts_dir, result)
    if publish_once(r, result, owner="cron", ts=now_ns, maxlen=settings.core.bus_maxlen):
        return f"published {result.batch.batch_id} for {day}: {len(result.batch.candidates)} candidates"
    return f"already published for {day}; nothing sent"


def premarket_job() -> str:
    """rq job registered by ``avwap scan cron``."""
    settings = get_settings()
    if not settings.core.redis_url:
        raise RuntimeError("premarket_job: REDIS_URL is required")
    return run_scheduled(connect(settings.core.redis_url), settings, WallClock().now_ns())


def build_scheduler(r, settings: Settings) -> NYCronScheduler:  # noqa: ANN001
    sched = NYCronScheduler(connection=r, name=f"{CRON_NAME}:{socket.gethostname()}:{os.getpid()}")
    sched.register(premarket_job, settings.scanner.scan_rq_queue, cron=settings.scanner.scan_cron,
                   job_timeout=600, name=CRON_NAME)
    return sched
