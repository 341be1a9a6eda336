"""Offline regime work: label every session of a bar file, and ``avwap regime validate`` (two
replays of the same bars, modulation off and on, side by side; docs/regime.md)."""

from __future__ import annotations

import html
import io
import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from shared.artifacts import canonical_json, code_version, write_atomic_many
from shared.bars import Panel
from shared.clock import calendar
from shared.schemas import Regime
from shared.settings import Settings
from shared.universe import read_universe

LABEL_COLORS = {"RISK_ON": "#d5f5e3", "NEUTRAL": "#f2f3f4", "RISK_OFF": "#fdebd0", "STRESSED": "#f5b7b1",
                "REGIME_UNKNOWN": "#d6dbdf"}


def label_sessions(frame: pd.DataFrame, start: str, end: str, settings: Settings) -> list[Regime]:
    """The Regime as of every session in [start, end] that has bars, each from the bars on or before
    it only (the same window of ``REGIME_HISTORY_BARS`` sessions the worker reads)."""
    from services.regime.core import Params, classify

    p = Params.from_settings(settings.regime, settings.scanner.scan_market_symbol)
    panel = Panel.from_frame(frame, through=end)
    ufile = settings.scanner.scan_universe_file
    universe = list(read_universe(ufile)) if ufile else None
    cal = calendar()
    out: list[Regime] = []
    for i, d in enumerate(panel.dates):
        if d < start:
            continue
        lo = max(0, i + 1 - p.history_bars)
        out.append(classify(panel.close[lo:i + 1], panel.dates[lo:i + 1], panel.symbols, d, cal.next_session(d),
                            universe, p))
    return out


def regime_summary(labels: Sequence[Regime]) -> dict[str, Any]:
    """Sessions per label (count and share) and every transition (date, from, to, why)."""
    counts = Counter(r.label for r in labels)
    n = len(labels) or 1
    transitions = [{"date": b.date, "from": a.label, "to": b.label, "rule": b.rule, "reason": b.reason}
                   for a, b in zip(labels, labels[1:], strict=False) if a.label != b.label]
    return {"sessions": len(labels),
            "time_in_regime": {k: {"sessions": counts[k], "share": round(counts[k] / n, 6)} for k in sorted(counts)},
            "transitions": transitions}
