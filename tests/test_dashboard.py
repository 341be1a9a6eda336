"""The dashboard as an operator uses it: a real headless Chromium (Debian's, driven by playwright)
against the real dashboard process over a replay's Redis and artifacts, services still running.

Every page renders the replay's data, the positions page shows each position's stop, the banner
appears (without a reload) when a service's heartbeat goes away, and the token is required. A
screenshot of each page is written to ``out/test-output/dashboard/`` (docs/dashboard.md).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.exits.worker import load_positions
from shared.redis_conn import free_port
from shared.schemas import decode
from shared.streams import ALERTS
from tests.conftest import ROOT
from tests.live_system import END, LiveSystem, run_live_system

SHOTS = ROOT / "out" / "test-output" / "dashboard"
TOKEN = "dash-test-token-7f3a"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def live_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveSystem]:
    yield from run_live_system(tmp_path_factory)


def _start(system: LiveSystem, log: Path, **env: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    full = {**os.environ, **system.env(), "DASHBOARD_PORT": str(port), "DASHBOARD_REFRESH_S": "0.5",
            "PYTHONPATH": str(ROOT), **env}
    for k in [k for k in full if k.startswith("DASHBOARD_") and k not in env and k not in ("DASHBOARD_PORT", "DASHBOARD_REFRESH_S")]:
        full.pop(k)
    out = open(log, "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "services.dashboard"], cwd=ROOT, env=full, stdout=out,
                            stderr=subprocess.STDOUT)
    return proc, port


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"dashboard exited with {proc.returncode}"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=15)


@pytest.fixture(scope="module")
def dashboard(live_system: LiveSystem, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    log = tmp_path_factory.mktemp("dash") / "dashboard.log"
    proc, port = _start(live_system, log, DASHBOARD_TOKEN=TOKEN)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_http(base + "/healthz", proc)
        yield base, log
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    assert Path(CHROMIUM).exists(), "Chromium is missing: `make browser` (or `make test`) installs Debian's chromium"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser, dashboard):  # noqa: ANN001, ANN201 - playwright types
    ctx = browser.new_context(http_credentials={"username": "operator", "password": TOKEN},
                              viewport={"width": 1400, "height": 1000}, base_url=dashboard[0])
    pg = ctx.new_page()
    yield pg
    ctx.close()


def shot(pg, name: str) -> Path:  # noqa: ANN001
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    pg.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    return path


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_now_page_shows_each_service_the_streams_the_feed_and_the_broker(page, live_system: LiveSystem) -> None:
    assert page.goto("/").status == 200
    for group in ("scanner", "risk", "executor", "exits", "analytics"):
        row = page.locator(f"#heartbeats tr[data-group='{group}']")
        assert f"{group}-0" in row.inner_text()
    assert page.inner_text("#trading-state") == "ACTIVE"
    assert page.inner_text("#dlq-size") == "0"
    assert "healthy" in page.inner_text("#banner")
    assert f"1d {END}" in page.inner_text("main")
    clock_len = live_system.r.xlen("avwap:clock")
    groups = {g["name"].decode() for g in live_system.r.xinfo_groups("avwap:clock")}
    assert len(groups) >= 5  # scanner, regime, risk, executor, exits, analytics read the clock
    assert page.locator("#groups tr", has_text="avwap:clock").count() == len(groups)  # one row per group
    assert f"avwap:clock\t{clock_len}" in page.inner_text("#groups")
    assert "PAPER_SIM" in page.inner_text("main")
    shot(page, "now")


def test_positions_page_shows_each_position_with_its_live_stop(page, live_system: LiveSystem) -> None:
    positions = {s: p for s, p in load_positions(live_system.r, include_closed=False).items() if p.qty > 0}
    assert positions and any(p.live_stop_price for p in positions.values())  # the replay left protected positions
    snap = decode(live_system.r.xrevrange("avwap:broker", count=1)[0][1][b"data"])
    assert page.goto("/positions").status == 200
    assert page.locator("#positions tr[data-symbol]").count() == len(positions)
    for sym, p in positions.items():
        row = page.locator(f"#positions tr[data-symbol='{sym}']")
        stop = row.locator("td.stop").inner_text()
        assert stop == (f"{p.live_stop_price:.2f} × {p.live_stop_qty}" if p.live_stop_price else "NONE"), sym
        broker = [o for o in snap.open_orders if o.symbol == sym and o.side == "sell" and o.stop_price]
        assert row.locator("td.broker-stop").inner_text() == (
            ", ".join(f"{o.stop_price:.2f} × {o.qty - o.filled_qty}" for o in broker) or "none")
        text = row.inner_text()
        assert f"{p.avg_entry_price:.2f}" in text and str(p.qty) in text
        assert {"daily_swing_low": "daily swing low", "intraday_higher_low": "5-minute higher low"}.get(
            p.stop_source, p.stop_source.split("_")[0]) in text
    shot(page, "positions")


def test_today_page_shows_the_sessions_pipeline(page, live_system: LiveSystem) -> None:
    art = live_system.out / "artifacts"
    cand = _json(art / "candidates" / f"{END}.json")
    decisions = _json(art / "portfolio_decisions" / f"{END}.json")["decisions"]
    assert page.goto("/today").status == 200
    orders = [x for x in map(json.loads, (live_system.out / "ledger" / "PAPER_SIM" / f"{END}.jsonl").read_text()
                             .splitlines()) if x["record"] == "order_event"]

    def card(name: str) -> int:
        return int(page.inner_text(f"#pipeline [data-count='{name}'] .big"))

    assert card("candidates") == len(cand["candidates"])
    assert card("ALLOW") == sum(1 for x in decisions if x["decision"] == "ALLOW")
    assert card("BLOCK") == sum(1 for x in decisions if x["decision"] == "BLOCK")
    assert card("orders") == len({x["client_order_id"] for x in orders})
    assert card("fills") == sum(1 for x in orders if x["fill_price"] is not None)
    timeline = page.locator("#timeline tr")
    steps = Counter(t.split("\t")[1] for t in timeline.all_inner_texts()[1:])
    assert steps["candidate"] == len(cand["candidates"])
    assert steps["ALLOW"] + steps["BLOCK"] == len(decisions)
    shot(page, "today")
    page.select_option("select[name=date]", "2018-01-03")  # another session, from the page's own control
    page.wait_for_url("**date=2018-01-03")
    other = _json(art / "candidates" / "2018-01-03.json")
    assert page.locator("#timeline tr", has_text="candidate").count() >= len(other["candidates"])


def test_history_page_charts_and_filters_trades(page, live_system: LiveSystem) -> None:
    closed = [t for p in sorted((live_system.out / "artifacts" / "trades").glob("*.json"))
              for t in _json(p)["trades"] if t["status"] == "closed"]
    assert closed
    assert page.goto("/history").status == 200
    page.wait_for_function("document.querySelectorAll('.chart canvas').length === 3")  # three charts drawn
    assert page.locator("#trades tr[data-symbol]").count() == len(closed)
    shot(page, "history")
    page.select_option("select[name=outcome]", "loss")
    page.click("#trade-filters button")
    page.wait_for_url("**outcome=loss**")
    losses = [t for t in closed if t["realized_pnl"] <= 0]
    assert page.locator("#trades tr[data-symbol]").count() == len(losses)


def test_symbol_page_charts_avwaps_and_says_why(page, live_system: LiveSystem) -> None:
    art = live_system.out / "artifacts"
    cand = _json(art / "candidates" / f"{END}.json")["candidates"][0]
    assert page.goto(f"/symbol?s={cand['symbol']}&date={END}").status == 200
    page.wait_for_selector("#chart-symbol canvas")
    assert page.inner_text("#why").startswith(f"CANDIDATE on {END}: rank {cand['rank']}")
    assert f"{cand['entry_level']:.2f}" in page.inner_text("#levels")
    assert cand["anchor_date"] in page.inner_text(".legend")
    shot(page, "symbol")
    sym, rej = sorted(_json(art / "candidates" / f"{END}.rejects.json")["rejects"].items())[0]
    page.goto(f"/symbol?s={sym}&date={END}")
    assert page.inner_text("#why").startswith(f"not a candidate on {END}: {rej['code']}")


def test_banner_appears_without_reload_when_a_heartbeat_goes_away(page, live_system: LiveSystem) -> None:
    page.goto("/")
    assert "healthy" in page.inner_text("#banner")
    page.evaluate("window.__same_page = true")
    live_system.procs.kill("analytics-0", signal.SIGTERM)  # a clean stop deletes its heartbeat key
    try:
        page.wait_for_selector("#banner.bad", timeout=15_000)
        assert "analytics: no live heartbeat" in page.inner_text("#banner")
        assert page.evaluate("window.__same_page") is True  # updated in place, not reloaded
        shot(page, "banner")
    finally:
        live_system.procs.start("analytics", 0)
        live_system.procs.wait_ready()
    page.wait_for_selector("#banner.ok", timeout=15_000)


def test_auth_refuses_without_the_token(browser, dashboard) -> None:  # noqa: ANN001
    base, log = dashboard
    from playwright.sync_api import Error as PlaywrightError

    for creds in (None, {"username": "operator", "password": "nope"}):
        ctx = browser.new_context(base_url=base, http_credentials=creds)
        try:
            pg = ctx.new_page()
            try:  # the browser is refused: a 401 page, or (wrong credentials) a failed navigation
                resp = pg.goto("/positions")
                assert resp is not None and resp.status == 401
                assert "authentication required" in resp.text() and "Positions" not in resp.text()
            except PlaywrightError as exc:
                assert "ERR_INVALID_AUTH_CREDENTIALS" in str(exc)
            assert ctx.request.get("/positions").status == 401
        finally:
            ctx.close()
    assert httpx.get(base + "/static/dashboard.js").status_code == 401
    assert httpx.get(base + "/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert httpx.get(base + "/healthz").text == "ok\n"  # the compose healthcheck needs no token
    assert TOKEN not in log.read_text()


def test_refuses_to_start_without_a_token_unless_local(live_system: LiveSystem, tmp_path: Path) -> None:
    proc, port = _start(live_system, tmp_path / "refused.log")
    try:
        deadline = time.monotonic() + 20
        titles: list[str] = []
        while time.monotonic() < deadline and "dashboard refused to start" not in titles:
            titles = [decode(f[b"data"]).title for _, f in live_system.r.xrevrange(ALERTS, count=20)]  # type: ignore[attr-defined]
            time.sleep(0.1)
        assert "dashboard refused to start" in titles
        assert proc.poll() is None  # idles (no restart loop) ...
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)  # ... and serves nothing
    finally:
        assert _stop(proc) == 2
    assert "DASHBOARD_TOKEN is not set" in (tmp_path / "refused.log").read_text()
    proc, port = _start(live_system, tmp_path / "local.log", DASHBOARD_LOCAL="1")
    try:
        _wait_http(f"http://127.0.0.1:{port}/positions", proc)  # local: no token needed, loopback only
    finally:
        _stop(proc)


def test_local_mode_only_on_loopback() -> None:
    from services.dashboard.settings import DashboardSettings

    assert DashboardSettings(dashboard_local=True, dashboard_host="127.0.0.1").refusal() is None
    assert "loopback" in (DashboardSettings(dashboard_local=True, dashboard_host="0.0.0.0").refusal() or "")
    assert DashboardSettings(dashboard_token="t", dashboard_host="0.0.0.0").refusal() is None


def test_pages_write_nothing_to_redis(dashboard, live_system: LiveSystem) -> None:
    r = live_system.r

    def state() -> dict[bytes, bytes]:
        return {k: r.dump(k) for k in sorted(r.scan_iter(count=1000)) if not k.startswith(b"avwap:hb:")}

    before = state()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/", "/positions", "/today", "/history", f"/symbol?date={END}", "/?fragment=1"):
        assert httpx.get(dashboard[0] + path, headers=auth, timeout=30).status_code == 200
    assert state() == before


def test_the_dashboards_redis_client_refuses_writes(live_system: LiveSystem) -> None:
    from services.dashboard.readers import read_only

    r = read_only(live_system.url)
    assert r.xlen("avwap:clock") == live_system.r.xlen("avwap:clock")
    for write in (lambda: r.set("avwap:control:kill_switch", "1"), lambda: r.xadd("avwap:dlq", {"a": 1}),
                  lambda: r.delete("avwap:clock"), lambda: r.flushdb()):
        with pytest.raises(PermissionError):
            write()
    assert live_system.r.get("avwap:control:kill_switch") is None
