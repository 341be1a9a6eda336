"""Versioned stream messages (DESIGN §2-3). Import messages from here; decode with ``decode``."""

from .alerts import SEVERITIES, Alert, AlertV1, normalize_severity
from .analytics import (
    MISMATCH_TYPES,
    DailyRejections,
    DailyRejectionsV1,
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
from .controls import (
    BREAKERS,
    TRADING_STATES,
    BreakerName,
    BreakerRearm,
    FlattenRequest,
    TradingState,
    TradingStateChange,
    TradingStateName,
)
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
    RejectionV1,
    StopIntent,
)
from .portfolio import (
    DECISION_REASON_ORDER,
    PortfolioDecision,
    PortfolioDecisionBatch,
    PortfolioSnapshot,
    PositionMark,
)
from .reasons import (
    EXECUTOR_CODES,
    LEGACY_CODES,
    REJECTION_CODES,
    RISK_CODES,
    ExecutorCode,
    RejectionCode,
    RiskCode,
)
from .regime import REGIME_LABELS, Regime, RegimeFeatures, RegimeLabel
from .scanner import Candidate, CandidateBatch
from .types import OptTradeDate, Price, Qty, Shares, Symbol, TradeDate

__all__ = [
    "BREAKERS", "TRADING_STATES", "BreakerName", "BreakerRearm", "FlattenRequest", "TradingState", "TradingStateChange",
    "TradingStateName",
    "Alert", "AlertV1", "BarBatch", "DailyRejections", "DailyRejectionsV1", "RejectionV1", "DailyTrades", "Fill", "MISMATCH_TYPES", "Mismatch",
    "Reconciliation", "Trade", "TradeV1", "BarRow", "BrokerOrder", "BrokerPosition", "BrokerSnapshot", "Candidate",
    "CandidateBatch", "DECISION_REASON_ORDER", "EXIT_EVENT_KINDS", "EntryIntent", "ExitEvent",
    "ExitIntent", "ExitPositionState", "InvalidPayload", "Low", "Message", "ORDER_EVENTS", "OrderEvent", "OrderEventV1", "REASON_CODES", "ReasonCode",
    "PendingStop", "PortfolioDecision", "PortfolioDecisionBatch", "PortfolioSnapshot", "PositionMark", "REGIME_LABELS", "Regime", "RegimeFeatures", "RegimeLabel", "Rejection",
    "SESSION_PHASES", "SEVERITIES", "SchemaError", "SessionEvent", "StopIntent", "StopTracker", "UnknownType", "UnknownVersion", "current_class",
    "decode", "encode", "normalize_severity", "register", "register_legacy", "registered_types", "replace",
    "type_name_of", "EXECUTOR_CODES", "LEGACY_CODES", "REJECTION_CODES", "RISK_CODES", "ExecutorCode", "RejectionCode",
    "RiskCode", "OptTradeDate", "Price", "Qty", "Shares", "Symbol", "TradeDate",
]
