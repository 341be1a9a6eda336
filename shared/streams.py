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

ALL_STREAMS = (BARS_1D, BARS_1M, CLOCK, CANDIDATES, INTENTS, REJECTIONS, ORDERS, BROKER, EXITS, PORTFOLIO, REGIME, ALERTS, DLQ)

KILL_SWITCH_KEY = "avwap:control:kill_switch"
PAUSE_KEY = "avwap:control:pause"


def state_key(service: str, *parts: str) -> str:
    return ":".join(("avwap:state", service, *parts))
