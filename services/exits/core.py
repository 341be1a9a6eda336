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
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import msgspec

from shared.alerts import make_alert
from shared.bars import row_problem
from shared.clock import NS, calendar
from shared.ids import client_order_id, stable_id
from shared.schemas import (
    Alert,
    BarBatch,
    BarRow,
    BrokerOrder,
    BrokerSnapshot,
    ExitEvent,
    ExitPositionState,
    OrderEvent,
    PendingStop,
    SessionEvent,
    StopIntent,
    StopTracker,
)
from shared.stops import (
    SOURCE_BROKER,
    SOURCE_INITIAL,
    StopRules,
    had_minutes_on,
    ny_date,
    to_tick,
    track_daily,
    track_minute,
    tracker_candidate,
)

SERVICE = "exits"
FILL_EVENTS = ("filled", "partially_filled")
STOP_TYPES = ("stop", "stop_limit")
# broker statuses in which an order no longer holds shares (or is on its way out)
NOT_LIVE = frozenset({"filled", "canceled", "cancelled", "expired", "rejected", "replaced", "done_for_day",
                      "stopped", "pending_cancel"})
KEEP_FILL_KEYS = 200
KEEP_STOP_IDS = 50
EPS = 1e-9

# counted reasons (the worker adds them to avwap:state:exits:stats; `avwap exits status` shows them)
C_BAR_STALE = "bar_ignored:stale"  # older than the last bar taken (either timeframe)
C_BAR_DUP = "bar_ignored:duplicate"  # same ts as the last bar of its timeframe (a redelivery)
C_BAR_BAD = "bar_rejected:"  # + the shared.bars reason code
C_BAR_UNHELD = "bars:not_held"
C_TRIGGER = "bar:reached_stop"  # the bar reached the current stop: no ratchet on it
C_ORDER_DUP = "order_ignored:duplicate_fill"
C_ORDER_OTHER = "order_ignored:"  # + kind:event
C_SNAPSHOT_STALE = "snapshot_ignored:stale"
C_SNAPSHOT_UNREC = "recon_wait:snapshot_unreconciled"
C_RECON_PENDING = "recon_wait:intent_pending"
C_RECON_OUTSIDE = "recon_wait:outside_window"
C_RECON_BLOCKED = "recon_no_action:shares_held_by_other_sell"
C_RECON_UNTRACKED = "recon_no_action:untracked_position"
C_RECON_FOREIGN = "recon_no_action:stop_not_an_executor_order"
C_RECON_QTY = "recon:qty_adopted_from_broker"
C_RECON_LOST = "recon:live_stop_missing"
C_TIMEOUT = "intent_timeout"
B_HELD = "SHARES_HELD_BY_OTHER_SELL"  # blocked: another sell order holds the shares
B_FOREIGN = "STOP_NOT_MANAGEABLE"  # blocked: the live stop is not an order of the executor
C_REJECT_WAIT = "send_wait:same_intent_rejected"
C_STOP_SIDE_WAIT = "send_wait:stop_through_market"
STOP_SIDE_MARGIN = 1.001  # Alpaca refuses a sell stop above last price / 1.001
C_HALTED = "send_wait:trading_halted"


class Params(msgspec.Struct, frozen=True, kw_only=True):
    """The exits settings as plain values (``from_settings`` reads an ``ExitsSettings``)."""

    rules: StopRules = StopRules()
    intent_timeout_s: int = 300
    # the trading state is HALTED for this message (read by the shell): a live stop is not replaced
    # (it stays at the broker; the desired stop waits), a position without one still gets its first stop
    halted: bool = False

    @classmethod
    def from_settings(cls, exits: object) -> Params:
        return cls(rules=StopRules.from_settings(exits), intent_timeout_s=exits.intent_timeout_s)  # type: ignore[attr-defined]


class Orphan(msgspec.Struct, kw_only=True):
    """A stop the broker holds for a symbol that has no open position: to cancel inside the window."""

    symbol: str
    client_order_id: str
    position_id: str = ""
    reason: str = ""
    sent: bool = False


class ExitsIndex(msgspec.Struct, kw_only=True):
    """Service-wide state (``avwap:state:exits:index``): which symbols are held, and event-time marks."""

    v: int = 1
    open: list[str] = []
    last_minute_ts: int = 0
    last_daily_ts: int = 0
    last_snapshot_ts: int = 0
    session: str = ""
    orphans: dict[str, Orphan] = {}  # client_order_id -> orphan stop
    closed: dict[str, str] = {}  # symbol -> NY date its position closed (forgotten at a later session's CLOSE)


