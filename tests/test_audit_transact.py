"""``shared.audit.transact`` is a unit of work (``shared.unit_of_work``) without an input entry:
a lost WATCH runs the step again on fresh reads, an exception commits nothing, and the record and
the change it records are written together or not at all."""

from __future__ import annotations

import pytest
import redis

from shared import audit
from shared.alerts import make_alert
from shared.schemas import Alert, decode
from shared.streams import ALERTS, AUDIT_KEY, TRADING_STATE_KEY


def test_a_lost_watch_runs_the_step_again_on_fresh_reads(real_redis: redis.Redis) -> None:
    r = real_redis
    other = redis.Redis(connection_pool=r.connection_pool)
    audit.append(r, "command", "cli:a", "first", 1)
    runs: list[int] = []

    def step(pipe: redis.client.Pipeline):  # noqa: ANN202
        rec = audit.stage(pipe, "command", "cli:b", "raced", 3)
        runs.append(rec.seq)
        if len(runs) == 1:  # another process appends between this step's reads and its commit
            audit.append(other, "command", "cli:c", "meanwhile", 2)
        return rec, lambda w: (w.set(TRADING_STATE_KEY, b"x"), audit.push(w, rec))

    rec = audit.transact(r, step, watch=(TRADING_STATE_KEY,))
    assert runs == [1, 2] and rec.seq == 2  # the second run saw the record appended meanwhile
    lines = audit.read_all(r)
    assert audit.verify(lines).ok and [audit.msgspec.json.decode(x)["action"] for x in lines] == ["first", "meanwhile", "raced"]
    assert r.get(TRADING_STATE_KEY) == b"x"


def test_an_exception_in_the_step_or_its_write_commits_nothing(real_redis: redis.Redis) -> None:
    r = real_redis

    def write(w: audit.Writes) -> None:
        w.set(TRADING_STATE_KEY, b"x")
        raise ValueError("boom")

    with pytest.raises(ValueError):
        audit.transact(r, lambda pipe: (None, write))
    assert r.llen(AUDIT_KEY) == 0 and r.get(TRADING_STATE_KEY) is None


def test_outputs_queued_in_the_step_are_published_once(real_redis: redis.Redis) -> None:
    r = real_redis
    a1 = make_alert("analytics", "k", "one", severity="info")
    a2 = make_alert("analytics", "k", "two", severity="info")

    def step(pipe: redis.client.Pipeline):  # noqa: ANN202
        rec = audit.stage(pipe, "command", "cli:a", "alerts", 1)

        def write(w):  # noqa: ANN001, ANN202
            w.emit(ALERTS, a1)
            w.emit(ALERTS, a2)
            audit.push(w, rec)
        return rec, write

    audit.transact(r, step)
    got = [decode(f[b"data"]) for _, f in r.xrange(ALERTS)]
    assert got == [a1, a2] and all(isinstance(m, Alert) for m in got) and r.llen(AUDIT_KEY) == 1
