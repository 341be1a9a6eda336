"""Exit events on ``avwap:exits`` and the persistent state of the exits service.

``ExitEvent`` is a stream message. ``ExitPositionState`` is the state of one position, stored as
one key per symbol (``avwap:state:exits:pos:<SYMBOL>``); it is versioned through the same registry
(``decode`` upcasts old versions) but, being state rather than a message, it is mutable.
``StopTracker`` is the incremental stop-structure state ``shared.stops`` keeps for a position.
"""

from __future__ import annotations

from typing import Literal, get_args

import msgspec

from .base import Message, register
from .types import Symbol, TradeDate

ExitEventKind = Literal[
    "STOP_RESOLVED",
    "STOP_RATCHET",
    "STOP_SUBMITTED",
    "STOP_REPLACED",
    "STOP_CANCELLED",
    "STOP_TRIGGERED",
    "POSITION_CLOSED",
    "STOP_REJECTED",  # the executor refused a stop intent (reason = its reason)
    "STOP_BLOCKED",  # no stop can be sent: the shares are held by another sell (reason names it)
]
EXIT_EVENT_KINDS: tuple[str, ...] = get_args(ExitEventKind)


@register
class ExitEvent(Message, frozen=True, kw_only=True, tag="exit_event"):
    """What the exits service did and the inputs that produced it."""

    event_id: str
    kind: ExitEventKind
    symbol: Symbol
    position_id: str
    trade_date: TradeDate
    ts: int
    stop_price: float = 0.0
    previous_stop: float = 0.0
    source: str = ""  # initial | intraday_higher_low | daily_swing_low | broker
    ref_bar_ts: int = 0
    ref_low: float = 0.0
    buffer: float = 0.0
    qty: int = 0
    exit_price: float | None = None
    reason: str = ""
    seq: int = 0  # the event's number within its position (orders events of one timestamp)
    intent_id: str = ""  # the StopIntent sent (SUBMITTED / REPLACED / CANCELLED), or the one refused (REJECTED)
    client_order_id: str = ""  # the broker order concerned


class Low(msgspec.Struct, frozen=True, array_like=True):
    """A bar reduced to what the stop rules use: its end ``ts`` and its ``low`` (JSON ``[ts, low]``)."""

    ts: int
    low: float


class StopTracker(msgspec.Struct, kw_only=True):
    """Incremental stop structure of one symbol (``shared.stops.track_minute`` / ``track_daily``).

    ``sessions``: the last ``hl_lookback_days`` NY dates on which the symbol had a bar (oldest first);
    ``bars5``: the complete 5-minute bars of those sessions; ``part_*``: the 5-minute bar being built;
    ``daily``: the last ``swing_lookback`` daily bars; ``hl`` / ``swing``: the cached answers.
    """

    sessions: list[str] = []
    bars5: list[Low] = []
    part_end: int = 0
    part_low: float = 0.0
    last_minute_ts: int = 0
    last_minute_date: str = ""
    daily: list[Low] = []
    last_daily_ts: int = 0
    hl: Low | None = None
    swing: Low | None = None


class PendingStop(msgspec.Struct, frozen=True, kw_only=True):
    """A stop intent sent and not yet answered by an order event."""

    intent_id: str
    client_order_id: str
    action: Literal["place", "replace", "cancel"]
    price: float
    qty: int
    ts: int
    target: str = ""  # client id of the order replaced / cancelled
    reason_code: str = ""  # a refused intent (``last_reject``): the OrderEvent's ReasonCode


@register
class ExitPositionState(Message, frozen=False, kw_only=True, tag="exit_position_state"):
    """Persistent state of one position (``avwap:state:exits:pos:<SYMBOL>``).

    ``desired_stop`` is what the rules want (it only rises); ``current_stop`` the stop sent to the
    executor (pending or confirmed); ``live_stop_*`` the stop the executor confirmed.
    """

    position_id: str
    symbol: str
    qty: int
    avg_entry_price: float
    opened_ts: int
    opened_date: str
    initial_stop: float
    current_stop: float
    desired_stop: float
    stop_source: str = "initial"
    live_stop_client_order_id: str = ""
    live_stop_price: float = 0.0
    live_stop_qty: int = 0
    last_bar_ts: int = 0
    entry_intent_id: str = ""
    closed: bool = False
    # fields added in the exits service (defaults keep v1 readable)
    stop_ref_ts: int = 0  # the bar (5-minute higher low or daily swing low) the desired stop comes from
    stop_ref_low: float = 0.0
    stop_ts: int = 0  # when the desired stop last changed
    pending: PendingStop | None = None
    last_reject: PendingStop | None = None  # the last intent refused (not re-sent unchanged before the timeout)
    last_close: float = 0.0  # close of the last bar taken (a stop refused as through the market waits for it)
    blocked: str = ""  # why no stop can be sent now (SHARES_HELD_BY_OTHER_SELL:<client id>), "" when none
    seq: int = 0  # events and intents made for this position (stable ids derive from it)
    tracker: StopTracker = msgspec.field(default_factory=StopTracker)
    entry_qty: int = 0
    exit_qty: int = 0
    exit_notional: float = 0.0
    last_fill_ts: int = 0
    fill_keys: list[str] = []  # trade ids of the fills applied (de-duplication), newest last
    stop_client_order_ids: list[str] = []  # every stop order made for this position, newest last
    closed_ts: int = 0
    closed_date: str = ""
    closed_reason: str = ""
    ignored: dict[str, int] = {}  # counted reasons of bars and events ignored for this position