@dataclass
class Result:
    """What one message changed: states to store, positions to forget, messages to publish, counts."""

    changed: dict[str, ExitPositionState] = field(default_factory=dict)  # symbol -> state (closed ones too)
    deleted: list[str] = field(default_factory=list)  # symbols whose (closed) state is dropped
    intents: list[StopIntent] = field(default_factory=list)
    events: list[ExitEvent] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    index_changed: bool = False

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def touch(self, pos: ExitPositionState) -> None:
        self.changed[pos.symbol] = pos


@dataclass(frozen=True)
class History:
    """Bars of one symbol from the bar store (the shell reads them for an opening position)."""

    daily: Sequence[BarRow] = ()
    minutes: Sequence[BarRow] = ()


# -- time ----------------------------------------------------------------------------------
_BOUNDS: dict[tuple[str, str, str], tuple[int, int] | None] = {}


def window_bounds(d: str, rules: StopRules) -> tuple[int, int] | None:
    """The stop window of session ``d`` (None when ``d`` is not an NYSE session)."""
    key = (d, rules.window_start, rules.window_end)
    if key not in _BOUNDS:
        cal = calendar()
        _BOUNDS[key] = cal.window_bounds(d, rules.window_start, rules.window_end) if cal.is_session(d) else None
    return _BOUNDS[key]


def in_window(ts: int, rules: StopRules) -> bool:
    b = window_bounds(ny_date(ts), rules)
    return b is not None and b[0] <= ts <= b[1]


# -- small helpers -------------------------------------------------------------------------
def _event(res: Result, pos: ExitPositionState, kind: str, ts: int, trade_date: str, p: Params, **kw: object) -> ExitEvent:
    pos.seq += 1
    ev = ExitEvent(event_id=stable_id("xe", pos.position_id, pos.seq, kind), kind=kind, symbol=pos.symbol,
                   position_id=pos.position_id, trade_date=trade_date, ts=ts, seq=pos.seq, buffer=p.rules.buffer,
                   **kw)  # type: ignore[arg-type]
    res.events.append(ev)
    return ev


def _alert(res: Result, kind: str, title: str, severity: str, pos_or_symbol: ExitPositionState | str, ts: int,
           trade_date: str, text: str = "", dedup: object = None) -> None:
    symbol = pos_or_symbol if isinstance(pos_or_symbol, str) else pos_or_symbol.symbol
    pid = "" if isinstance(pos_or_symbol, str) else pos_or_symbol.position_id
    res.alerts.append(make_alert(SERVICE, kind, title, severity=severity, text=text, trade_date=trade_date, ts=ts,
                                 fields={"symbol": symbol, "position_id": pid},
                                 dedup=str(dedup if dedup is not None else [kind, pid or symbol, title]),
                                 runbook="exits-and-protective-stops"))


def _ignore(res: Result, pos: ExitPositionState | None, key: str) -> None:
    res.count(key)
    if pos is not None:
        pos.ignored[key] = pos.ignored.get(key, 0) + 1


def _set_desired(pos: ExitPositionState, stop: float, source: str, ref_ts: int, ref_low: float, ts: int) -> None:
    pos.desired_stop, pos.stop_source, pos.stop_ref_ts, pos.stop_ref_low, pos.stop_ts = stop, source, ref_ts, ref_low, ts


def _ratchet(pos: ExitPositionState, ts: int, close: float, trade_date: str, p: Params, res: Result) -> None:
    c = tracker_candidate(pos.tracker, p.rules)
    if c is None or c.stop <= pos.desired_stop + EPS or c.stop >= close:
        return
    prev = pos.desired_stop
    _set_desired(pos, c.stop, c.source, c.ref_ts, c.ref_low, ts)
    _event(res, pos, "STOP_RATCHET", ts, trade_date, p, stop_price=c.stop, previous_stop=prev, source=c.source,
           ref_bar_ts=c.ref_ts, ref_low=c.ref_low, qty=pos.qty)


def _reaches_stop(pos: ExitPositionState, bar: BarRow, res: Result) -> bool:
    if pos.current_stop > 0 and bar.low <= pos.current_stop:
        res.count(C_TRIGGER)
        return True
    return False


