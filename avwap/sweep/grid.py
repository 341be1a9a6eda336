"""The grid file and the walk-forward windows (pure).

A grid file (YAML)::

    metric: sharpe                  # ranking metric (a HEADLINE_KEYS name); higher is better
    params:                         # settings (environment names) and the values to try
      MAX_CONCURRENT_POSITIONS: [3, 5]
      STOP_BUFFER: [0.05, 0.10]
    fixed: {SCAN_MARKET_GATE: universe_proxy}   # settings every point shares (optional)
    sample: {n: 8, seed: 7}         # optional: a seeded random sample of the grid instead of all of it
    heatmap: [MAX_CONCURRENT_POSITIONS, STOP_BUFFER]   # optional: the heat map's two axes

Points are the cartesian product of ``params`` (names sorted, values in file order), numbered
from 0 in that order; a sample keeps the numbers of the points it draws. Every name must be a
setting and every value valid for it (the settings classes check), or the file is refused.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from services.analytics.runreport import HEADLINE_KEYS
from shared.ids import stable_id

Scalar = str | int | float | bool
# settings a sweep may not set: where its outputs go and how it talks to its Redis
RESERVED = frozenset({"REDIS_URL", "ARTIFACTS_DIR", "LEDGER_DIR", "BARS_DIR", "EXECUTION_MODE", "CONSUMER_NAME",
                      "STARTING_CAPITAL", "ACCOUNT_EQUITY", "RUN_ID"})


@dataclass(frozen=True)
class Grid:
    params: dict[str, list[Scalar]]
    fixed: dict[str, Scalar] = field(default_factory=dict)
    metric: str = "sharpe"
    sample: tuple[int, int] | None = None  # (n, seed)
    heatmap: tuple[str, str] | None = None


@dataclass(frozen=True)
class Point:
    index: int
    params: dict[str, Scalar]

    def env(self, fixed: Mapping[str, Scalar]) -> dict[str, str]:
        return {k: env_value(v) for k, v in sorted({**fixed, **self.params}.items())}


def env_value(v: Scalar) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


def _setting_names() -> dict[str, type]:
    from shared.settings import SECTIONS

    return {name.upper(): cls for cls in SECTIONS for name in cls.model_fields}


def validate_env(env: Mapping[str, Scalar]) -> None:
    """Raise ValueError naming every unknown, reserved or invalid setting of ``env``."""
    from pydantic import ValidationError

    known = _setting_names()
    bad = sorted(k for k in env if k not in known or k in RESERVED)
    if bad:
        raise ValueError(f"not sweepable settings: {', '.join(bad)} (unknown, or reserved for the sweep itself)")
    by_cls: dict[type, dict[str, str]] = {}
    for k, v in env.items():
        by_cls.setdefault(known[k], {})[k.lower()] = env_value(v)
    for cls, values in by_cls.items():
        try:
            cls.model_validate(values)
        except ValidationError as exc:
            raise ValueError(f"invalid setting value: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from exc


def parse_grid(doc: Any) -> Grid:
    """A ``Grid`` from the parsed YAML document (ValueError with the reason when it is not one)."""
    if not isinstance(doc, dict):
        raise ValueError("a grid file is a mapping with at least `params`")
    unknown = set(doc) - {"params", "fixed", "metric", "sample", "heatmap"}
    if unknown:
        raise ValueError(f"unknown grid keys: {', '.join(sorted(unknown))}")
    params = doc.get("params")
    if not isinstance(params, dict) or not params:
        raise ValueError("`params` must map setting names to lists of values")
    clean: dict[str, list[Scalar]] = {}
    for k in sorted(params):
        vals = params[k] if isinstance(params[k], list) else [params[k]]
        if not vals or not all(isinstance(v, str | int | float | bool) for v in vals):
            raise ValueError(f"`params.{k}` must be a non-empty list of scalars")
        if len(set(map(repr, vals))) != len(vals):
            raise ValueError(f"`params.{k}` repeats a value")
        clean[str(k)] = list(vals)
    fixed = doc.get("fixed") or {}
    if not isinstance(fixed, dict) or set(fixed) & set(clean):
        raise ValueError("`fixed` must be a mapping of settings not also in `params`")
    metric = str(doc.get("metric", "sharpe"))
    if metric not in HEADLINE_KEYS:
        raise ValueError(f"`metric` must be one of {', '.join(HEADLINE_KEYS)}")
    sample = doc.get("sample")
    if sample is not None:
        if not isinstance(sample, dict) or not isinstance(sample.get("n"), int) or sample["n"] < 1:
            raise ValueError("`sample` must be {n: positive int, seed: int}")
        sample = (int(sample["n"]), int(sample.get("seed", 0)))
    heat = doc.get("heatmap")
    if heat is not None and (not isinstance(heat, list) or len(heat) != 2 or not set(heat) <= set(clean)):
        raise ValueError("`heatmap` must name two of the `params`")
    for k, vals in clean.items():
        for v in vals:
            validate_env({**fixed, k: v})
    validate_env(fixed)
    return Grid(params=clean, fixed={str(k): v for k, v in sorted(fixed.items())}, metric=metric, sample=sample,
                heatmap=(str(heat[0]), str(heat[1])) if heat else None)


def load_grid(path: str | Path) -> Grid:
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read grid file {path}: {exc}") from exc
    return parse_grid(doc)


def points(grid: Grid) -> list[Point]:
    names = list(grid.params)
    every = [Point(i, dict(zip(names, combo, strict=True)))
             for i, combo in enumerate(itertools.product(*(grid.params[n] for n in names)))]
    if grid.sample is None or grid.sample[0] >= len(every):
        return every
    n, seed = grid.sample
    return sorted(random.Random(seed).sample(every, n), key=lambda p: p.index)


def point_hash(env: Mapping[str, str], bars_sha: str, start: str, end: str, equity: float) -> str:
    """The settings hash of one replay: its settings, the bars' content hash, its span and equity."""
    return stable_id("sw", sorted(env.items()), bars_sha, start, end, repr(float(equity)), length=16)


def _add_months(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 + months, 12)
    return date(d.year + y, m + 1, 1)


@dataclass(frozen=True)
class Window:
    index: int
    train: tuple[str, str]
    test: tuple[str, str]


def parse_walk_forward(spec: str) -> tuple[int, int]:
    try:
        train, test = (int(x) for x in spec.split(":"))
    except ValueError as exc:
        raise ValueError(f"--walk-forward must be TRAIN:TEST in months (e.g. 12:3), not {spec!r}") from exc
    if train < 1 or test < 1:
        raise ValueError("--walk-forward months must be >= 1")
    return train, test


def windows(sessions: Sequence[str], train_months: int, test_months: int) -> list[Window]:
    """Rolling windows over ``sessions``: train = ``train_months`` calendar months from the first
    month of the span, test = the next ``test_months``; each window starts ``test_months`` after the
    last. A window's spans are the sessions inside them; a window whose test span is empty is dropped."""
    if not sessions:
        return []
    first = date.fromisoformat(sessions[0]).replace(day=1)
    out: list[Window] = []
    k = 0
    while True:
        t0 = _add_months(first, k * test_months)
        t1 = _add_months(t0, train_months)
        t2 = _add_months(t1, test_months)
        train = [s for s in sessions if t0.isoformat() <= s < t1.isoformat()]
        test = [s for s in sessions if t1.isoformat() <= s < t2.isoformat()]
        if not test or not train:
            break
        out.append(Window(k, (train[0], train[-1]), (test[0], test[-1])))
        k += 1
    return out
