"""Versioned stream messages (DESIGN §2-3). Import messages from here; decode with ``decode``."""

from .alerts import SEVERITIES, Alert, AlertV1, normalize_severity
from .analytics import (
    MISMATCH_TYPES,
    DailyRejections,
    DailyTrades,
    Fill,
    Mismatch,
    Reconciliation,
    Trade,
    TradeV1,
)
from .base import (
    InvalidPayload,
    Message,
    SchemaError,
    UnknownType,
    UnknownVersion,
    current_class,
    decode,
    encode,
    register,
    register_legacy,
    registered_types,
    replace,
    type_name_of,
)
from .broker import BrokerOrder, BrokerPosition, BrokerSnapshot
from .exits import EXIT_EVENT_KINDS, ExitEvent, ExitPositionState, Low, PendingStop, StopTracker
from .market import SESSION_PHASES, BarBatch, BarRow, SessionEvent
from .orders import (
    ORDER_EVENTS,
    REASON_CODES,
    EntryIntent,
    ExitIntent,
    OrderEvent,
    OrderEventV1,
    ReasonCode,
    Rejection,
    StopIntent,
)
from .portfolio import (
    DECISION_REASON_ORDER,
    PortfolioDecision,
    PortfolioDecisionBatch,
    PortfolioSnapshot,
    PositionMark,
)
from .scanner import Candidate, CandidateBatch

__all__ = [
    "Alert", "AlertV1", "BarBatch", "DailyRejections", "DailyTrades", "Fill", "MISMATCH_TYPES", "Mismatch",
    "Reconciliation", "Trade", "TradeV1", "BarRow", "BrokerOrder", "BrokerPosition", "BrokerSnapshot", "Candidate",
    "CandidateBatch", "DECISION_REASON_ORDER", "EXIT_EVENT_KINDS", "EntryIntent", "ExitEvent",
    "ExitIntent", "ExitPositionState", "InvalidPayload", "Low", "Message", "ORDER_EVENTS", "OrderEvent", "OrderEventV1", "REASON_CODES", "ReasonCode",
    "PendingStop", "PortfolioDecision", "PortfolioDecisionBatch", "PortfolioSnapshot", "PositionMark", "Rejection",
    "SESSION_PHASES", "SEVERITIES", "SchemaError", "SessionEvent", "StopIntent", "StopTracker", "UnknownType", "UnknownVersion", "current_class",
    "decode", "encode", "normalize_severity", "register", "register_legacy", "registered_types", "replace",
    "type_name_of",
]