def _take(pos: ExitPositionState, bar: BarRow, minute: bool, trade_date: str, p: Params, res: Result) -> None:
    """One bar of a held symbol: into the tracker, then (unless it reaches the stop) the ratchet."""
    tr = pos.tracker
    took = track_minute(tr, bar, p.rules) if minute else track_daily(tr, bar, p.rules)
    if not took:
        _ignore(res, pos, C_BAR_DUP if bar.ts == (tr.last_minute_ts if minute else tr.last_daily_ts) else C_BAR_STALE)
        return
    pos.last_bar_ts = max(pos.last_bar_ts, bar.ts)
    pos.last_close = bar.close
    if not minute and had_minutes_on(tr, ny_date(bar.ts)):
        return  # the session's minutes drove the stop; its daily bar is history for the fallback
    if not _reaches_stop(pos, bar, res):
        _ratchet(pos, bar.ts, bar.close, trade_date, p, res)


# -- sending -------------------------------------------------------------------------------
def _send(pos: ExitPositionState, action: str, price: float, qty: int, ts: int, trade_date: str, p: Params,
          res: Result, why: str, target: str = "") -> None:
    pos.seq += 1
    iid = stable_id("xs", pos.position_id, action, price, qty, pos.seq)
    coid = client_order_id(iid)
    res.intents.append(StopIntent(intent_id=iid, symbol=pos.symbol, trade_date=trade_date, action=action, qty=qty,
                                  stop_price=price, target_client_order_id=target, reason=why, ts=ts))
    pos.pending = PendingStop(intent_id=iid, client_order_id=coid, action=action, price=price, qty=qty, ts=ts,
                              target=target)
    prev = pos.live_stop_price
    pos.current_stop = price
    pos.stop_client_order_ids = [*pos.stop_client_order_ids[-(KEEP_STOP_IDS - 1):], coid]
    kind = "STOP_SUBMITTED" if action == "place" else "STOP_REPLACED"
    _event(res, pos, kind, ts, trade_date, p, stop_price=price, previous_stop=prev, source=pos.stop_source,
           ref_bar_ts=pos.stop_ref_ts, ref_low=pos.stop_ref_low, qty=qty, reason=why, intent_id=iid,
           client_order_id=coid)


def _pending_open(pos: ExitPositionState, ts: int, p: Params, res: Result) -> bool:
    """True while an intent waits for its answer; a timed-out one is forgotten (and may be re-sent)."""
    if pos.pending is None:
        return False
    if ts - pos.pending.ts < p.intent_timeout_s * NS:
        return True
    res.count(C_TIMEOUT)
    pos.pending = None
    pos.current_stop = pos.live_stop_price
    res.touch(pos)
    return False


def sync(pos: ExitPositionState, ts: int, trade_date: str, p: Params, res: Result, why: str) -> None:
    """Inside the window: make the broker's stop the intended one (one intent at a time; never lower)."""
    if pos.closed or pos.qty <= 0 or pos.blocked or pos.desired_stop <= 0:
        return
    if _pending_open(pos, ts, p, res):
        return
    live = pos.live_stop_client_order_id
    price = max(pos.desired_stop, pos.live_stop_price if live else 0.0)
    if live and abs(pos.live_stop_price - price) < EPS and pos.live_stop_qty == pos.qty:
        return
    action = "replace" if live else "place"
    if p.halted and live:
        res.count(C_HALTED)
        return
    rj = pos.last_reject
    if rj is not None and rj.action == action and abs(rj.price - price) < EPS and rj.qty == pos.qty \
            and ts - rj.ts < p.intent_timeout_s * NS:
        res.count(C_REJECT_WAIT)
        return
    if rj is not None and rj.reason_code == "STOP_SIDE" and action == "replace" and price >= rj.price - EPS \
            and not (pos.last_bar_ts > rj.ts and price * STOP_SIDE_MARGIN <= pos.last_close):
        res.count(C_STOP_SIDE_WAIT)  # the old stop stays live; the ratchet waits for a bar that closes above it
        return
    if live and pos.live_stop_qty != pos.qty and abs(pos.live_stop_price - price) < EPS:
        why = f"{why}: qty {pos.live_stop_qty}->{pos.qty}"
    res.touch(pos)
    _send(pos, action, price, pos.qty, ts, trade_date, p, res, why, target=live)


def _cancel_orphans(index: ExitsIndex, ts: int, trade_date: str, p: Params, res: Result) -> None:
    for coid in sorted(index.orphans):
        o = index.orphans[coid]
        if o.sent:
            continue
        iid = stable_id("xs", "cancel", coid)
        res.intents.append(StopIntent(intent_id=iid, symbol=o.symbol, trade_date=trade_date, action="cancel",
                                      target_client_order_id=coid, reason=o.reason, ts=ts))
        res.events.append(ExitEvent(event_id=stable_id("xe", "cancel", coid), kind="STOP_CANCELLED", symbol=o.symbol,
                                    position_id=o.position_id, trade_date=trade_date, ts=ts, reason=o.reason,
                                    intent_id=iid, client_order_id=coid, buffer=p.rules.buffer))
        o.sent = True
        res.index_changed = True


