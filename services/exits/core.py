"""Exits decisions (pure): position states + one input message -> new states, stop intents, exit events.

No Redis, no clock, no environment. The worker decodes fresh copies of the states for every
transaction; these functions update the copies they are given and return what to store and
publish (``Result``). Time is the event's time (bar ts, order event ts, snapshot ts, clock ts).

Per position (``ExitPositionState``): ``desired_stop`` is what the rules want and only rises;
``current_stop`` is the stop sent to the executor; ``live_stop_*`` the stop the executor confirmed.

- Bars: each bar of a held symbol feeds the position's ``StopTracker`` (``shared.stops``). A bar
  older than the last one taken, or invalid, is ignored and counted. A bar whose low reaches the
  current stop does not ratchet (the stop is being triggered on it); otherwise the desired stop
  rises to the candidate when the candidate is above it and below the bar's close. On a session
  with 1-minute bars of the symbol, its daily bar only extends the daily history.
- Entry fills open (or add to) a position: its tracker is seeded from the bar store (bars up to
  the fill, passed in by the shell), the initial stop comes from the entry intent, and the stop is
  resolved at once: ``max(initial, candidate below the fill price)`` (STOP_RESOLVED).
- Sending: only when the event time is inside the stop window of an NYSE session (early closes
  respected): WINDOW_OPEN, every 1-minute batch, every order event and every broker snapshot
  inside the window make the broker's stop the intended one (place, or replace for a new price or
  quantity; never lower). Outside the window the desired stop is recorded and waits. One intent at
  a time per position: the next waits for the executor's answer (or ``intent_timeout_s``).
- Order events: accepted/replaced confirm the stop; rejected is recorded (STOP_REJECTED; an
  identical intent is not re-sent before the timeout; insufficient qty marks the position blocked);
  stop fills are STOP_TRIGGERED; any sell fill reduces the position; at zero it is closed
  (POSITION_CLOSED).
- Broker snapshots (``reconciled=True`` and not older than the last one): exactly one live stop
  per open position for the held quantity at the intended price; missing -> place, wrong price or
  quantity -> replace, extra stops and stops of symbols not held -> cancel, shares held by another
  sell -> no action (STOP_BLOCKED, once); a snapshot newer than the position's last fill is the
  truth for the held quantity (zero: the position is closed, BROKER_FLAT). Outside the window it
  only records; cancels of orphan stops wait for the window too.

The core is split along those lines (each module pure): ``model`` (settings, index, ``Result``, the
counted reasons, the stop window), ``stop_rules`` (bars into the tracker, the ratchet, sending a
stop), ``positions`` (the position state machine: entry fills, stop and sell order events),
``reconcile`` (broker snapshots). This module handles the bar and session messages and re-exports
the rest: the worker and the tests use ``core.<name>``.
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.bars import row_problem
from shared.schemas import BarBatch, ExitEvent, ExitPositionState, SessionEvent

# ``from .part import X as X``: re-exported (the worker, the shell's helpers and the tests use ``core.<name>``)
from .model import B_HELD as B_HELD
from .model import C_BAR_BAD, C_BAR_UNHELD, ExitsIndex, Params, Result, _alert, _ignore, in_window
from .model import C_BAR_DUP as C_BAR_DUP
from .model import C_BAR_STALE as C_BAR_STALE
from .model import C_HALTED as C_HALTED
from .model import C_RECON_BLOCKED as C_RECON_BLOCKED
from .model import C_RECON_FOREIGN as C_RECON_FOREIGN
from .model import C_RECON_LOST as C_RECON_LOST
from .model import C_RECON_OUTSIDE as C_RECON_OUTSIDE
from .model import C_RECON_PENDING as C_RECON_PENDING
from .model import C_RECON_QTY as C_RECON_QTY
from .model import C_RECON_UNTRACKED as C_RECON_UNTRACKED
from .model import C_REJECT_WAIT as C_REJECT_WAIT
from .model import C_SNAPSHOT_STALE as C_SNAPSHOT_STALE
from .model import C_SNAPSHOT_UNREC as C_SNAPSHOT_UNREC
from .model import C_STOP_SIDE_WAIT as C_STOP_SIDE_WAIT
from .model import C_TIMEOUT as C_TIMEOUT
from .model import C_TRIGGER as C_TRIGGER
from .model import History as History
from .model import Orphan as Orphan
from .positions import history_through as history_through
from .positions import needs_history as needs_history
from .positions import on_order as on_order
from .reconcile import on_snapshot as on_snapshot
from .stop_rules import _cancel_orphans, _take, sync


# -- messages ------------------------------------------------------------------------------
def on_bars(index: ExitsIndex, positions: dict[str, ExitPositionState], batch: BarBatch, p: Params) -> Result:
    """A BarBatch: feed each held symbol's tracker, ratchet, and (1-minute, inside the window) send."""
    res = Result()
    minute = batch.tf == "1m"
    last = 0
    n_unheld = 0
    for bar in batch.bars:
        if bar.ts > last:
            last = bar.ts
        pos = positions.get(bar.symbol)
        if pos is None or pos.closed:
            n_unheld += 1
            continue
        bad = row_problem(bar)
        if bad is not None:
            _ignore(res, pos, C_BAR_BAD + bad)
            res.touch(pos)
            continue
        _take(pos, bar, minute, batch.trade_date, p, res)
        res.touch(pos)
    if n_unheld:
        res.count(C_BAR_UNHELD, n_unheld)
    if minute and last > index.last_minute_ts:
        index.last_minute_ts = last
        res.index_changed = True
    elif not minute and last > index.last_daily_ts:
        index.last_daily_ts = last
        res.index_changed = True
    if last and in_window(last, p.rules):
        for sym in sorted(positions):
            pos = positions[sym]
            if not pos.closed:
                sync(pos, last, batch.trade_date, p, res, "ratchet" if pos.stop_ts == last else "window")
        _cancel_orphans(index, last, batch.trade_date, p, res)
    return res


