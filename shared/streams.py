"""Stream and key names: the contract of DESIGN §2 in one place."""

BARS_1D = "avwap:bars:1d"
BARS_1M = "avwap:bars:1m"
CLOCK = "avwap:clock"
CANDIDATES = "avwap:candidates"
INTENTS = "avwap:intents"
REJECTIONS = "avwap:rejections"
ORDERS = "avwap:orders"
BROKER = "avwap:broker"
EXITS = "avwap:exits"
PORTFOLIO = "avwap:portfolio"
REGIME = "avwap:regime"
ALERTS = "avwap:alerts"
DLQ = "avwap:dlq"
CONTROL = "avwap:control"  # trading-state transitions, flatten requests, breaker re-arms (shared/schemas/controls.py)

ALL_STREAMS = (BARS_1D, BARS_1M, CLOCK, CANDIDATES, INTENTS, REJECTIONS, ORDERS, BROKER, EXITS, PORTFOLIO, REGIME, ALERTS, DLQ, CONTROL)

# The trading state (ACTIVE | REDUCING | HALTED): one key every gate reads (shared.controls). The kill
# switch is the REDUCING state: ``KILL_SWITCH_KEY`` is the same key.
TRADING_STATE_KEY = "avwap:control:trading_state"
KILL_SWITCH_KEY = TRADING_STATE_KEY
LEGACY_KILL_SWITCH_KEY = "avwap:control:kill_switch"  # before trading states; still read (ON -> REDUCING)
BREAKERS_KEY = "avwap:control:breakers"  # the circuit breakers' book (shared.breakers)
AUDIT_KEY = "avwap:audit"  # the hash-chained audit log (shared.audit)
PAUSE_KEY = "avwap:control:pause"


def state_key(service: str, *parts: str) -> str:
    return ":".join(("avwap:state", service, *parts))