def _orphan(index: ExitsIndex, o: BrokerOrder | tuple[str, str], position_id: str, reason: str, res: Result) -> None:
    symbol, coid = (o.symbol, o.client_order_id) if isinstance(o, BrokerOrder) else o
    if coid and coid not in index.orphans:
        index.orphans[coid] = Orphan(symbol=symbol, client_order_id=coid, position_id=position_id, reason=reason)
        res.index_changed = True


# -- opening and closing -------------------------------------------------------------------
def needs_history(pos: ExitPositionState | None, ev: OrderEvent) -> bool:
    """True when ``ev`` opens a position (the shell then reads the symbol's bars from the store)."""
    return (ev.kind == "entry" and ev.side == "buy" and ev.event in FILL_EVENTS and ev.fill_qty > 0
            and (pos is None or pos.closed))


def history_through(index: ExitsIndex, ev: OrderEvent) -> int:
    """Bars the shell reads for an opening position: up to the fill, or to the last bar already handled
    (bars handled before the fill arrived are caught up after the stop is resolved)."""
    return max(ev.ts, index.last_minute_ts, index.last_daily_ts)


def _seed(tr: StopTracker, hist: History, upto: int, p: Params) -> tuple[list[tuple[int, int, BarRow]], int]:
    """Feed the store's bars up to ``upto`` into the tracker; return the later ones (to catch up)."""
    merged = sorted([(b.ts, 0, b) for b in hist.minutes] + [(b.ts, 1, b) for b in hist.daily], key=lambda x: (x[0], x[1]))
    later = []
    last = 0
    for ts, tf, b in merged:
        if ts > upto:
            later.append((ts, tf, b))
            continue
        if row_problem(b) is not None:
            continue
        if track_minute(tr, b, p.rules) if tf == 0 else track_daily(tr, b, p.rules):
            last = ts
    return later, last


def _open(index: ExitsIndex, ev: OrderEvent, hist: History, p: Params, res: Result) -> ExitPositionState:
    price = float(ev.fill_price or 0.0)
    initial = to_tick(float(ev.stop_price or 0.0))
    pos = ExitPositionState(position_id=stable_id("xp", ev.symbol, ev.intent_id), symbol=ev.symbol, qty=0,
                            avg_entry_price=price, opened_ts=ev.ts, opened_date=ev.trade_date, initial_stop=initial,
                            current_stop=0.0, desired_stop=initial, stop_source=SOURCE_INITIAL,
                            entry_intent_id=ev.intent_id, stop_ts=ev.ts)
    later, last = _seed(pos.tracker, hist, ev.ts, p)
    pos.last_bar_ts = last
    c = tracker_candidate(pos.tracker, p.rules)
    reason = ""
    if c is None:
        reason = "no structure yet: the initial stop stands"
    elif not p.rules.resolve_on_entry:
        reason = "resolve on entry is off"
    elif c.stop >= price:
        reason = f"candidate {c.stop} ({c.source}) is not below the fill price {price}"
    elif c.stop <= initial + EPS:
        reason = f"candidate {c.stop} ({c.source}) is not above the initial stop"
    else:
        _set_desired(pos, c.stop, c.source, c.ref_ts, c.ref_low, ev.ts)
    if initial <= 0 and pos.desired_stop <= 0:
        reason = "NO_STOP: the entry carries no protective stop and the bars give no structure"
        _alert(res, "exit_no_stop", f"{ev.symbol}: position opened without any stop", "critical", pos, ev.ts,
               ev.trade_date, text=reason)
    _event(res, pos, "STOP_RESOLVED", ev.ts, ev.trade_date, p, stop_price=pos.desired_stop, previous_stop=initial,
           source=pos.stop_source, ref_bar_ts=pos.stop_ref_ts, ref_low=pos.stop_ref_low, qty=int(ev.fill_qty),
           reason=reason)
    _add_buy(pos, ev)
    for _, tf, b in later:  # bars the service handled before this fill arrived
        _take(pos, b, tf == 0, ny_date(b.ts), p, res)
    if ev.symbol not in index.open:
        index.open = sorted([*index.open, ev.symbol])
        res.index_changed = True
    if index.closed.pop(ev.symbol, None) is not None:  # reopened: the closed state it replaces is gone
        res.index_changed = True
    return pos


def _add_buy(pos: ExitPositionState, ev: OrderEvent) -> None:
    q = int(ev.fill_qty)
    price = float(ev.fill_price or 0.0)
    total = pos.qty + q
    pos.avg_entry_price = round((pos.avg_entry_price * pos.qty + price * q) / total, 6) if total else price
    pos.qty = total
    pos.entry_qty += q
    pos.last_fill_ts = max(pos.last_fill_ts, ev.ts)


