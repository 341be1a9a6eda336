"""The assets endpoint of the Alpaca trading stand-in: ``GET /v2/assets`` and ``GET /v2/assets/{symbol}``.

As Alpaca documents it (alpaca-docs ``content/api-references/trading-api/assets.md``; alpaca-py
``TradingClient.get_all_assets`` / ``get_asset`` and its ``Asset`` model): the master list of assets,
sorted by asset class, exchange and symbol; query filters ``status`` (active | inactive),
``asset_class`` (us_equity | crypto), ``exchange`` and ``attributes`` (comma-separated, any of them);
each asset ``{"id", "class", "exchange", "symbol", "name", "status", "tradable", "marginable",
"shortable", "easy_to_borrow", "fractionable", "attributes"}``; an unknown symbol is a 404
``{"code": 40410000, "message": "asset not found for <symbol>"}``; a bad ``status`` is a 422.

``AlpacaStandIn._api`` asks ``assets_api`` first. The served list is ``ASSETS`` (``configure`` replaces
it): by default every symbol of the bundled data, active and tradable on NYSE or NASDAQ, plus a few
that a universe build must leave out (inactive, not tradable, OTC, crypto).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("active", "inactive")


@dataclass(frozen=True)
class StandInAsset:
    symbol: str
    exchange: str = "NYSE"
    status: str = "active"
    tradable: bool = True
    asset_class: str = "us_equity"
    name: str = ""
    attributes: tuple[str, ...] = field(default=())

    def json(self) -> dict[str, Any]:
        return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"asset:{self.symbol}")), "class": self.asset_class,
                "exchange": self.exchange, "symbol": self.symbol, "name": self.name or f"{self.symbol} Inc.",
                "status": self.status, "tradable": self.tradable, "marginable": self.tradable,
                "shortable": self.tradable, "easy_to_borrow": self.tradable, "fractionable": self.tradable,
                "maintenance_margin_requirement": 30, "attributes": list(self.attributes)}


def default_assets(symbols: Iterable[str] = ()) -> list[StandInAsset]:
    """``symbols`` active and tradable (NASDAQ for a few well-known ones, else NYSE), plus the exclusions."""
    nasdaq = {"AAPL", "MSFT", "AMZN", "GOOGL", "FB", "NVDA", "ADBE", "NFLX", "INTC", "CSCO", "MU", "AMD", "SBUX",
              "COST"}
    out = [StandInAsset(s, exchange="NASDAQ" if s in nasdaq else "NYSE") for s in sorted(set(symbols))]
    out += [StandInAsset("SPY", exchange="ARCA"),
            StandInAsset("OLDCO", status="inactive", tradable=False),
            StandInAsset("NOTRADE", tradable=False),
            StandInAsset("PINKY", exchange="OTC"),
            StandInAsset("BTC/USD", exchange="CRYPTO", asset_class="crypto")]
    seen: set[str] = set()
    return [a for a in out if not (a.symbol in seen or seen.add(a.symbol))]


ASSETS: list[StandInAsset] = default_assets()


def configure(assets: Iterable[StandInAsset]) -> None:
    """Replace the served asset list (tests, the rehearsal)."""
    ASSETS[:] = list(assets)


def _order(a: StandInAsset) -> tuple[str, str, str]:
    return a.asset_class, a.exchange, a.symbol


def assets_api(method: str, path: str, query: dict[str, list[str]]) -> tuple[int, Any] | None:
    """The response to an assets request, or None when the request is not one (the caller goes on)."""
    if method != "GET" or not (path == "/v2/assets" or path.startswith("/v2/assets/")):
        return None
    if path != "/v2/assets":
        key = path.rsplit("/", 1)[1]
        hit = next((a for a in ASSETS if key in (a.symbol, a.json()["id"])), None)
        if hit is None:
            return 404, {"code": 40410000, "message": f"asset not found for {key}"}
        return 200, hit.json()
    q = {k: v[0] for k, v in query.items() if v}
    status = q.get("status")
    if status is not None and status not in STATUSES:
        return 422, {"code": 42210000, "message": f"invalid status {status}"}
    attrs = set(filter(None, q.get("attributes", "").split(",")))
    out = [a for a in sorted(ASSETS, key=_order)
           if (status is None or a.status == status)
           and a.asset_class == q.get("asset_class", a.asset_class)
           and a.exchange == q.get("exchange", a.exchange)
           and (not attrs or attrs & set(a.attributes))]
    return 200, [a.json() for a in out]
