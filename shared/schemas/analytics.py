"""Analytics artifact schemas: fills, trades, the daily trades / rejections files, reconciliation.

These are not streamed; they are the canonical, versioned contracts of the JSON artifacts the
analytics service writes (``trades/D.json``, ``rejections/D.json``, ``reconciliation/D.json``),
registered like the messages so that ``decode`` reads any version still in service and upcasts it.

Versions
- ``fill`` v1: one execution (the canonical form of a filled ``OrderEvent``).
- ``trade`` v2 (current): stop efficiency is measured against the best stop available in
  hindsight (``hindsight_stop``, see docs/analytics.md "Stop efficiency"); new fields
  ``hindsight_stop``, ``exit_vs_hindsight_stop``, ``exit_vs_initial_stop_r``.
  v1 (``TradeV1``) measured ``stop_efficiency`` against the highest price held; its upcast keeps
  every other field and sets the hindsight fields and ``stop_efficiency`` to None (the old
  value had another meaning and the bars are not in the record to recompute it).
- ``daily_rejections`` v2 (current): of ``Rejection`` v2 (closed reason codes, one spelling); v1
  (``DailyRejectionsV1``) is upcast rejection by rejection (``upcast_rejection_v1``).
- ``daily_trades`` v1, ``reconciliation`` v1: the artifact files.
"""

from __future__ import annotations

from typing import Literal, get_args

import msgspec

from .base import Message, register, register_legacy
from .orders import OrderKind, Rejection, RejectionV1, Side, upcast_rejection_v1


@register
class Fill(Message, frozen=True, kw_only=True, tag="fill"):
    """One execution: a filled ``OrderEvent`` (``fill_id`` = its ``trade_id``, else its ``event_id``)."""

    fill_id: str
    symbol: str
    side: Side
    kind: OrderKind
    qty: int
    price: float
    fees: float
    ts: int
    trade_date: str
    intent_id: str
    client_order_id: str
    stop_price: float = 0.0  # entries: the intent's protective stop


class _TradeFields(Message, frozen=True, kw_only=True, tag="trade"):
    """Fields common to every ``trade`` version (not registered itself)."""

    trade_id: str
    position_id: str
    symbol: str
    status: Literal["open", "closed"]
    entry_intent_id: str
    opened_ts: int
    opened_date: str
    closed_ts: int = 0
    closed_date: str = ""
    qty_open: int = 0
    entry_qty: int = 0
    exit_qty: int = 0
    avg_entry_price: float = 0.0
    avg_exit_price: float = 0.0
    initial_stop: float = 0.0
    risk_per_share: float = 0.0
    fees: float = 0.0
    gross_pnl: float = 0.0
    realized_pnl: float = 0.0
    r_multiple: float | None = None
    holding_seconds: float = 0.0
    holding_sessions: int = 0
    scale_outs: int = 0
    exit_kinds: list[str] = []
    max_high: float = 0.0
    min_low: float = 0.0
    mae: float = 0.0
    mfe: float = 0.0
    mae_r: float | None = None
    mfe_r: float | None = None
    stop_efficiency: float | None = None
    exit_vs_initial_stop: float | None = None
    excursion_source: str = ""  # 1m | 1d | none
    fill_ids: list[str] = []
    exit_event_ids: list[str] = []
    exit_position_id: str = ""


@register
class Trade(_TradeFields, frozen=True, kw_only=True, tag="trade"):
    """One position cycle (entry fills through the last sell); see docs/analytics.md "Trades"."""

    VERSION = 2
    v: int = 2
    hindsight_stop: float | None = None  # the best stop available in hindsight (closed trades)
    hindsight_stop_source: str = ""  # 5m | 1d | initial (no structure formed) | "" (open / no bars)
    exit_vs_hindsight_stop: float | None = None  # avg exit - hindsight stop, $/share
    exit_vs_initial_stop_r: float | None = None  # (avg exit - initial stop) / initial risk per share


class TradeV1(_TradeFields, frozen=True, kw_only=True, tag="trade"):
    """Trade as written before v2 (stop efficiency versus the highest price held). Decoded only to be upcast."""

    VERSION = 1
    v: int = 1


def upcast_trade_v1(old: TradeV1) -> Trade:
    fields = msgspec.structs.asdict(old)
    fields.pop("v")
    fields["stop_efficiency"] = None  # v1 measured it against the highest price: another metric
    return Trade(**fields)


register_legacy(TradeV1, upcast_trade_v1)


@register
class DailyTrades(Message, frozen=True, kw_only=True, tag="daily_trades"):
    """``trades/D.json``: trades closed on D plus trades open at D's close, and D's fills."""

    date: str
    trades: list[Trade]
    fills: list[Fill] = []
    provenance: dict[str, str] = {}


@register
class DailyRejections(Message, frozen=True, kw_only=True, tag="daily_rejections"):
    """``rejections/D.json``: D's rejections sorted by id (v2: of ``Rejection`` v2; v1 files are upcast)."""

    VERSION = 2
    v: int = 2
    date: str
    rejections: list[Rejection]
    provenance: dict[str, str] = {}


class DailyRejectionsV1(Message, frozen=True, kw_only=True, tag="daily_rejections"):
    """``rejections/D.json`` as written before v2 (its rejections are ``RejectionV1``). Decoded only to be upcast."""

    date: str
    rejections: list[RejectionV1]
    provenance: dict[str, str] = {}


def upcast_daily_rejections_v1(old: DailyRejectionsV1) -> DailyRejections:
    return DailyRejections(date=old.date, rejections=[upcast_rejection_v1(r) for r in old.rejections],
                           provenance=dict(old.provenance))


register_legacy(DailyRejectionsV1, upcast_daily_rejections_v1)


MismatchType = Literal["MISSING_POSITION", "QUANTITY", "AVERAGE_PRICE", "UNKNOWN_ORDER", "STOP_MISSING"]
MISMATCH_TYPES: tuple[str, ...] = get_args(MismatchType)


class Mismatch(msgspec.Struct, frozen=True, kw_only=True):
    type: MismatchType
    symbol: str
    key: str = ""
    expected: str = ""
    actual: str = ""
    detail: str = ""


@register
class Reconciliation(Message, frozen=True, kw_only=True, tag="reconciliation"):
    """``reconciliation/D.json``: the internal ledger versus D's CLOSE broker snapshot."""

    recon_id: str
    date: str
    snapshot_id: str
    status: Literal["ok", "mismatch"]
    mismatches: list[Mismatch]
    positions_internal: int
    positions_broker: int
    open_orders: int
    provenance: dict[str, str] = {}