def on_session(index: ExitsIndex, positions: dict[str, ExitPositionState], ev: SessionEvent, p: Params) -> Result:
    """WINDOW_OPEN sends every recorded stop; CLOSE forgets positions closed on earlier sessions."""
    res = Result()
    if ev.trade_date > index.session:
        index.session = ev.trade_date
        res.index_changed = True
    if ev.phase == "WINDOW_OPEN" and in_window(ev.ts, p.rules):
        for sym in sorted(positions):
            pos = positions[sym]
            if pos.closed:
                continue
            sync(pos, ev.ts, ev.trade_date, p, res, "window_open")
            if pos.qty > 0 and not pos.live_stop_client_order_id and pos.pending is None:
                why = pos.blocked or ("no stop price" if pos.desired_stop <= 0 else "waiting after a rejection")
                _alert(res, "exit_unprotected", f"{sym}: no live stop at the window open", "critical", pos, ev.ts,
                       ev.trade_date, text=why, dedup=["unprotected", pos.position_id, ev.trade_date])
        _cancel_orphans(index, ev.ts, ev.trade_date, p, res)
    elif ev.phase == "CLOSE":
        for sym in sorted(positions):
            pos = positions[sym]
            if pos.closed and pos.closed_date < ev.trade_date:
                res.deleted.append(sym)
                index.closed.pop(sym, None)
                res.index_changed = True
    return res


# -- views -----------------------------------------------------------------------------------
def status_row(pos: ExitPositionState) -> dict[str, object]:
    """What ``avwap exits status`` shows for one position."""
    return {
        "symbol": pos.symbol, "position_id": pos.position_id, "qty": pos.qty, "avg_entry_price": pos.avg_entry_price,
        "opened": pos.opened_date, "initial_stop": pos.initial_stop, "desired_stop": pos.desired_stop,
        "current_stop": pos.current_stop, "live_stop": pos.live_stop_price or None,
        "live_stop_qty": pos.live_stop_qty, "live_client_order_id": pos.live_stop_client_order_id,
        "source": pos.stop_source, "ref_bar_ts": pos.stop_ref_ts, "ref_low": pos.stop_ref_low,
        "pending": None if pos.pending is None else f"{pos.pending.action} {pos.pending.qty}@{pos.pending.price}",
        "blocked": pos.blocked, "last_bar_ts": pos.last_bar_ts, "closed": pos.closed, "ignored": dict(sorted(pos.ignored.items())),
    }


def sorted_events(events: Iterable[ExitEvent]) -> list[ExitEvent]:
    """The deterministic order of exit events in the JSONL: time, symbol, the event's number, id."""
    return sorted(events, key=event_sort_key)


def event_sort_key(e: ExitEvent) -> tuple[int, str, int, str]:
    return (e.ts, e.symbol, e.seq, e.event_id)
