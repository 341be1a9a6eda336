"""rq queues of the project: JSON-serialized jobs only (never pickle).

Every producer enqueues through ``job_queue`` (rq's ``JSONSerializer``: a job is a function name and
JSON arguments, so a payload cannot carry code), and the workers are ``avwap.rqworker.Worker``,
which also refuses any job whose function is not on the project's allowlist.
"""

from __future__ import annotations

import redis
from rq import Queue
from rq.serializers import JSONSerializer

SERIALIZER = JSONSerializer


def job_queue(name: str, connection: redis.Redis) -> Queue:
    """The rq queue ``name`` with the project's JSON serializer."""
    return Queue(name, connection=connection, serializer=SERIALIZER)
