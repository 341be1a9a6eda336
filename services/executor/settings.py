"""Broker settings. Only the executor reads them: broker keys never leave this package."""

from __future__ import annotations

from pydantic import Field, SecretStr

from shared.settings.base import Section


class BrokerSettings(Section):
    """Alpaca credentials and endpoints (read only by the executor)."""

    apca_api_key_id: SecretStr | None = Field(None, description="Alpaca API key id (secret; executor only).")
    apca_api_secret_key: SecretStr | None = Field(None, description="Alpaca API secret key (secret; executor only).")
    apca_api_base_url: str = Field("https://paper-api.alpaca.markets", description="Alpaca trading API base URL (paper or live).")
    apca_data_url: str | None = Field(None, description="Alpaca market-data base URL override (tests point it at a stand-in).")
