"""The demo names its tear sheet, and the page loads in a real headless browser (Debian's chromium driven
by playwright) with every chart image."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from playwright import sync_api

from services.analytics.tearsheet import CHARTS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_names_its_tear_sheet_and_every_chart_loads_in_headless_chromium(tmp_path: Path) -> None:
    assert Path(CHROMIUM).exists(), "make browser installs Debian's chromium"
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}  # the demo's embedded Redis
    proc = subprocess.run([sys.executable, "-m", "avwap", "demo", "--from", "2018-12-03", "--to", "2018-12-31",
                           "--out", str(tmp_path / "demo")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=280)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("tear sheet: "), proc.stdout[-2000:]
    page_path = Path(last.removeprefix("tear sheet: "))
    assert page_path == tmp_path / "demo" / "artifacts" / "tearsheet" / "index.html"
    assert "Sharpe" in proc.stdout and "win rate" in proc.stdout  # the headline figures, for a person
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
    assert title.startswith("avwap tear sheet") and tables >= 2  # returns and trades, whatever the run
