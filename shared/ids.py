"""Stable identifiers: short hashes over canonical fields.

The same fields always give the same id, on any machine and in any process, so a
redelivered message maps to the same order, position or trade.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

_ENC = msgspec.json.Encoder(order="sorted")


def stable_id(prefix: str, *fields: Any, length: int = 20) -> str:
    """Return ``prefix-<hex>``: a sha256 over the canonical JSON of ``fields``.

    Fields may be any msgspec-encodable values (str, int, float, lists, dicts, Structs).
    """
    digest = hashlib.sha256(_ENC.encode(list(fields))).hexdigest()[:length]
    return f"{prefix}-{digest}" if prefix else digest


def client_order_id(intent_id: str, attempt: int = 0) -> str:
    """Broker ``client_order_id`` derived from the intent id (<= 48 chars for Alpaca)."""
    return stable_id("av", intent_id, attempt, length=32)
