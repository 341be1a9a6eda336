"""Re-base an open position's exit state after a split (or any price adjustment): a pure function.

A split of ``ratio`` (2.0 for 2:1; 0.5 for a 1:2 reverse split) multiplies share counts and divides
every price by it, so the position's stop sits at the same place relative to the adjusted bars the
scanner, exits and analytics now read. The backfill detects the ratio (``history_adjusted`` alert);
the operator applies it with ``avwap exits rebase SYMBOL --factor RATIO`` while the exits service is
stopped (docs/runbook.md, "Corporate actions"). Cash amounts (``exit_notional``) do not change.
Share counts are floored to whole shares (a reverse split's fraction is paid as cash in lieu).
"""

from __future__ import annotations

import math

import msgspec

from shared.schemas import ExitPositionState, Low, PendingStop, StopTracker


def _px(x: float, f: float) -> float:
    return x / f if x else x


def _qty(n: int, f: float) -> int:
    return int(math.floor(n * f + 1e-9))


def _low(x: Low | None, f: float) -> Low | None:
    return None if x is None else Low(x.ts, x.low / f)


def _pending(p: PendingStop | None, f: float) -> PendingStop | None:
    return None if p is None else msgspec.structs.replace(p, price=_px(p.price, f), qty=_qty(p.qty, f))


def rebase_position(pos: ExitPositionState, ratio: float) -> ExitPositionState:
    """``pos`` with prices / ``ratio`` and share counts * ``ratio`` (a new object; ``pos`` unchanged)."""
    if not ratio > 0 or not math.isfinite(ratio):
        raise ValueError(f"split ratio must be a positive number, not {ratio!r}")
    t = pos.tracker
    tracker = StopTracker(sessions=list(t.sessions), bars5=[Low(b.ts, b.low / ratio) for b in t.bars5],
                          part_end=t.part_end, part_low=_px(t.part_low, ratio), last_minute_ts=t.last_minute_ts,
                          last_minute_date=t.last_minute_date, daily=[Low(b.ts, b.low / ratio) for b in t.daily],
                          last_daily_ts=t.last_daily_ts, hl=_low(t.hl, ratio), swing=_low(t.swing, ratio))
    return msgspec.structs.replace(
        pos, qty=_qty(pos.qty, ratio), avg_entry_price=_px(pos.avg_entry_price, ratio),
        initial_stop=_px(pos.initial_stop, ratio), current_stop=_px(pos.current_stop, ratio),
        desired_stop=_px(pos.desired_stop, ratio), live_stop_price=_px(pos.live_stop_price, ratio),
        live_stop_qty=_qty(pos.live_stop_qty, ratio), stop_ref_low=_px(pos.stop_ref_low, ratio),
        last_close=_px(pos.last_close, ratio),
        pending=_pending(pos.pending, ratio), last_reject=_pending(pos.last_reject, ratio), tracker=tracker,
        entry_qty=_qty(pos.entry_qty, ratio), exit_qty=_qty(pos.exit_qty, ratio))
