"""Exit events on ``avwap:exits`` and per-symbol position state of the exits service."""

from __future__ import annotations

from .base import Message, register

EXIT_EVENT_KINDS = (
    "STOP_RESOLVED",
    "STOP_RATCHET",
    "STOP_SUBMITTED",
    "STOP_REPLACED",
    "STOP_CANCELLED",
    "STOP_TRIGGERED",
    "POSITION_CLOSED",
)


@register
class ExitEvent(Message, frozen=True, kw_only=True, tag="exit_event"):
    """What the exits service did and the inputs that produced it."""

    event_id: str
    kind: str  # one of EXIT_EVENT_KINDS
    symbol: str
    position_id: str
    trade_date: str
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


@register
class ExitPositionState(Message, frozen=True, kw_only=True, tag="exit_position_state"):
    """Persistent state of one open position (``avwap:state:exits:<symbol>``)."""

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
