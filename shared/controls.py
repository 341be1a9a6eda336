"""Operator control keys (``avwap:control:*``): one reader and one writer for each.

The kill switch key holds JSON ``{"on": bool, "reason": str, "at": float}`` (written by
``avwap kill-switch on|off``); a bare ``0``/``1``/``true``/``false`` is accepted too. Anything
else is *unreadable*, and every reader treats unreadable as ON (fail closed).
"""

from __future__ import annotations

import json
import logging
from typing import Literal

import redis

from shared.streams import KILL_SWITCH_KEY

log = logging.getLogger(__name__)

KillSwitchState = Literal["on", "off", "unreadable"]


def parse_kill_switch(raw: bytes | str | None) -> KillSwitchState:
    """The state of a kill switch value as stored in Redis (None: the key is absent -> off)."""
    if raw is None:
        return "off"
    try:
        val = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return "unreadable"
    if isinstance(val, dict):
        on = val.get("on")
        return ("on" if on else "off") if isinstance(on, bool) else "unreadable"
    if isinstance(val, bool) or (isinstance(val, int) and val in (0, 1)):
        return "on" if val else "off"
    return "unreadable"


def read_kill_switch(r: redis.Redis) -> KillSwitchState:
    """The kill switch as stored in Redis now; a key of the wrong type (WRONGTYPE) is unreadable."""
    try:
        raw = r.get(KILL_SWITCH_KEY)
    except redis.ResponseError as exc:
        log.error("kill switch key unreadable: %s", exc)
        return "unreadable"
    return parse_kill_switch(raw)  # type: ignore[arg-type]


def kill_switch_value(on: bool, reason: str, at: float) -> str:
    """The JSON the CLI writes (``at``: the operator's wall time, for the record only)."""
    return json.dumps({"on": on, "reason": reason, "at": at}, sort_keys=True)
