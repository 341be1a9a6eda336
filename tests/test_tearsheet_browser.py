"""The tear sheet in a real headless browser (Debian's chromium driven by playwright): every chart loads."""

from __future__ import annotations

import shutil
from pathlib import Path

from playwright import sync_api

from services.analytics.tearsheet import CHARTS, write_tearsheet
from tests.test_analytics_tearsheet import crafted_run

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def test_every_chart_of_the_tear_sheet_loads_in_headless_chromium(tmp_path: Path) -> None:
    assert Path(CHROMIUM).exists(), "make browser installs Debian's chromium"
    crafted_run(tmp_path)
    page_path = write_tearsheet(tmp_path)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            failed: list[str] = []
            page.on("requestfailed", lambda req: failed.append(req.url))
            page.goto(page_path.as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => ({src: e.getAttribute('src'), ok: e.complete && e.naturalWidth > 0,"
                       " w: e.naturalWidth, h: e.naturalHeight}))")
            title = page.title()
            tables = page.eval_on_selector_all("table", "els => els.length")
        finally:
            browser.close()
    assert sorted(i["src"] for i in images) == sorted(f"{c}.png" for c in CHARTS)
    assert all(i["ok"] and i["w"] > 100 and i["h"] > 50 for i in images), images
    assert not failed, failed
    assert title.startswith("avwap tear sheet") and tables >= 5
