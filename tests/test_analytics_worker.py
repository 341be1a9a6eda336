"""The analytics worker on a real Redis: a three-session flow, redelivery, crash, two replicas, reports."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from services.analytics.report import summarize
from services.analytics.store import Store
from services.analytics.worker import SPEC
from shared.bus import Bus, Delivery
from shared.consumer import Consumer
from shared.ids import client_order_id, stable_id
from shared.schemas import (
    Alert,
    BarBatch,
    BrokerOrder,
    BrokerPosition,
    BrokerSnapshot,
    EntryIntent,
    ExitEvent,
    Message,
    OrderEvent,
    PortfolioDecisionBatch,
    PortfolioSnapshot,
    Rejection,
    SessionEvent,
    StopIntent,
    decode,
)
from shared.service import make_consumer, make_context
from shared.settings import load_settings
from shared.streams import (
    ALERTS,
    BARS_1D,
    BROKER,
    CANDIDATES,
    CLOCK,
    EXITS,
    INTENTS,
    ORDERS,
    PORTFOLIO,
    REJECTIONS,
)
from tests.test_analytics_core import batch, cand
from tests.test_analytics_helpers import at, close_ns, fill, real_store

D1, D2, D3 = "2018-10-01", "2018-10-02", "2018-10-03"
AAPL_OPEN_D1 = 227.95


@pytest.fixture(scope="module")
def bars_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bars")
    real_store(root, start="2018-09-01", end="2018-10-05", intraday=False)
    return root


def snap(date: str, reason: str, positions=(), orders=()) -> BrokerSnapshot:
    ts = close_ns(date) if reason == "close" else at(date, "08:30")
    return BrokerSnapshot(snapshot_id=stable_id("bs", date, reason), mode="PAPER_SIM", trade_date=date, ts=ts,
                          equity=1e5, cash=1e5, buying_power=1e5, positions=list(positions), open_orders=list(orders),
                          reason=reason)


def session(date: str, phase: str) -> SessionEvent:
    hhmm = {"PRE_MARKET": "08:30", "OPEN": "09:30", "WINDOW_OPEN": "09:35"}.get(phase)
    return SessionEvent(trade_date=date, phase=phase, ts=at(date, hhmm) if hhmm else close_ns(date))


def scenario(bars_root: Path) -> list[list[tuple[str, Message]]]:
    """Steps (each published at once, then quiescence) of three sessions with one AAPL trade."""
    from shared.bars import BarStore

    store = BarStore(bars_root)

    def day_bars(d: str) -> BarBatch:
        f = store.read_day("1d", d)
        from shared.bars import frame_to_rows

        return BarBatch(tf="1d", trade_date=d, bars=frame_to_rows(f), source="replay", final=True)

    entry = EntryIntent(intent_id="ei-aapl", candidate_id=stable_id("cd", D1, "AAPL"), symbol="AAPL", trade_date=D1,
                        qty=100, entry_level=225.0, stop_price=220.0, risk_per_share=5.0, notional=22_500.0)
    stop_int = StopIntent(intent_id="si-aapl", symbol="AAPL", trade_date=D2, action="place", qty=100, stop_price=220.0)
    stop_coid = client_order_id(stop_int.intent_id)
    live_stop = BrokerOrder(client_order_id=stop_coid, broker_order_id="b-stop", symbol="AAPL", side="sell",
                            order_type="stop", qty=100, status="new", stop_price=220.0)
    stray = BrokerOrder(client_order_id="not-ours", broker_order_id="b-x", symbol="XOM", side="buy",
                        order_type="limit", qty=5, status="new", limit_price=70.0)
    d1_fills = [fill("AAPL", "buy", 60, AAPL_OPEN_D1, close_ns(D1), D1, intent="ei-aapl", stop=220.0, fees=0.3, tid="t1",
                     event="partially_filled", cum=60),
                fill("AAPL", "buy", 40, AAPL_OPEN_D1, close_ns(D1), D1, intent="ei-aapl", stop=220.0, fees=0.2, tid="t2",
                     cum=100)]
    stop_fill = OrderEvent(event_id="oe-stop-fill", event="filled", mode="PAPER_SIM", intent_id=stop_int.intent_id,
                           client_order_id=stop_coid, symbol="AAPL", side="sell", kind="stop", qty=100,
                           order_type="stop", stop_price=226.5, filled_qty=100, fill_qty=100, fill_price=226.5,
                           avg_fill_price=226.5, trade_id="t3", fees=0.5, trade_date=D3, ts=at(D3, "16:00") - 1)
    held = BrokerPosition(symbol="AAPL", qty=100, avg_entry_price=AAPL_OPEN_D1)
    return [
        [(CLOCK, session(D1, "PRE_MARKET")), (BROKER, snap(D1, "pre_market"))],
        [(CANDIDATES, batch(cand("AAPL", 90, scan_date=D1, candidate_id=stable_id("cd", D1, "AAPL")),
                            cand("MSFT", 80, scan_date=D1, candidate_id=stable_id("cd", D1, "MSFT")), date=D1))],
        [(INTENTS, entry)],
        [(CLOCK, session(D1, "OPEN")), (CLOCK, session(D1, "WINDOW_OPEN"))],
        [(BARS_1D, day_bars(D1)), *[(ORDERS, f) for f in d1_fills],
         (EXITS, ExitEvent(event_id="xe1", kind="STOP_RESOLVED", symbol="AAPL", position_id="xp-aapl", trade_date=D1,
                           ts=close_ns(D1), stop_price=220.0, source="initial"))],
        [(CLOCK, session(D1, "CLOSE")),
         (REJECTIONS, Rejection(rejection_id="rj-msft", source="executor", symbol="MSFT", trade_date=D1,
                                reasons=["ENTRY_NOT_CONFIRMED"], ts=close_ns(D1))),
         (BROKER, snap(D1, "close", [held]))],
        [(CLOCK, session(D2, "PRE_MARKET")), (BROKER, snap(D2, "pre_market", [held]))],
        [(CANDIDATES, batch(cand("AAPL", 90), cand("JPM", 70)))],
        [(CLOCK, session(D2, "WINDOW_OPEN")), (INTENTS, stop_int)],
        [(BARS_1D, day_bars(D2)),
         (EXITS, ExitEvent(event_id="xe2", kind="STOP_RATCHET", symbol="AAPL", position_id="xp-aapl", trade_date=D2,
                           ts=close_ns(D2), stop_price=226.5, previous_stop=220.0, source="daily_swing_low"))],
        [(CLOCK, session(D2, "CLOSE")),
         (BROKER, snap(D2, "close", [held, BrokerPosition(symbol="MSFT", qty=5, avg_entry_price=114.0)], [live_stop, stray]))],
        [(CLOCK, session(D3, "PRE_MARKET")), (CANDIDATES, batch(date=D3))],
        [(BARS_1D, day_bars(D3)), (ORDERS, stop_fill)],
        [(CLOCK, session(D3, "CLOSE")), (BROKER, snap(D3, "close"))],
    ]


def _settings(url: str, root: Path, bars: Path):
    # bus_batch=1: one entry per read, so replicas interleave (every run uses the same settings hash)
    return load_settings(redis_url=url, artifacts_dir=str(root / "artifacts"), ledger_dir=str(root / "ledger"),
                         bars_dir=str(bars), execution_mode="PAPER_SIM", bus_block_ms=50, bus_batch=1)


def run(url: str, root: Path, bars: Path, replicas: int = 1, crash_on_close: bool = False) -> dict[str, bytes]:
    """Publish the scenario step by step (quiescence after each) into ``replicas`` consumers."""
    settings = _settings(url, root, bars)
    clients = [redis.Redis.from_url(url) for _ in range(replicas)]
    consumers: list[Consumer] = []
    crashed: list[str] = []
    for i, r in enumerate(clients):
        ctx = make_context("analytics", settings, r)
        c = make_consumer(SPEC, ctx, consumer_name=f"analytics-{i}")
        if crash_on_close:
            inner = c.handler

            def crashing(msg: Message, d: Delivery, inner=inner):
                out = inner(msg, d)  # every side effect done...
                if isinstance(msg, BrokerSnapshot) and msg.reason == "close" and msg.trade_date not in crashed:
                    crashed.append(msg.trade_date)
                    raise RuntimeError("crash after side effects, before publish+ack")
                return out

            c.handler = crashing
        c.ensure_groups()
        consumers.append(c)
    bus = Bus(clients[0])
    for k, step in enumerate(scenario(bars)):
        bus.publish_many(step)
        if replicas > 1 and k % 2 == 0:  # even steps: strict alternation, one entry each
            idle = 0
            while idle < 2 * len(consumers):
                for c in consumers:
                    idle = 0 if c.step(block=False) else idle + 1
        for _ in range(3):  # concurrent replicas; our own alerts come back around: drain until nothing moves
            threads = [threading.Thread(target=c.run, kwargs={"install_signals": False, "until_idle": True})
                       for c in consumers]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    if replicas > 1:
        assert all(c.stats.handled > 0 for c in consumers)  # both replicas took part
    for r in clients:
        r.close()
    files = {}
    for base in ("artifacts", "ledger"):
        for p in sorted((root / base).rglob("*")):
            if p.is_file():
                files[str(p.relative_to(root))] = p.read_bytes()
    return files


def _stream(r: redis.Redis, name: str) -> list[Message]:
    return [decode(f[b"data"]) for _, f in r.xrange(name)]


def test_three_sessions_end_to_end(redis_url: str, real_redis: redis.Redis, tmp_path: Path, bars_dir: Path) -> None:
    files = run(redis_url, tmp_path, bars_dir)
    art = tmp_path / "artifacts"
    # decisions at PRE_MARKET: day one trades from the starting-capital snapshot
    dec = [m for m in _stream(real_redis, PORTFOLIO) if isinstance(m, PortfolioDecisionBatch)]
    assert [b.date for b in dec] == [D1, D2, D3]
    assert [(d.symbol, d.decision) for d in dec[0].decisions] == [("AAPL", "ALLOW"), ("MSFT", "ALLOW")]
    d2 = {d.symbol: d.reason_codes for d in dec[1].decisions}
    assert d2 == {"AAPL": ["LIMIT_SYMBOL_CONCENTRATION"], "JPM": ["ALLOW_WITHIN_LIMITS"]}  # AAPL is 23% of equity
    assert dec[2].decisions == []  # market gate closed: no candidates
    snaps = [m for m in _stream(real_redis, PORTFOLIO) if isinstance(m, PortfolioSnapshot)]
    assert [s.date for s in snaps] == [D1, D2, D3]
    s1, s2, s3 = snaps
    aapl_close = {D1: 227.26, D2: 229.28}
    assert s1.positions[0].mark == pytest.approx(aapl_close[D1]) and s1.positions[0].qty == 100
    assert s1.equity == pytest.approx(100_000 - 0.5 + 100 * (aapl_close[D1] - AAPL_OPEN_D1))
    assert s2.positions[0].stop_price == pytest.approx(226.5)
    assert s3.positions == [] and s3.realized_pnl == pytest.approx(100 * (226.5 - AAPL_OPEN_D1) - 1.0)
    assert s3.equity == pytest.approx(s3.cash) and s3.max_drawdown > 0
    # reconciliation: D1 ok (entered after the window: no stop yet), D2 typed mismatches + one alert
    import json

    rec = {d: json.loads(files[f"artifacts/reconciliation/{d}.json"]) for d in (D1, D2, D3)}
    assert rec[D1]["status"] == "ok" and rec[D3]["status"] == "ok"
    assert [(m["type"], m["symbol"]) for m in rec[D2]["mismatches"]] == [("MISSING_POSITION", "MSFT"),
                                                                         ("UNKNOWN_ORDER", "XOM")]
    alerts = [m for m in _stream(real_redis, ALERTS) if isinstance(m, Alert)]
    assert [(a.trade_date, a.severity, a.runbook) for a in alerts if a.kind == "recon_mismatch"] == [
        (D2, "warning", "reconciliation-mismatch")]
    assert [a.trade_date for a in alerts if a.kind == "daily_report"] == [D1, D2, D3]
    # trades: the AAPL trade closes on D3 with its exit events linked
    t3 = json.loads(files[f"artifacts/trades/{D3}.json"])["trades"]
    assert len(t3) == 1 and t3[0]["status"] == "closed" and t3[0]["exit_event_ids"] == ["xe1", "xe2"]
    assert t3[0]["exit_position_id"] == "xp-aapl" and t3[0]["entry_qty"] == 100
    # rejections of D1 (arrived with the close) are in the artifacts and the report
    assert json.loads(files[f"artifacts/rejections/{D1}.json"])["rejections"][0]["reasons"] == ["ENTRY_NOT_CONFIRMED"]
    for d in (D1, D2, D3):
        for name in ("report.html", "report.md", "equity.png", "drawdown.png", "exposure.png"):
            assert (art / "reports" / d / name).stat().st_size > 0
    assert "ENTRY_NOT_CONFIRMED" in (art / "reports" / D1 / "report.md").read_text()
    assert "226.50" in (art / "reports" / D2 / "report.md").read_text()  # open position with its stop
    # ledgers per NY date, sorted by record key
    lines = (tmp_path / "ledger" / "analytics" / f"{D1}.jsonl").read_text().splitlines()
    keys = [json.loads(x)["key"] for x in lines]
    assert keys == sorted(keys) and "rejection:rj-msft" in keys and "order_event:" + stable_id("oe", "t1") in keys
    journal = (tmp_path / "ledger" / "analytics" / f"{D1}.journal.jsonl").read_text().splitlines()
    jkeys = [json.loads(x)["key"] for x in journal]
    assert jkeys == sorted(jkeys) and "session_event:CLOSE" in jkeys and "entry_intent:ei-aapl" in jkeys
    assert any(k.startswith("alert:") for k in jkeys) and any(k.startswith("bar_batch:1d:") for k in jkeys)
    summary = summarize(art)
    assert summary["trades"] == 1 and summary["wins"] == 0 and summary["losses"] == 1
    assert summary["rejections_by_reason"] == {"ENTRY_NOT_CONFIRMED": 1}
    assert summary["decisions"] == {"ALLOW": 3, "BLOCK": 1}
    assert summary["reconciliation_mismatch_days"] == [D2]
    # CLI: `avwap report --date D --artifacts DIR` rewrites the same bytes
    before = (art / "reports" / D2 / "equity.png").read_bytes(), (art / "reports" / D2 / "report.html").read_bytes()
    from avwap.cli import app

    res = CliRunner().invoke(app, ["report", "--date", D2, "--artifacts", str(art)])
    assert res.exit_code == 0, res.output
    assert ((art / "reports" / D2 / "equity.png").read_bytes(), (art / "reports" / D2 / "report.html").read_bytes()) == before
    missing = CliRunner().invoke(app, ["report", "--date", "2018-10-09", "--artifacts", str(art)])
    assert missing.exit_code != 0


def test_redelivery_changes_nothing(redis_url: str, real_redis: redis.Redis, tmp_path: Path, bars_dir: Path) -> None:
    files = run(redis_url, tmp_path, bars_dir)
    settings = _settings(redis_url, tmp_path, bars_dir)
    handler = SPEC.build(make_context("analytics", settings, real_redis))
    store = Store(real_redis)
    sizes = {d: len(store.day(d)) for d in (D1, D2, D3)}
    for step in scenario(bars_dir):  # every message delivered a second time
        for stream, msg in step:
            handler(msg, Delivery(stream, "0-1", 2, "analytics-0"))
    assert {d: len(store.day(d)) for d in (D1, D2, D3)} == sizes
    again = {}
    for base in ("artifacts", "ledger"):
        for p in sorted((tmp_path / base).rglob("*")):
            if p.is_file():
                again[str(p.relative_to(tmp_path))] = p.read_bytes()
    assert again == files


def test_two_replicas_and_a_crash_give_identical_bytes(redis_url: str, real_redis: redis.Redis, tmp_path: Path,
                                                       bars_dir: Path) -> None:
    one = run(redis_url, tmp_path / "one", bars_dir)
    one_portfolio = len(real_redis.xrange(PORTFOLIO))
    real_redis.flushdb()
    two = run(redis_url, tmp_path / "two", bars_dir, replicas=2)
    assert len(real_redis.xrange(PORTFOLIO)) == one_portfolio
    real_redis.flushdb()
    crashed = run(redis_url, tmp_path / "crash", bars_dir, crash_on_close=True)
    # the crashed attempts published nothing; the redelivery published each snapshot once
    assert [m.date for m in _stream(real_redis, PORTFOLIO) if isinstance(m, PortfolioSnapshot)] == [D1, D2, D3]
    assert sorted(one) == sorted(two) == sorted(crashed)
    for name in one:
        assert one[name] == two[name], name
        assert one[name] == crashed[name], name
    assert any(n.endswith(".png") for n in one)


def test_a_crash_just_before_the_days_commit_is_redone_on_redelivery_with_identical_bytes(
        redis_url: str, real_redis: redis.Redis, tmp_path: Path, bars_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The day's work (close, decisions, OPEN) commits its Redis writes, outputs and XACK in one unit of work: a
    crash after its files were written and before that commit publishes nothing and acks nothing, and the
    redelivery does the work again: every output once, every file the bytes of an uncrashed run."""
    clean = run(redis_url, tmp_path / "clean", bars_dir)
    clean_portfolio = [m for m in _stream(real_redis, PORTFOLIO)]
    real_redis.flushdb()
    import shared.unit_of_work as uow_module

    calls: list[str] = []

    def crash_every_first_attempt(name: str) -> None:
        if name == "analytics_before_commit":
            calls.append(name)
            if len(calls) % 2 == 1:  # the first try of every day unit dies before its commit; the redelivery lands
                raise RuntimeError("crash before the day's commit")

    monkeypatch.setattr(uow_module, "crash_point", crash_every_first_attempt)
    crashed = run(redis_url, tmp_path / "crash", bars_dir)
    assert len(calls) >= 6 and len(calls) % 2 == 0  # closes, decisions and the OPEN each crashed once
    assert [m for m in _stream(real_redis, PORTFOLIO)] == clean_portfolio
    assert crashed == clean


