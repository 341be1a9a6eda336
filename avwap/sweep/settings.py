"""Settings of the sweep's workers and coordinator (``avwap sweep``, ``avwap sweep-worker``)."""

from __future__ import annotations

from pydantic import Field

from shared.settings.base import Section


class SweepSettings(Section):
    """Parameter sweeps on rq (docs/research.md): the queue and the worker's bar cache."""

    sweep_queue: str = Field("avwap-sweep", min_length=1, description="rq queue of sweep points (`avwap sweep --queue`, `avwap sweep-worker --queue` default).")
    sweep_cache_dir: str = Field("", description="Where a sweep worker keeps the bar files it fetched from Redis (by sha256); empty: `avwap-sweep-cache` in the temp directory.")
