"""``avwap universe build``: alpaca-py's get_all_assets against the trading stand-in, the scan's liquidity
rules on bars backfilled from the market-data stand-in (real bars), the scanner's file format, deterministic."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from avwap.cli import app
from shared.bars import BarStore, load_bars
from shared.settings import get_settings
from shared.universe import read_universe
from standins import alpaca_assets
from standins.alpaca_api import AlpacaStandIn
from standins.alpaca_assets import StandInAsset, assets_api, default_assets
from standins.alpaca_data import AlpacaDataStandIn
from tests.conftest import SAMPLE_DIR


@pytest.fixture(scope="module")
def daily():
    return load_bars(SAMPLE_DIR / "daily_2017_2018.csv.gz", tf="1d").rows()


def test_the_assets_endpoint_filters_and_sorts_as_alpaca_documents() -> None:
    saved = list(alpaca_assets.ASSETS)
    try:
        alpaca_assets.configure(default_assets(["MSFT", "AAPL", "XOM"]))
        status, body = assets_api("GET", "/v2/assets", {"status": ["active"], "asset_class": ["us_equity"]})
        assert status == 200
        assert [(a["exchange"], a["symbol"]) for a in body] == [("ARCA", "SPY"), ("NASDAQ", "AAPL"), ("NASDAQ", "MSFT"),
                                                                ("NYSE", "NOTRADE"), ("NYSE", "XOM"), ("OTC", "PINKY")]
        assert assets_api("GET", "/v2/assets/OLDCO", {})[1]["status"] == "inactive"
        assert assets_api("GET", "/v2/assets/NOPE", {})[0] == 404
        assert assets_api("GET", "/v2/assets", {"status": ["gone"]})[0] == 422
        assert assets_api("GET", "/v2/orders", {}) is None  # not an assets request: the stand-in goes on
    finally:
        alpaca_assets.configure(saved)


def _run(tmp_path: Path, daily, out: Path, *extra: str):
    env = {"APCA_API_KEY_ID": "PKUNI", "APCA_API_SECRET_KEY": "SECRETUNI", "BARS_DIR": str(tmp_path / "bars"),
           "APCA_ALLOW_LOCAL_URL": "1"}
    get_settings.cache_clear()
    try:
        with AlpacaStandIn() as broker, AlpacaDataStandIn([], daily) as data:
            env |= {"APCA_API_BASE_URL": broker.url, "APCA_DATA_URL": data.url}
            res = CliRunner().invoke(app, ["universe", "build", "--out", str(out), "--through", "2018-12-31", *extra],
                                     env=env)
            return res, broker, data
    finally:
        get_settings.cache_clear()


def test_universe_build_keeps_the_liquid_tradable_names_deterministically(tmp_path: Path, daily) -> None:
    syms = sorted({b.symbol for b in daily})
    saved = list(alpaca_assets.ASSETS)
    alpaca_assets.configure([*default_assets(syms), StandInAsset("DELISTED", status="inactive")])
    try:
        out = tmp_path / "universe.txt"
        sectors = tmp_path / "sectors.txt"
        sectors.write_text("AAPL,Information Technology\nXOM,Energy\n")
        res, broker, _ = _run(tmp_path, daily, out, "--min-dollar-volume", "1e9", "--sectors", str(sectors))
        assert res.exit_code == 0, res.output
        first = out.read_bytes()
        res2, _, _ = _run(tmp_path, daily, out, "--min-dollar-volume", "1e9", "--sectors", str(sectors))
        assert res2.exit_code == 0, res2.output
    finally:
        alpaca_assets.configure(saved)
    assert out.read_bytes() == first  # same assets, same bars: the same bytes
    assert ("GET", "/v2/assets") in broker.requests
    uni = read_universe(out)  # the scanner's own reader
    # the liquidity rule, recomputed here on the sample's last 20 sessions of 2018
    store = BarStore(tmp_path / "bars")
    expect = []
    for s in syms:
        rows = [b for b in daily if b.symbol == s][-20:]
        if rows and rows[-1].close >= 3.0 and sum(b.close * b.volume for b in rows) / len(rows) >= 1e9:
            expect.append(s)
    assert 0 < len(uni) < len(syms) and sorted(uni) == expect
    assert "SPY" not in uni and "PINKY" not in uni and "NOTRADE" not in uni and "DELISTED" not in uni
    assert uni.get("AAPL") == ("Information Technology" if "AAPL" in uni else None)
    assert first.startswith(b"# avwap universe build: ")
    assert len(store.daily(expect[0])) >= 270  # the survivors' full history was backfilled
    assert not (tmp_path / "bars" / ".universe-screen").exists()
