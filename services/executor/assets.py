"""The broker's asset list: active, tradable US equities on the chosen exchanges (``avwap universe build``).

alpaca-py ``TradingClient.get_all_assets(GetAssetsRequest(status=active, asset_class=us_equity))``, i.e.
``GET /v2/assets?status=active&asset_class=us_equity`` (alpaca-docs ``trading-api/assets.md``), under the
shared broker rate limit; then only ``tradable`` assets on UNIVERSE_EXCHANGES are kept (OTC, crypto and
assets Alpaca cannot trade never enter a universe).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

from .rate_limit import from_settings
from .settings import BrokerSettings


def tradable_symbols(bs: BrokerSettings, r: redis.Redis | None, exchanges: Sequence[str]) -> tuple[list[str], int]:
    """(sorted symbols kept, assets listed) from the broker of ``bs`` (paper or live per APCA_API_BASE_URL)."""
    from alpaca.trading.client import TradingClient
    from alpaca.trading.enums import AssetClass, AssetStatus
    from alpaca.trading.requests import GetAssetsRequest

    key = bs.apca_api_key_id.get_secret_value() if bs.apca_api_key_id else None
    secret = bs.apca_api_secret_key.get_secret_value() if bs.apca_api_secret_key else None
    client = TradingClient(key, secret, paper=bs.apca_api_base_url.rstrip("/") == bs.apca_paper_url.rstrip("/"),
                           url_override=bs.apca_api_base_url.rstrip("/"))
    limiter = from_settings(r, bs)
    if limiter is not None:
        limiter.install(client)
    assets = client.get_all_assets(GetAssetsRequest(status=AssetStatus.ACTIVE, asset_class=AssetClass.US_EQUITY))
    keep = {e.upper() for e in exchanges}
    out = sorted({a.symbol for a in assets if a.tradable and a.status == AssetStatus.ACTIVE
                  and a.asset_class == AssetClass.US_EQUITY and str(getattr(a.exchange, "value", a.exchange)) in keep})
    return out, len(assets)