def _close(index: ExitsIndex, pos: ExitPositionState, ts: int, trade_date: str, reason: str, p: Params,
           res: Result) -> None:
    pos.closed, pos.closed_ts, pos.closed_date, pos.closed_reason = True, ts, trade_date, reason
    pos.qty = 0
    avg = round(pos.exit_notional / pos.exit_qty, 6) if pos.exit_qty else None
    _event(res, pos, "POSITION_CLOSED", ts, trade_date, p, stop_price=pos.current_stop, qty=pos.exit_qty,
           exit_price=avg, reason=reason, source=pos.stop_source)
    if pos.live_stop_client_order_id and pos.live_stop_qty > 0:  # a stop that would now sell short: cancel it
        _orphan(index, (pos.symbol, pos.live_stop_client_order_id), pos.position_id, f"position closed ({reason})", res)
    pos.pending = None  # an unanswered intent is refused by the broker (nothing to sell); a snapshot catches the rest
    pos.live_stop_client_order_id, pos.live_stop_qty = "", 0
    if pos.symbol in index.open:
        index.open = [s for s in index.open if s != pos.symbol]
        res.index_changed = True
    index.closed[pos.symbol] = trade_date
    res.index_changed = True


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


def _fill_key(ev: OrderEvent) -> str:
    return ev.trade_id or ev.event_id


def _new_fill(pos: ExitPositionState, ev: OrderEvent) -> bool:
    key = _fill_key(ev)
    if key in pos.fill_keys:
        return False
    pos.fill_keys = [*pos.fill_keys[-(KEEP_FILL_KEYS - 1):], key]
    return True


def on_order(index: ExitsIndex, pos: ExitPositionState | None, ev: OrderEvent, p: Params,
             hist: History | None = None) -> Result:
    """An OrderEvent about the symbol: open/size from entry fills, track our stops, close on sells."""
    res = Result()
    if ev.client_order_id in index.orphans and ev.event in ("cancelled", "filled", "rejected"):
        del index.orphans[ev.client_order_id]
        res.index_changed = True
    if ev.kind == "entry":
        if not (ev.side == "buy" and ev.event in FILL_EVENTS and ev.fill_qty > 0):
            res.count(f"{C_ORDER_OTHER}entry:{ev.event}")
            return res
        if needs_history(pos, ev):
            pos = _open(index, ev, hist or History(), p, res)
            pos.fill_keys = [_fill_key(ev)]
        else:
            assert pos is not None
            if not _new_fill(pos, ev):
                _ignore(res, pos, C_ORDER_DUP)
                return res
            _add_buy(pos, ev)
        res.touch(pos)
    elif pos is None or pos.closed:
        res.count(f"{C_ORDER_OTHER}{ev.kind}:{ev.event}:no_open_position")
        if ev.side == "sell" and ev.event in FILL_EVENTS and ev.fill_qty > 0 and (pos is None or ev.ts > pos.closed_ts):
            _alert(res, "exit_sell_without_position", f"{ev.symbol}: {ev.kind} order sold {ev.fill_qty} shares with no "
                   "open position (check for a short)", "critical", pos or ev.symbol, ev.ts, ev.trade_date,
                   text=f"{ev.client_order_id} {ev.reason}", dedup=["short", ev.event_id])
        return res
    elif ev.kind == "stop":
        _on_stop_event(index, pos, ev, p, res)
    else:  # exit (or any other sell)
        if ev.side == "sell" and ev.event in FILL_EVENTS and ev.fill_qty > 0:
            if not _new_fill(pos, ev):
                _ignore(res, pos, C_ORDER_DUP)
                return res
            _sell(index, pos, ev, p, res, kind=None)
        else:
            res.count(f"{C_ORDER_OTHER}{ev.kind}:{ev.event}")
        if pos.blocked.startswith(B_HELD) and ev.event in ("filled", "cancelled", "rejected") \
                and ev.reason_code != "STOP_RESTORED":  # restored: the restore's accepted event unblocks it
            pos.blocked = ""  # the other sell is done; the next snapshot blocks again if shares are still held
        res.touch(pos)
    if in_window(ev.ts, p.rules):
        if pos is not None and not pos.closed:
            sync(pos, ev.ts, ev.trade_date, p, res, "entry" if ev.kind == "entry" else "order_event")
        _cancel_orphans(index, ev.ts, ev.trade_date, p, res)
    return res