def test_decisions_fail_closed_without_the_previous_close(redis_url: str, real_redis: redis.Redis, tmp_path: Path,
                                                          bars_dir: Path) -> None:
    """Day one trades from the starting capital; a later day whose previous CLOSE snapshot never
    came is blocked with PORTFOLIO_SNAPSHOT_MISSING (never 'day one' again)."""
    settings = _settings(redis_url, tmp_path, bars_dir)
    c = make_consumer(SPEC, make_context("analytics", settings, real_redis), consumer_name="analytics-0")
    c.ensure_groups()

    def deliver(stream: str, msg: Message) -> list[tuple[str, Message]]:
        """Publish ``msg``, let the worker handle it; what it published (its commit's outputs)."""
        seen = {s: len(real_redis.xrange(s)) for s in (PORTFOLIO, ALERTS)}
        Bus(real_redis).publish(stream, msg)
        while c.step(block=False):
            pass
        return [(s, m) for s in (PORTFOLIO, ALERTS) for m in _stream(real_redis, s)[seen[s]:]]

    deliver(CLOCK, session(D1, "PRE_MARKET"))
    ((_, first),) = deliver(CANDIDATES, batch(cand("AAA", 90, scan_date=D1, candidate_id="c1"), date=D1))
    assert first.decisions[0].reason_codes == ["ALLOW_WITHIN_LIMITS"]
    assert first.snapshot_id == stable_id("ps", "initial", 100_000.0)
    deliver(CLOCK, session(D1, "CLOSE"))  # ... but the executor's CLOSE snapshot never arrives
    deliver(CLOCK, session(D2, "PRE_MARKET"))
    ((_, second),) = deliver(CANDIDATES, batch(cand("AAA", 90)))
    assert second.decisions[0].decision == "BLOCK"
    assert second.decisions[0].reason_codes == ["PORTFOLIO_SNAPSHOT_MISSING"]


