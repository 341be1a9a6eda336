"""The sweep's rq job: ``run_point(spec)`` replays one point on its own private Redis.

``spec`` (JSON): ``point`` (int), ``window`` (str label, "" outside walk-forward), ``settings_hash``,
``start``/``end``, ``equity``, ``env`` (settings for the services, str -> str), ``bars``
(``{"key", "sha256", "suffix"}``: the bar file's bytes in the sweep's Redis under ``key``) and
``market_symbol``. A worker on any machine needs no shared disk: it fetches the bars once into its
cache (``SWEEP_CACHE_DIR``, default the temp dir), checks their sha256, replays into a temp
directory, and returns the point's headline metrics and daily equity (JSON). The worker's own
environment must not change strategy settings: the effective settings hash the services recorded
is returned (``effective_settings_hash``) so that a mismatch between machines shows in the table.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import redis

from shared.artifacts import write_atomic

READY_TIMEOUT_S = 180.0  # a worker's machine may be busy with other points: slow starts are not failures


def cache_dir() -> Path:
    from avwap.sweep.settings import SweepSettings

    return Path(SweepSettings().sweep_cache_dir or Path(tempfile.gettempdir()) / "avwap-sweep-cache")


def fetch_bars(r: redis.Redis, bars: dict[str, str]) -> Path:
    """The bar file of ``bars`` in the local cache, fetched from Redis when missing (sha256 checked)."""
    sha, suffix = str(bars["sha256"]), str(bars["suffix"])
    if not sha.isalnum() or "/" in suffix or ".." in suffix:
        raise ValueError("malformed bars reference")
    path = cache_dir() / f"{sha}{suffix}"
    if path.exists():
        return path
    data = r.get(str(bars["key"]))
    if data is None:
        raise RuntimeError(f"the sweep's bar file {sha[:12]} is not in Redis (key {bars['key']}); rerun `avwap sweep`")
    if hashlib.sha256(data).hexdigest() != sha:
        raise RuntimeError(f"the bar file in Redis does not match its sha256 {sha[:12]}")
    write_atomic(path, data, fsync=False)
    return path


def replay_point(spec: dict[str, Any], bars_path: Path) -> dict[str, Any]:
    """Replay one point from a local bar file; the job's result (JSON-ready)."""
    from avwap.replay import ReplayConfig
    from avwap.replay_run import prepare, run_replay
    from services.analytics.runreport import equity_series, headline_metrics, load_run, run_report
    from shared.redis_conn import embedded_redis

    inp = prepare(bars_path, None, spec["start"], spec["end"])
    if not inp.sessions:
        raise ValueError(f"no sessions with daily bars between {spec['start']} and {spec['end']}")
    with tempfile.TemporaryDirectory(prefix="avwap-sweep-") as tmp, embedded_redis() as emb:
        out = Path(tmp)
        cfg = ReplayConfig(start=spec["start"], end=spec["end"], out=out, mode="PAPER_SIM",
                           equity=float(spec["equity"]), replicas=1, env={str(k): str(v) for k, v in spec["env"].items()},
                           ready_timeout_s=READY_TIMEOUT_S)
        run_replay(inp, cfg, emb.url, tearsheet=False)
        rep = run_report(load_run(out, market_symbol=str(spec.get("market_symbol", "SPY"))))
    return {"point": int(spec["point"]), "window": str(spec.get("window", "")), "settings_hash": spec["settings_hash"],
            "effective_settings_hash": rep["provenance"].get("settings_hash", ""),
            "metrics": headline_metrics(rep), "equity": [[d, round(e, 4)] for d, e in equity_series(rep)]}


def run_point(spec: dict[str, Any]) -> dict[str, Any]:
    """The rq job (``avwap.sweep.jobs.run_point``): one point of a sweep, on the worker that takes it."""
    from rq import get_current_job

    job = get_current_job()
    if job is None:
        raise RuntimeError("run_point runs as an rq job (use replay_point outside rq)")
    return replay_point(spec, fetch_bars(job.connection, spec["bars"]))
