"""Exits' types and the helpers every part of the core uses: settings (``Params``), the service-wide
index, a message's ``Result``, the counted reasons, the stop window, and the event/alert builders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from shared.alerts import make_alert
from shared.clock import calendar
from shared.ids import stable_id
from shared.schemas import Alert, BarRow, ExitEvent, ExitPositionState, StopIntent
from shared.stops import StopRules, ny_date

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
