"""Common base for settings sections: env-driven, typed, documented defaults."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Annotated

from pydantic import BeforeValidator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_TRUE, _FALSE = ("1", "true"), ("0", "false")


def _strict_flag(value: object) -> object:
    """A boolean setting is ``1``/``0`` or ``true``/``false`` (any case), nothing else (not yes/on/t)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("must be 1 or 0 (or true / false)")


# every boolean setting: strict, so a typo cannot silently turn a gate on or off
Flag = Annotated[bool, BeforeValidator(_strict_flag)]


def comma_list(value: str | Iterable[str]) -> list[str]:
    """The items of a list setting: comma-separated text (``"AAPL, MSFT,,"`` -> ``["AAPL", "MSFT"]``,
    blanks and surrounding spaces dropped) or an iterable of items (stripped the same way)."""
    items = value.split(",") if isinstance(value, str) else value
    return [x.strip() for x in items if x.strip()]


def _comma_list(value: object) -> object:
    return comma_list(value) if isinstance(value, str) else value  # a list from code: validated as is


# every list setting: the environment gives comma-separated text (``ALLOWLIST=AAPL,MSFT``), not JSON
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_comma_list)]


def env_text(value: object) -> object:
    """A settings value as the environment spells it: a list setting as its comma-joined items."""
    return ",".join(value) if isinstance(value, list) else value


def fingerprint(values: Mapping[str, object]) -> str:
    """sha256 (16 hex) of settings values: the one settings-hash rule of every section.

    A list setting is hashed as its comma-joined text, so the hash of unchanged settings is what it
    was when list settings were plain comma-separated strings (old artifacts' provenance still matches).
    """
    text = {k: env_text(v) for k, v in values.items()}
    return hashlib.sha256(json.dumps(text, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Section(BaseSettings):
    """A settings section. Every field has a default and a ``description`` (docs are generated).

    Floats must be finite (``nan``/``inf`` refuse to start); booleans are ``Flag`` (strict).
    """

    model_config = SettingsConfigDict(
        env_prefix="",
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        env_file=None,
        allow_inf_nan=False,
    )
