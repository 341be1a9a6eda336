"""Risk's state (one Redis key) and the result of one step of the reducer."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from shared.clock import ny_trade_date
from shared.schemas import (
    BrokerSnapshot,
    CandidateBatch,
    Message,
    PortfolioDecisionBatch,
    PortfolioSnapshot,
    Regime,
)
from shared.schemas.reasons import upcast_text

from .telemetry import DecisionRecord, ShadowRecord


class PendingEntry(msgspec.Struct, kw_only=True):
    """An entry intent sent and not yet reflected in a broker snapshot."""

    intent_id: str
    client_order_id: str
    symbol: str
    trade_date: str
    qty: int
    notional: float
    status: Literal["open", "filled"] = "open"
    filled_qty: int = 0
    fill_notional: float = 0.0
    resolved_ts: int = 0


class RiskState(msgspec.Struct, kw_only=True):
    # Stored as a root key and a record log (``store.py``): decided, shadow and decision_batches only grow
    # between prunes, and their values are frozen.
    # the state's commits (the first field, so the shell reads it with GETRANGE; the core never reads it):
    # a worker that holds revision ``rev`` decoded does not fetch and decode the blob again (worker.StateCache)
    rev: int = 0
    records: int = 0  # the shell's too: how many entries of the record log belong to this root (store.py)
    session: str = ""  # the current NY trading session (latest SessionEvent date)
    clock: dict[str, dict[str, int]] = {}  # session -> phase -> event ts (+ PRE_MARKET_entry_ms)
    broker: BrokerSnapshot | None = None
    portfolio: PortfolioSnapshot | None = None
    decision_batches: dict[str, PortfolioDecisionBatch] = {}
    held: dict[str, CandidateBatch] = {}
    decided: dict[str, dict[str, DecisionRecord]] = {}  # session -> candidate_id -> record
    shadow: dict[str, dict[str, ShadowRecord]] = {}  # date -> decision_id -> record
    entries_by_day: dict[str, int] = {}  # NY date -> entry intents sent
    pending: dict[str, PendingEntry] = {}  # intent_id -> entry not yet in a snapshot
    regimes: dict[str, Regime] = {}  # session -> its Regime (the first one received)
    seq: int = 0


class Step(msgspec.Struct, kw_only=True):
    state: RiskState
    emits: list[tuple[str, Message]] = []
    dates: list[str] = []  # sessions whose decision artifact changed

_STATE_ENC = msgspec.json.Encoder()
_STATE_DEC = msgspec.json.Decoder(RiskState)


def encode_state(st: RiskState) -> bytes:
    return _STATE_ENC.encode(st)


def copy_state(st: RiskState) -> RiskState:
    """A deep copy (through the state's own JSON codec)."""
    return _STATE_DEC.decode(_STATE_ENC.encode(st))


def decode_state(raw: bytes | None) -> RiskState:
    """The state in ``raw`` (empty: a fresh state). A state written before the reason codes had one
    spelling (lower-case Phase C codes in its decision records) fails the closed ``RiskCode`` and is
    upcast (``shared.schemas.reasons.upcast_text``) and decoded again."""
    if not raw:
        return RiskState()
    return decode_upcasting(_STATE_DEC, raw)


def decode_upcasting(dec: msgspec.json.Decoder, raw: bytes) -> Any:
    """``dec.decode(raw)``; a value that fails it only for an older spelling of a reason code is upcast
    (``upcast_text``) and decoded again (the state, and each record of the state's log, ``store.py``)."""
    try:
        return dec.decode(raw)
    except msgspec.ValidationError:
        upcast = upcast_text(raw)
        if upcast == raw:
            raise
        return dec.decode(upcast)


def ny_day(ts: int) -> str:
    """The NY calendar date keying the new-entries ledger (rolls over at NY midnight, DST-safe)."""
    return ny_trade_date(ts)