def test_every_artifact_carries_provenance_and_decodes(redis_url: str, real_redis: redis.Redis, tmp_path: Path,
                                                       bars_dir: Path) -> None:
    """/work/notes/provenance.md: JSON artifacts have a top-level provenance (code version, settings
    hash, inputs), every JSONL line has one, reports end with a provenance footer; and every JSON
    artifact decodes with its registered, versioned schema."""
    import json

    from shared.artifacts import code_version
    from shared.schemas import DailyRejections, DailyTrades, Reconciliation, Trade

    files = run(redis_url, tmp_path, bars_dir)
    settings_hash = _settings(redis_url, tmp_path, bars_dir).hash()
    schema = {"portfolio_snapshots": PortfolioSnapshot, "portfolio_decisions": PortfolioDecisionBatch,
              "reconciliation": Reconciliation, "trades": DailyTrades, "rejections": DailyRejections}
    seen: set[str] = set()
    for name, data in files.items():
        if name.endswith(".json"):
            sub = name.split("/")[1]
            prov = json.loads(data)["provenance"]
            assert prov["code_version"] == code_version() and prov["settings_hash"] == settings_hash, name
            inputs = {k: v for k, v in prov.items() if k.startswith("input:")}
            assert inputs and all(v and "/" not in v for v in inputs.values()), (name, inputs)  # ids, never paths
            assert isinstance(decode(data, schema[sub]), schema[sub]), name
            seen.add(sub)
        elif name.endswith(".jsonl"):
            for line in data.splitlines():
                rec = json.loads(line)
                assert rec["provenance"]["code_version"] == code_version(), name
                assert rec["provenance"]["settings_hash"] == settings_hash
                assert rec["provenance"]["input:message"] == rec["key"]
            seen.add("ledger")
        elif name.endswith((".md", ".html")):
            text = data.decode()
            assert "Provenance:" in text and code_version() in text and settings_hash in text, name
            snap = json.loads(files[f"artifacts/portfolio_snapshots/{name.split('/')[2]}.json"])
            assert snap["snapshot_id"] in text
            seen.add(name.rsplit(".", 1)[1])
    assert seen == {*schema, "ledger", "md", "html"}
    t3 = decode(files[f"artifacts/trades/{D3}.json"], DailyTrades)
    assert all(isinstance(t, Trade) and t.v == 2 for t in t3.trades) and [f.fill_id for f in t3.fills] == ["t3"]
    dec = decode(files[f"artifacts/portfolio_decisions/{D2}.json"], PortfolioDecisionBatch)
    assert dec.provenance["decision_artifact"] == f"portfolio_decisions/{D2}.json"
    published = [m for m in _stream(real_redis, PORTFOLIO) if isinstance(m, PortfolioDecisionBatch)]
    assert all(f"artifacts/{b.provenance['decision_artifact']}" in files for b in published)


