"""Common base for settings sections: env-driven, typed, documented defaults."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from pydantic_settings import BaseSettings, SettingsConfigDict


def fingerprint(values: Mapping[str, object]) -> str:
    """sha256 (16 hex) of settings values: the one settings-hash rule of every section."""
    return hashlib.sha256(json.dumps(dict(values), sort_keys=True, default=str).encode()).hexdigest()[:16]


class Section(BaseSettings):
    """A settings section. Every field has a default and a ``description`` (docs are generated)."""

    model_config = SettingsConfigDict(
        env_prefix="",
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        env_file=None,
    )
