"""The market regime of a session, on ``avwap:regime`` (docs/regime.md)."""

from __future__ import annotations

from typing import Literal

import msgspec

from .base import Message, register

RegimeLabel = Literal["RISK_ON", "NEUTRAL", "RISK_OFF", "STRESSED", "REGIME_UNKNOWN"]
REGIME_LABELS: tuple[str, ...] = ("RISK_ON", "NEUTRAL", "RISK_OFF", "STRESSED", "REGIME_UNKNOWN")
MarketSource = Literal["symbol", "universe_proxy", "none"]


class RegimeFeatures(msgspec.Struct, frozen=True, kw_only=True):
    """The features as of ``Regime.date`` (None: not computable from the inputs)."""

    realized_vol: float | None = None  # annualized std of the last N daily returns of the market series
    drawdown: float | None = None  # market close / highest close of the window - 1 (<= 0)
    trend: float | None = None  # SMA fast / SMA slow - 1
    breadth: float | None = None  # fraction of the universe closing at or above its SMA
    breadth_symbols: int = 0  # universe symbols with a full SMA window and a close on the date


@register
class Regime(Message, frozen=True, kw_only=True, tag="regime"):
    """The label of the market as of NY date ``date`` (features from bars on or before it), for the
    decisions of ``session`` (the next session). ``label`` REGIME_UNKNOWN carries ``reason_code``
    (MARKET_MISSING, MARKET_STALE, MARKET_SHORT, BREADTH_SHORT, NON_FINITE); risk then applies the
    most conservative row of the modulation table."""

    regime_id: str
    date: str
    session: str
    label: RegimeLabel
    rule: str  # the rule of the table that fired (docs/regime.md), "UNKNOWN" when none could
    reason: str  # in words, e.g. "drawdown -10.4% <= -10%"
    reason_code: str = ""  # why the label is REGIME_UNKNOWN ("" otherwise)
    confidence: float = 0.0
    features: RegimeFeatures = RegimeFeatures()
    market: MarketSource = "none"
    market_symbol: str = ""
    universe_size: int = 0
    previous_label: str = ""  # the label as of the session before ``date`` (same inputs, one bar less)
    change: str = ""  # "" or, when the label changed, e.g. "RISK_OFF since 2018-10-10: drawdown -10.4% <= -10%"
    ts: int = 0
    provenance: dict[str, str] = {}
