"""The rq worker of the project: JSON jobs only, and only the functions on ``ALLOWED``.

A Redis writer can enqueue anything on a queue; this worker runs nothing it was not built for:

- the serializer is forced to JSON (``shared.jobs.SERIALIZER``) whatever the command line says, so a
  pickled job (which could carry code) fails to load and is marked failed, unrun;
- ``AllowlistJob.func`` refuses (``JobRefused``, the job fails) any function not in ``ALLOWED``, a
  bound method, and any success/failure/stopped callback, before importing anything.

Run it as ``rq worker -w avwap.rqworker.Worker QUEUE`` or ``rq worker-pool -w avwap.rqworker.Worker ...``
(docker-compose.yml and the tests do).
"""

from __future__ import annotations

import logging
from typing import Any

from rq import Queue
from rq import Worker as RqWorker
from rq.job import Job

from shared.jobs import SERIALIZER

log = logging.getLogger(__name__)

# exactly the jobs the project enqueues: the scan shards, the pre-market cron scan, a sweep point
ALLOWED = frozenset({
    "services.scanner.shards.run_shard",
    "services.scanner.schedule.premarket_job",
    "avwap.sweep.jobs.run_point",
})


class JobRefused(RuntimeError):
    """A job this worker will not run (its function is not on the allowlist)."""


class AllowlistJob(Job):
    """An rq job that resolves its function only when it is on ``ALLOWED`` (and has no callbacks)."""

    @property
    def func(self) -> Any:
        name = self.func_name
        if name not in ALLOWED or self.instance is not None:
            raise JobRefused(f"job {self.id}: function {name!r} is not on the avwap worker's allowlist "
                             f"({', '.join(sorted(ALLOWED))}); not run")
        if self._success_callback_name or self._failure_callback_name or self._stopped_callback_name:
            raise JobRefused(f"job {self.id}: callbacks are not allowed; not run")
        return super().func

    # callbacks would run arbitrary importable callables: never resolved
    @property
    def success_callback(self) -> None:
        return None

    @property
    def failure_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None


class Worker(RqWorker):
    """rq's worker with the JSON serializer and ``AllowlistJob`` forced (command-line flags cannot undo it)."""

    def __init__(self, queues: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["serializer"] = SERIALIZER
        kwargs["job_class"] = AllowlistJob
        # queues given as objects (rq's CLI builds them with its own serializer) are rebuilt by name,
        # so every queue this worker reads uses the JSON serializer and the allowlist job class
        names = [queues] if isinstance(queues, str | Queue) else list(queues)
        super().__init__([q.name if isinstance(q, Queue) else q for q in names], *args, **kwargs)
