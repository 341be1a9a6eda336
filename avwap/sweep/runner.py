"""The coordinator behind ``avwap sweep``: enqueue the points, watch them, collect the results.

Each point is one rq job with a deterministic id (``avwap-sweep-<settings hash>``) on the named
queue, so a rerun finds the jobs of an interrupted run (finished ones give their result, queued or
running ones are waited for, failed ones are enqueued again) and skips every point already in
``results.parquet``. A job whose worker died is re-run through rq: every poll cleans the queue's
StartedJobRegistry, which re-enqueues an abandoned job that has retries left (``Retry``); a result
is keyed by its settings hash, so a point finished twice is counted once.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from avwap.sweep import results as R
from avwap.sweep.grid import Grid, Point, Window, point_hash, points, windows

JOB_FUNC = "avwap.sweep.jobs.run_point"
BARS_TTL_S = 7 * 86400


@dataclass
class SweepConfig:
    bars: Path
    start: str
    end: str
    grid: Grid
    out: Path
    queue: str = "avwap-sweep"
    equity: float = 100_000.0
    walk_forward: tuple[int, int] | None = None
    market_symbol: str = "SPY"
    retries: int = 2
    job_timeout_s: int = 6 * 3600
    poll_s: float = 0.5


@dataclass
class Task:
    spec: dict[str, Any]
    params: dict[str, Any]

    @property
    def key(self) -> str:
        return str(self.spec["settings_hash"])


@dataclass
class Outcome:
    rows: list[dict[str, Any]] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # settings hash -> error
    skipped: int = 0
    ranked: list[dict[str, Any]] = field(default_factory=list)
    walk_forward: list[dict[str, Any]] = field(default_factory=list)


def bars_ref(r: redis.Redis, path: Path) -> dict[str, str]:
    """Put the bar file's bytes in Redis once (content-addressed) and return the jobs' reference to it."""
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    key = f"avwap:sweep:bars:{sha}"
    if not r.set(key, data, nx=True, ex=BARS_TTL_S):
        r.expire(key, BARS_TTL_S)
    suffix = ".csv.gz" if path.name.endswith(".csv.gz") else path.suffix
    return {"key": key, "sha256": sha, "suffix": suffix}


def make_task(cfg: SweepConfig, bars: dict[str, str], p: Point, start: str, end: str, window: str) -> Task:
    env = p.env(cfg.grid.fixed)
    h = point_hash(env, bars["sha256"], start, end, cfg.equity)
    return Task(spec={"point": p.index, "window": window, "settings_hash": h, "start": start, "end": end,
                      "equity": cfg.equity, "env": env, "bars": bars, "market_symbol": cfg.market_symbol},
                params=dict(p.params))


class Collector:
    """Submits tasks as rq jobs and collects what finishes (each settings hash once)."""

    def __init__(self, r: redis.Redis, cfg: SweepConfig, on_done: Callable[[Task, dict[str, Any]], None]) -> None:
        from shared.jobs import SERIALIZER, job_queue

        self.r, self.cfg, self.on_done = r, cfg, on_done
        self.ser = SERIALIZER
        self.q = job_queue(cfg.queue, r)
        self.pending: dict[str, Task] = {}
        self.failed: dict[str, str] = {}

    def job_id(self, t: Task) -> str:
        return f"avwap-sweep-{t.key}"

    def submit(self, t: Task) -> None:
        from rq import Retry
        from rq.exceptions import NoSuchJobError
        from rq.job import Job, JobStatus

        if t.key in self.pending:
            return
        jid = self.job_id(t)
        try:
            job = Job.fetch(jid, connection=self.r, serializer=self.ser)
            if job.get_status() in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED, None):
                job.delete()
                job = None
        except NoSuchJobError:
            job = None
        if job is None:
            self.q.enqueue(JOB_FUNC, t.spec, job_id=jid, retry=Retry(max=self.cfg.retries),
                           job_timeout=self.cfg.job_timeout_s, result_ttl=BARS_TTL_S, failure_ttl=BARS_TTL_S,
                           description=f"avwap sweep point {t.spec['point']} {t.spec['window']}".strip())
        self.pending[t.key] = t

    def poll(self) -> int:
        """Re-enqueue abandoned jobs, collect finished ones; returns how many finished."""
        from rq.job import Job, JobStatus
        from rq.registry import StartedJobRegistry

        StartedJobRegistry(queue=self.q).cleanup()
        keys = sorted(self.pending)
        jobs = Job.fetch_many([self.job_id(self.pending[k]) for k in keys], connection=self.r, serializer=self.ser)
        n = 0
        for k, job in zip(keys, jobs, strict=True):
            t = self.pending[k]
            if job is None:  # expired or deleted meanwhile: submit again
                del self.pending[k]
                self.submit(t)
                continue
            status = job.get_status(refresh=False)
            if status == JobStatus.FINISHED:
                del self.pending[k]
                self.on_done(t, job.return_value(refresh=True))
                n += 1
            elif status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                del self.pending[k]
                res = job.latest_result()
                err = (getattr(res, "exc_string", "") or str(status)).strip().splitlines()
                self.failed[k] = err[-1] if err else str(status)
                n += 1
        return n


def _progress(total: int, done: int):  # noqa: ANN202 - rich objects
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    p = Progress(TextColumn("[bold]sweep[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                 TextColumn("ETA"), TimeRemainingColumn())
    p.start()
    return p, p.add_task("points", total=total, completed=done)


class Sweep:
    """One sweep (or walk-forward run) over ``cfg``; ``run`` returns when every task is done or failed."""

    def __init__(self, r: redis.Redis, cfg: SweepConfig, sessions: Sequence[str], progress: bool = True) -> None:
        self.r, self.cfg, self.progress = r, cfg, progress
        self.bars = bars_ref(r, cfg.bars)
        self.points = points(cfg.grid)
        self.windows: list[Window] = windows(sessions, *cfg.walk_forward) if cfg.walk_forward else []
        if cfg.walk_forward and not self.windows:
            raise ValueError("the span is too short for one walk-forward window (train + test months)")
        self.rows: dict[tuple[str, int], dict[str, Any]] = {}  # (window, point) -> table row
        self.results: dict[str, dict[str, Any]] = {}  # settings hash -> job result (one replay, many rows)
        self.tasks: dict[str, list[Task]] = {}  # settings hash -> the tasks that want it
        self.equity: dict[str, list[list[Any]]] = {}
        self.best: dict[int, Task] = {}  # window -> its test task

    def _train_tasks(self) -> list[Task]:
        if not self.windows:
            return [make_task(self.cfg, self.bars, p, self.cfg.start, self.cfg.end, "") for p in self.points]
        return [make_task(self.cfg, self.bars, p, w.train[0], w.train[1], f"w{w.index:02d}-train")
                for w in self.windows for p in self.points]

    def _load_done(self, keys: set[str]) -> None:
        for row in R.read_rows(self.cfg.out):
            h = str(row["settings_hash"])
            curve = self.cfg.out / "equity" / f"{h}.csv"
            if h in keys and curve.exists():
                self.equity[h] = [line.split(",") for line in curve.read_text().splitlines()[1:]]
                self.results[h] = {"settings_hash": h, "effective_settings_hash": row.get("effective_settings_hash", ""),
                                   "metrics": {k: row.get(k) for k in R.HEADLINE_KEYS}, "equity": self.equity[h]}

    def _record(self, t: Task, res: dict[str, Any]) -> None:
        """Keep a finished replay once (by settings hash) and give every task that wants it its row."""
        if t.key not in self.results:
            self.results[t.key] = res
            self.equity[t.key] = res["equity"]
            R.write_atomic_many({self.cfg.out / "equity" / f"{t.key}.csv":
                                 R.curve_csv([(d, float(e)) for d, e in res["equity"]])}, fsync=False)
        res = self.results[t.key]
        for u in self.tasks.get(t.key, [t]):
            self.rows[(u.spec["window"], u.spec["point"])] = R.row_of(res, u.spec["window"], u.spec["point"], u.params,
                                                                      u.spec["start"], u.spec["end"])
        R.write_table(self.cfg.out, list(self.rows.values()))

    def _want(self, t: Task, col: Collector) -> None:
        """Submit ``t`` unless its replay is already done (the same settings and span in another window)."""
        self.tasks.setdefault(t.key, []).append(t)
        if t.key in self.results:
            self._record(t, self.results[t.key])
        else:
            col.submit(t)

    def _row(self, t: Task) -> dict[str, Any] | None:
        return self.rows.get((t.spec["window"], t.spec["point"]))

    def _ready_tests(self, train: list[Task]) -> list[Task]:
        """Test tasks of every window whose train points are all done: the best train point on the test span."""
        out = []
        for w in self.windows:
            if w.index in self.best:
                continue
            label = f"w{w.index:02d}-train"
            mine = [t for t in train if t.spec["window"] == label]
            got = [self._row(t) for t in mine]
            if not all(got):
                continue
            top = R.rank(got, self.cfg.grid.metric)[0]  # type: ignore[arg-type]
            p = next(p for p in self.points if p.index == int(top["point"]))
            t = make_task(self.cfg, self.bars, p, w.test[0], w.test[1], f"w{w.index:02d}-test")
            self.best[w.index] = t
            out.append(t)
        return out

    def run(self) -> Outcome:
        self.cfg.out.mkdir(parents=True, exist_ok=True)
        train = self._train_tasks()
        tests_total = len(self.windows)
        every_key = {t.key for t in train}
        for w in self.windows:  # test tasks of a resumed run are known only once their train is: accept any
            every_key |= {make_task(self.cfg, self.bars, p, w.test[0], w.test[1], f"w{w.index:02d}-test").key
                          for p in self.points}
        self._load_done(every_key)
        skipped = len(self.results)
        col = Collector(self.r, self.cfg, self._record)
        for t in train:
            self._want(t, col)
        total = len(train) + tests_total
        bar = _progress(total, len(self.rows)) if self.progress else None
        try:
            while True:
                for t in self._ready_tests(train):
                    self._want(t, col)
                if not col.pending:
                    break
                col.poll()
                if bar is not None:
                    bar[0].update(bar[1], completed=len(self.rows) + len(col.failed))
                if col.pending:
                    time.sleep(self.cfg.poll_s)
                if col.failed and not col.pending:
                    break
        finally:
            if bar is not None:
                bar[0].stop()
        return self._finish(col, skipped)

    def _finish(self, col: Collector, skipped: int) -> Outcome:
        rows = R.sort_rows(self.rows.values())
        R.write_table(self.cfg.out, rows)
        plain = [r for r in rows if not str(r["window"]).endswith("-test")]
        files: dict[Path, bytes] = {}
        ranked = R.rank([r for r in plain if r["window"] == (plain[0]["window"] if plain else "")], self.cfg.grid.metric)
        import pandas as pd

        if ranked:
            files[self.cfg.out / "ranked.csv"] = pd.DataFrame(ranked).to_csv(index=False, lineterminator="\n").encode()
        axes = self.cfg.grid.heatmap or (tuple(k for k, v in self.cfg.grid.params.items() if len(v) > 1)[:2] or None)
        if axes and len(axes) == 2 and not self.windows and ranked:
            files[self.cfg.out / "heatmap.png"] = R.heatmap_png(plain, axes[0], axes[1], self.cfg.grid.metric)
        wf = self._walk_forward_rows() if self.windows else []
        if wf:
            oos = R.stitch([self.equity[self.best[w.index].key] for w in self.windows if w.index in self.best
                            and self.best[w.index].key in self.equity], self.cfg.equity)
            ins = R.stitch([self.equity[self._train_best(w).key] for w in self.windows if self._train_best(w)],
                           self.cfg.equity)
            files[self.cfg.out / "walkforward.csv"] = pd.DataFrame(wf).to_csv(index=False, lineterminator="\n").encode()
            files[self.cfg.out / "oos_equity.csv"] = R.curve_csv(oos)
            files[self.cfg.out / "is_equity.csv"] = R.curve_csv(ins)
            files[self.cfg.out / "walkforward.png"] = R.walkforward_png(oos, ins)
        if files:
            R.write_atomic_many(files, fsync=False)
        return Outcome(rows=rows, failed=dict(col.failed), skipped=skipped, ranked=ranked, walk_forward=wf)

    def _train_best(self, w: Window) -> Task | None:
        t = self.best.get(w.index)
        if t is None:
            return None
        p = next(p for p in self.points if p.index == t.spec["point"])
        return make_task(self.cfg, self.bars, p, w.train[0], w.train[1], f"w{w.index:02d}-train")

    def _walk_forward_rows(self) -> list[dict[str, Any]]:
        m = self.cfg.grid.metric
        out = []
        for w in self.windows:
            test, train = self.best.get(w.index), self._train_best(w)
            if test is None or train is None:
                continue
            tr, te = self._row(train), self._row(test)
            if tr is None or te is None:
                continue
            out.append({"window": w.index, "train_from": w.train[0], "train_to": w.train[1], "test_from": w.test[0],
                        "test_to": w.test[1], "best_point": test.spec["point"], "settings_hash": test.key,
                        f"in_sample_{m}": tr.get(m), f"out_of_sample_{m}": te.get(m),
                        "in_sample_cagr": tr.get("cagr"), "out_of_sample_cagr": te.get("cagr"),
                        "in_sample_total_return": tr.get("total_return"),
                        "out_of_sample_total_return": te.get("total_return")})
        return out