def _sell(index: ExitsIndex, pos: ExitPositionState, ev: OrderEvent, p: Params, res: Result, kind: str | None) -> None:
    q = min(int(ev.fill_qty), pos.qty)
    price = float(ev.fill_price or 0.0)
    pos.qty -= q
    pos.exit_qty += q
    pos.exit_notional += q * price
    pos.last_fill_ts = max(pos.last_fill_ts, ev.ts)
    if kind == "STOP_TRIGGERED":
        known = ev.client_order_id in pos.stop_client_order_ids
        _event(res, pos, "STOP_TRIGGERED", ev.ts, ev.trade_date, p, stop_price=float(ev.stop_price or 0.0),
               previous_stop=pos.desired_stop, source=pos.stop_source, ref_bar_ts=pos.stop_ref_ts,
               ref_low=pos.stop_ref_low, qty=q, exit_price=price, client_order_id=ev.client_order_id,
               reason="" if known else "a stop order this position did not send")
        if ev.client_order_id == pos.live_stop_client_order_id:
            pos.live_stop_qty = max(pos.live_stop_qty - q, 0)
            if pos.live_stop_qty == 0:  # the stop order is done
                pos.live_stop_client_order_id = ""
    if pos.qty <= 0:
        _close(index, pos, ev.ts, ev.trade_date, "stop" if kind else ev.kind, p, res)


def _on_stop_event(index: ExitsIndex, pos: ExitPositionState, ev: OrderEvent, p: Params, res: Result) -> None:
    coid = ev.client_order_id
    pend = pos.pending
    res.touch(pos)
    if ev.event in FILL_EVENTS and ev.fill_qty > 0:
        if not _new_fill(pos, ev):
            _ignore(res, pos, C_ORDER_DUP)
            return
        if pend is not None and pend.client_order_id == coid:  # filled as soon as placed
            _confirm(pos, ev)
        _sell(index, pos, ev, p, res, kind="STOP_TRIGGERED")
        return
    if pend is not None and pend.client_order_id == coid:
        if ev.event in ("accepted", "replaced"):
            _confirm(pos, ev)
        elif ev.event == "rejected":
            pos.pending, pos.last_reject = None, msgspec.structs.replace(pend, reason_code=ev.reason_code)
            pos.current_stop = pos.live_stop_price
            _event(res, pos, "STOP_REJECTED", ev.ts, ev.trade_date, p, stop_price=pend.price,
                   previous_stop=pos.live_stop_price, qty=pend.qty, reason=ev.reason, intent_id=pend.intent_id,
                   client_order_id=coid, source=pos.stop_source)
            if ev.reason_code == "STOP_BREACHED":  # the executor is selling the shares at market
                pos.blocked = f"{B_HELD}: stop breached, the executor sells at market"
            elif ev.reason_code == "INSUFFICIENT_QTY":
                _block(pos, f"{B_HELD}: the broker refused the stop (insufficient qty)", ev.ts, ev.trade_date, p, res)
            elif (ev.reason_code in ("TARGET_NOT_OPEN", "TARGET_UNKNOWN") and pend.target
                  and pend.target == pos.live_stop_client_order_id):
                if ev.reason_code == "TARGET_UNKNOWN":  # a stop the executor never made: it cannot change it
                    _block(pos, f"{B_FOREIGN}: {pend.target} is not an order of the executor", ev.ts, ev.trade_date,
                           p, res)
                else:  # the stop we meant to replace is gone (filled or cancelled): place a new one next time
                    pos.live_stop_client_order_id, pos.live_stop_price, pos.live_stop_qty = "", 0.0, 0
                    pos.current_stop, pos.last_reject = 0.0, None
            unprotected = not pos.live_stop_client_order_id and ev.reason_code != "STOP_BREACHED"
            _alert(res, "exit_stop_rejected", f"{pos.symbol}: stop {pend.action} {pend.qty}@{pend.price} rejected"
                   + (" (no live stop)" if unprotected else ""), "critical" if unprotected else "warning", pos, ev.ts,
                   ev.trade_date, text=ev.reason, dedup=["rejected", pend.intent_id])
        elif ev.event == "cancelled":  # cancelled before it was confirmed
            pos.pending = None
            pos.current_stop = pos.live_stop_price
        return
    if ev.event == "accepted" and ev.reason_code == "RESTORES" and not pos.live_stop_client_order_id:
        # the executor put back a stop it had cancelled for an exit that did not sell (flatten refused)
        pos.live_stop_client_order_id, pos.live_stop_price, pos.live_stop_qty = coid, float(ev.stop_price or 0.0), int(ev.qty)
        pos.current_stop = pos.live_stop_price
        if pos.blocked.startswith(B_HELD):
            pos.blocked = ""
        _event(res, pos, "STOP_SUBMITTED", ev.ts, ev.trade_date, p, stop_price=pos.live_stop_price, previous_stop=0.0,
               qty=int(ev.qty), reason=ev.reason, client_order_id=coid, source=pos.stop_source)
        return
    if (ev.event == "replaced" and ev.reason_code == "REPROTECT" and ev.replaces_client_order_id
            and ev.replaces_client_order_id in (pos.live_stop_client_order_id, pend.target if pend else "")):
        # the executor re-protected the position at the last accepted level after a refused new stop
        pos.live_stop_client_order_id, pos.live_stop_qty = coid, int(ev.qty)
        pos.live_stop_price = pos.current_stop = float(ev.stop_price or pos.live_stop_price)
        return
    if coid == pos.live_stop_client_order_id and ev.event == "cancelled":
        pos.live_stop_client_order_id, pos.live_stop_price, pos.live_stop_qty = "", 0.0, 0
        if pos.pending is None:
            pos.current_stop = 0.0
        if ev.reason_code == "EXIT_INTENT":  # an exit order sells the shares now: no new stop meanwhile
            pos.blocked = f"{B_HELD}: an exit order is selling the shares"
        else:
            _alert(res, "exit_stop_cancelled", f"{pos.symbol}: live stop cancelled outside the exits service",
                   "warning", pos, ev.ts, ev.trade_date, text=ev.reason, dedup=["cancelled", coid])
        return
    res.count(f"{C_ORDER_OTHER}stop:{ev.event}")


