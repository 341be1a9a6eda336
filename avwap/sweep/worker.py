"""The rq worker of the sweep queue: JSON job arguments, and a short heartbeat so that a dead
worker's point is handed to another within ``SWEEP_HEARTBEAT_S`` + ``job_monitoring_interval``.

rq keeps a started job in the queue's StartedJobRegistry until its heartbeat expires; the
coordinator (``avwap sweep``) cleans that registry every poll, which re-enqueues an abandoned job
that has retries left (rq's ``Retry``) or moves it to the FailedJobRegistry. Run one per core:
``avwap sweep-worker --queue avwap-sweep`` with ``REDIS_URL`` set (any machine reaching that Redis).
"""

from __future__ import annotations

from avwap.rqworker import Worker

MONITOR_S = 5  # how often the worker renews a running job's heartbeat
HEARTBEAT_S = 10  # grace past a missed renewal before the job counts as abandoned


class SweepWorker(Worker):
    """The project's allowlist worker (JSON jobs, allowlisted functions only) whose job heartbeat expires ``MONITOR_S + HEARTBEAT_S`` after the last renewal."""

    def get_heartbeat_ttl(self, job) -> int:  # noqa: ANN001 - rq's Job
        return int(self.job_monitoring_interval) + HEARTBEAT_S


def make_worker(connection, queue: str, name: str | None = None) -> SweepWorker:  # noqa: ANN001 - redis client
    return SweepWorker([queue], connection=connection, name=name, job_monitoring_interval=MONITOR_S)


def run_worker(url: str, queue: str, burst: bool = False, name: str | None = None) -> bool:
    import redis

    w = make_worker(redis.Redis.from_url(url), queue, name)
    return bool(w.work(burst=burst, with_scheduler=False, logging_level="WARNING"))
