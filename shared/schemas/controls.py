"""Operator control messages on ``avwap:control``: trading-state transitions, flatten requests, breaker re-arms.

Every message names who acted (``who``: ``cli:<user>``, ``slack:<user id>``, ``breaker:<name>``), from
where (``source``), why (``reason``) and when (``ts``, UTC epoch ns). The current state itself lives
in one Redis key (``shared.controls``); these messages are the record of each change and what the
executor acts on (flatten).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from .base import Message, register

TradingStateName = Literal["ACTIVE", "REDUCING", "HALTED"]
TRADING_STATES: tuple[str, ...] = ("ACTIVE", "REDUCING", "HALTED")
ControlSource = Literal["cli", "slack", "breaker", "flatten", "env"]
BreakerName = Literal["daily_loss", "drawdown", "consecutive_stops"]
BREAKERS: tuple[str, ...] = ("daily_loss", "drawdown", "consecutive_stops")


class TradingState(msgspec.Struct, frozen=True, kw_only=True):
    """The value of the trading-state key: the state and the transition that set it."""

    state: TradingStateName
    on: bool = False  # state != ACTIVE: what a reader of the old kill-switch value ({"on": ...}) understands
    change_id: str = ""
    who: str = ""
    source: ControlSource = "cli"
    reason: str = ""
    ts: int = 0


@register
class TradingStateChange(Message, frozen=True, kw_only=True, tag="trading_state_change"):
    """One transition of the trading state (``previous`` is what the key held, ``UNREADABLE`` if it
    could not be read). A breaker trip names the breaker and carries the figures that tripped it."""

    change_id: str
    state: TradingStateName
    previous: Literal["ACTIVE", "REDUCING", "HALTED", "UNREADABLE"]
    who: str
    source: ControlSource
    reason: str
    ts: int
    breaker: BreakerName | None = None
    figures: dict[str, float] = {}


@register
class FlattenRequest(Message, frozen=True, kw_only=True, tag="flatten_request"):
    """Sell the named positions at market (``symbols`` empty and ``all_positions``: every position);
    the trading state is REDUCING from this request on. The executor consumes it."""

    request_id: str
    symbols: list[str] = []
    all_positions: bool = False
    who: str
    source: ControlSource
    reason: str
    ts: int


@register
class BreakerRearm(Message, frozen=True, kw_only=True, tag="breaker_rearm"):
    """An operator re-armed a tripped breaker (its measurement starts again from the current figures)."""

    rearm_id: str
    breaker: BreakerName
    who: str
    source: ControlSource
    reason: str
    ts: int