def _confirm(pos: ExitPositionState, ev: OrderEvent) -> None:
    pend = pos.pending
    price = float(ev.stop_price) if ev.stop_price is not None else (pend.price if pend else pos.current_stop)
    pos.live_stop_client_order_id, pos.live_stop_price, pos.live_stop_qty = ev.client_order_id, price, int(ev.qty)
    pos.current_stop = price
    pos.pending, pos.last_reject = None, None


def _block(pos: ExitPositionState, why: str, ts: int, trade_date: str, p: Params, res: Result) -> None:
    if pos.blocked == why:
        return
    pos.blocked = why
    _event(res, pos, "STOP_BLOCKED", ts, trade_date, p, stop_price=pos.desired_stop, previous_stop=pos.live_stop_price,
           qty=pos.qty, reason=why, source=pos.stop_source)
    _alert(res, "exit_stop_blocked", f"{pos.symbol}: stop cannot be sent", "warning", pos, ts, trade_date, text=why,
           dedup=["blocked", pos.position_id, why])


# -- reconciliation --------------------------------------------------------------------------
def _live_sells(snap: BrokerSnapshot) -> dict[str, list[BrokerOrder]]:
    out: dict[str, list[BrokerOrder]] = {}
    for o in snap.open_orders:
        if o.side == "sell" and o.status not in NOT_LIVE:
            out.setdefault(o.symbol, []).append(o)
    return out


def on_snapshot(index: ExitsIndex, positions: dict[str, ExitPositionState], snap: BrokerSnapshot, p: Params) -> Result:
    """Reconcile every open position's stop with the broker's (see the module docstring)."""
    res = Result()
    if snap.ts < index.last_snapshot_ts:
        res.count(C_SNAPSHOT_STALE)
        return res
    if snap.ts > index.last_snapshot_ts:
        index.last_snapshot_ts = snap.ts
        res.index_changed = True
    if not snap.reconciled:
        res.count(C_SNAPSHOT_UNREC)
        return res
    window = in_window(snap.ts, p.rules)
    held = {bp.symbol: bp.qty for bp in snap.positions if bp.qty}
    sells = _live_sells(snap)
    open_coids = {o.client_order_id for o in snap.open_orders if o.status not in NOT_LIVE}
    for sym in sorted(positions):
        pos = positions[sym]
        if not pos.closed:
            _reconcile(index, pos, snap, held.get(sym, 0), sells.get(sym, []), window, p, res)
    for sym in sorted(sells):
        pos = positions.get(sym)
        if pos is not None and not pos.closed:
            continue
        stops = [o for o in sells[sym] if o.order_type in STOP_TYPES]
        if not stops:
            continue
        if held.get(sym, 0) > 0:
            res.count(C_RECON_UNTRACKED)
            _alert(res, "exit_untracked_position", f"{sym}: the broker holds {held[sym]} shares the exits service "
                   "does not track", "warning", sym, snap.ts, snap.trade_date,
                   text="its stop orders are left alone", dedup=["untracked", sym, snap.trade_date])
            continue
        for o in stops:
            _orphan(index, o, pos.position_id if pos is not None else "", "stop for a symbol not held", res)
    for coid in [c for c in index.orphans if c not in open_coids]:
        del index.orphans[coid]  # the broker no longer holds it
        res.index_changed = True
    if window:
        _cancel_orphans(index, snap.ts, snap.trade_date, p, res)
    return res


