"""Common base for settings sections: env-driven, typed, documented defaults."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class Section(BaseSettings):
    """A settings section. Every field has a default and a ``description`` (docs are generated)."""

    model_config = SettingsConfigDict(
        env_prefix="",
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        env_file=None,
    )