def test_history_written_before_the_ingest_logs_is_backfilled_on_start(redis_url: str, real_redis: redis.Redis,
                                                                        tmp_path: Path, bars_dir: Path) -> None:
    """State from a worker without the history logs: on_start appends the missing keys, so the
    incremental history still sees every fill (the D3 trades are the same bytes)."""
    from services.analytics.ledger import HISTORY_TYPES
    from services.analytics.store import histlog_key

    files = run(redis_url, tmp_path, bars_dir)
    for t in HISTORY_TYPES:
        real_redis.delete(histlog_key(t))
    (tmp_path / "artifacts" / "trades" / f"{D3}.json").unlink()
    ctx = make_context("analytics", _settings(redis_url, tmp_path, bars_dir), real_redis)
    handler = SPEC.build(ctx)
    handler.start()
    handler.start()  # twice (a second replica starting): each key is logged once
    assert real_redis.llen(histlog_key("order_event")) == real_redis.hlen("avwap:state:analytics:hist:order_event")
    handler(snap(D3, "close"), Delivery(BROKER, "9-0", 2, "analytics-0"))
    assert (tmp_path / "artifacts" / "trades" / f"{D3}.json").read_bytes() == files[f"artifacts/trades/{D3}.json"]


def test_the_alerts_of_a_close_are_in_its_journal_and_their_ingest_rewrites_nothing(
        redis_url: str, real_redis: redis.Redis, tmp_path: Path, bars_dir: Path, monkeypatch) -> None:
    """The daily report and reconciliation alerts a close publishes come back on avwap:alerts as late records
    of the closed day: they are staged with the close and written into its journal then, so their ingest
    finds them stored and sets nothing off (no lock, no rewrite); the bytes are those of a run where the
    ingest rewrote the journal (the other tests' expectations, and ``test_redelivery_changes_nothing``)."""
    import json

    import services.analytics.worker as worker

    routed: dict[str, tuple[str, str, str, bool]] = {}  # alert id -> the last route (a guess that a guard undid comes first)
    attempts: dict[str, int] = {}
    real_route = worker.route

    def recording(msg: Message, key: str, **kw):
        step = real_route(msg, key, **kw)
        if isinstance(msg, Alert):
            routed[msg.alert_id] = (msg.source, msg.kind, msg.trade_date, step.locked)
            attempts[msg.alert_id] = attempts.get(msg.alert_id, 0) + 1
        return step

    monkeypatch.setattr(worker, "route", recording)
    files = run(redis_url, tmp_path, bars_dir)
    own = [r for r in routed.values() if r[0] == "analytics" and r[1] in ("daily_report", "recon_mismatch")]
    assert {(k, d) for _, k, d, _ in own} == {("daily_report", D1), ("daily_report", D2), ("daily_report", D3),
                                              ("recon_mismatch", D2)}
    assert not any(locked for *_, locked in own)  # stored by the close: nothing to do on their ingest
    mine = [a for a, r in routed.items() if r in own]
    assert [attempts[a] for a in mine] == [1] * len(own)  # the ingest's guess knew them stored: no guard failed
    for d in (D1, D2, D3):
        lines = [json.loads(x) for x in files[f"ledger/analytics/{d}.journal.jsonl"].splitlines()]
        kinds = [x["record"].get("kind") for x in lines if x["key"].startswith("alert:")]
        assert "daily_report" in kinds and ("recon_mismatch" in kinds) == (d == D2), d
        provs = {json.dumps({k: v for k, v in x["provenance"].items() if k != "input:message"}) for x in lines}
        assert len(provs) == 1  # the staged records carry this worker's provenance, as an ingested one does