def _reconcile(index: ExitsIndex, pos: ExitPositionState, snap: BrokerSnapshot, broker_qty: int,
               sells: list[BrokerOrder], window: bool, p: Params, res: Result) -> None:
    ts, d = snap.ts, snap.trade_date
    fresh = snap.ts >= pos.last_fill_ts
    if fresh and broker_qty == 0:
        res.touch(pos)
        for o in sells:
            if o.order_type in STOP_TYPES:
                _orphan(index, o, pos.position_id, "position closed (BROKER_FLAT)", res)
        _close(index, pos, ts, d, "BROKER_FLAT", p, res)
        _alert(res, "exit_broker_flat", f"{pos.symbol}: the broker holds no shares; position closed", "warning",
               pos, ts, d, dedup=["flat", pos.position_id])
        return
    if fresh and broker_qty != pos.qty:
        res.count(C_RECON_QTY)
        _alert(res, "exit_qty_mismatch", f"{pos.symbol}: broker holds {broker_qty}, exits had {pos.qty}", "warning",
               pos, ts, d, text="the stop follows the broker's quantity", dedup=["qty", pos.position_id, broker_qty])
        pos.qty = broker_qty
        res.touch(pos)
    if _pending_open(pos, ts, p, res):
        res.count(C_RECON_PENDING)
        return
    others = [o for o in sells if o.order_type not in STOP_TYPES]
    if others:
        res.count(C_RECON_BLOCKED)
        _block(pos, f"{B_HELD}: {others[0].client_order_id} ({others[0].order_type} {others[0].qty})", ts, d, p, res)
        res.touch(pos)
        return
    stops = sorted((o for o in sells if o.order_type in STOP_TYPES), key=lambda o: (-(o.stop_price or 0.0), o.client_order_id))
    if pos.blocked.startswith(B_FOREIGN) and any(o.client_order_id == pos.live_stop_client_order_id for o in stops):
        res.count(C_RECON_FOREIGN)
        return  # the broker's stop protects it; only someone at the broker can change it (alerted once)
    if pos.blocked:
        pos.blocked = ""
        res.touch(pos)
    mine = next((o for o in stops if o.client_order_id == pos.live_stop_client_order_id), None)
    if pos.live_stop_client_order_id and mine is None and fresh:
        res.count(C_RECON_LOST)
        pos.live_stop_client_order_id, pos.live_stop_price, pos.live_stop_qty = "", 0.0, 0
        pos.current_stop = 0.0
        res.touch(pos)
    if mine is None and stops and not pos.live_stop_client_order_id:
        mine = stops[0]  # adopt the broker's (highest) stop instead of stacking a second one
        pos.live_stop_client_order_id = mine.client_order_id
        res.touch(pos)
    if mine is not None:
        price = to_tick(float(mine.stop_price or 0.0))
        remaining = mine.qty - mine.filled_qty
        if (price, remaining) != (pos.live_stop_price, pos.live_stop_qty):
            pos.live_stop_price, pos.live_stop_qty = price, remaining
            res.touch(pos)
        pos.current_stop = pos.live_stop_price
        if price > pos.desired_stop + EPS:  # never lower a live stop: adopt it as the desired one
            prev = pos.desired_stop
            _set_desired(pos, price, SOURCE_BROKER, 0, 0.0, ts)
            _event(res, pos, "STOP_RATCHET", ts, d, p, stop_price=price, previous_stop=prev, source=SOURCE_BROKER,
                   qty=pos.qty, reason=f"the broker's stop {mine.client_order_id} is higher", client_order_id=mine.client_order_id)
        if mine.client_order_id not in pos.stop_client_order_ids:
            pos.stop_client_order_ids = [*pos.stop_client_order_ids[-(KEEP_STOP_IDS - 1):], mine.client_order_id]
    for o in stops:
        if o is not mine:
            _orphan(index, o, pos.position_id, f"a second stop for {pos.symbol}", res)
    if window:
        sync(pos, ts, d, p, res, "reconcile")
    elif pos.desired_stop > 0 and (pos.live_stop_price != pos.desired_stop or pos.live_stop_qty != pos.qty):
        res.count(C_RECON_OUTSIDE)


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
