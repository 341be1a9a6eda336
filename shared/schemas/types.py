"""Constrained field types of the messages: one validation layer, applied by ``decode``.

msgspec checks these on decode (``Meta`` patterns and bounds); a message that breaks one is an
``InvalidPayload`` and the bus dead-letters it with the reason, like any undecodable entry.
Constructing a struct in code does not check them (msgspec validates on decode only): producers
are ours, the boundary is the stream.

- ``TradeDate``: ``YYYY-MM-DD`` (month 01-12, day 01-31). Whether it is a real NYSE session, and
  within the configured horizon of now, is checked where a message is consumed
  (``shared.intake.session_problem``): the calendar is not a decode-time concern.
- ``Symbol``: ``SYMBOL_PATTERN``: an upper-case letter, then up to 11 upper-case letters, digits,
  ``.`` or ``-`` (``AAPL``, ``BRK.B``, ``BF-B``). No spaces, separators, slashes or non-ASCII.
- ``Price``: finite, > 0, <= ``PRICE_MAX``. ``Qty``: int, > 0, <= ``QTY_MAX``; ``Shares``: the same
  with 0 allowed (a cumulative or optional quantity). ``Money``: finite, |x| <= ``MONEY_MAX``;
  ``Volume``: finite, >= 0, <= ``VOLUME_MAX``.

JSON has no NaN/Infinity literal and msgspec refuses one; ``1e400`` decodes as inf and fails the bound.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

DATE_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
SYMBOL_PATTERN = r"^[A-Z][A-Z0-9.\-]{0,11}$"
PRICE_MAX = 10_000_000.0  # dollars per share (BRK.A trades below 1e6)
QTY_MAX = 100_000_000  # shares in one order or position
MONEY_MAX = 1e12  # dollars
VOLUME_MAX = 1e13  # shares in one bar

TradeDate = Annotated[str, msgspec.Meta(pattern=DATE_PATTERN, description="NY trading date YYYY-MM-DD")]
# a date field that may be empty (``""``: not applicable)
OptTradeDate = Annotated[str, msgspec.Meta(pattern=r"^([0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01]))?$",
                                            description="YYYY-MM-DD or empty")]
Symbol = Annotated[str, msgspec.Meta(pattern=SYMBOL_PATTERN, description="ticker symbol")]
Price = Annotated[float, msgspec.Meta(gt=0.0, le=PRICE_MAX, description="finite positive price")]
# a price that may be 0 (not applicable: a cancel's stop price)
OptPrice = Annotated[float, msgspec.Meta(ge=0.0, le=PRICE_MAX, description="finite price, 0 allowed")]
Qty = Annotated[int, msgspec.Meta(gt=0, le=QTY_MAX, description="positive whole shares")]
Shares = Annotated[int, msgspec.Meta(ge=0, le=QTY_MAX, description="whole shares, 0 allowed")]
Money = Annotated[float, msgspec.Meta(ge=-MONEY_MAX, le=MONEY_MAX, description="finite dollars")]
Volume = Annotated[float, msgspec.Meta(ge=0.0, le=VOLUME_MAX, description="finite non-negative volume")]

_SYMBOL_RE = re.compile(SYMBOL_PATTERN)
_DATE_RE = re.compile(DATE_PATTERN)


def is_symbol(value: object) -> bool:
    """True when ``value`` is a str matching ``SYMBOL_PATTERN`` (the bar loader and settings use it)."""
    return isinstance(value, str) and _SYMBOL_RE.match(value) is not None


def is_date_text(value: object) -> bool:
    """True when ``value`` has the ``TradeDate`` form (not a calendar check)."""
    return isinstance(value, str) and _DATE_RE.match(value) is not None


def long_stop_problem(entry: float, stop: float, risk_per_share: float | None = None) -> str | None:
    """Why a long entry at ``entry`` with protective ``stop`` is not tradeable, or None.

    The stop must be below the entry; ``risk_per_share``, when given, must equal entry - stop
    (to 1e-4, the message rounding).
    """
    if not stop < entry:
        return f"stop {stop} is not below entry {entry}"
    if risk_per_share is not None and abs(risk_per_share - (entry - stop)) > 1e-4:
        return f"risk_per_share {risk_per_share} != entry {entry} - stop {stop}"
    return None


__all__ = [
    "DATE_PATTERN", "MONEY_MAX", "OptPrice", "OptTradeDate", "PRICE_MAX", "Price", "QTY_MAX", "Qty", "SYMBOL_PATTERN", "Shares",
    "Money", "Symbol", "TradeDate", "VOLUME_MAX", "Volume", "is_date_text", "is_symbol", "long_stop_problem",
]
