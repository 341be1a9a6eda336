"""Prometheus metrics: each service's endpoint is scraped over HTTP and its values are checked
against what the replay did (the streams, the artifacts, the ledgers), then against what the
test does itself (a malformed entry dead-lettered; broker calls through the metered broker).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.exits.worker import load_positions
from shared import metrics
from shared.schemas import decode
from shared.streams import CANDIDATES, CLOCK, DLQ, INTENTS
from tests.live_system import LiveSystem, run_live_system

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def live_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveSystem]:
    yield from run_live_system(tmp_path_factory)


def scrape(system: LiveSystem, key: str) -> Samples:
    port = system.procs.metrics_ports[key]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every sample of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def _jsonl(path) -> list[dict]:  # noqa: ANN001
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


SERVICES = ("scanner", "risk", "executor", "exits", "analytics")


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_reports_its_streams_groups_and_heartbeat(live_system: LiveSystem, service: str) -> None:
    r = live_system.r
    m = scrape(live_system, f"{service}-0")
    assert value(m, "avwap_redis_up") == 1
    assert value(m, "avwap_dlq_size") == r.xlen(DLQ)
    groups = {(s, g["name"].decode()): g for s in r.scan_iter("avwap:*", _type="stream")
              for g in r.xinfo_groups(s) if g["name"].decode() == service}
    assert groups
    for (stream, _g), info in groups.items():
        labels = {"group": service, "stream": stream.decode()}
        assert value(m, "avwap_stream_pending", **labels) == info["pending"] == 0
        assert value(m, "avwap_stream_lag", **labels) == info["lag"] == 0
        # every entry delivered to the group was handled once, and timed once
        handled = total(m, "avwap_messages_handled_total", **labels)
        assert handled == (info["entries-read"] or 0), labels
        assert value(m, "avwap_handler_seconds_count", **labels) == handled
    assert time.time() - value(m, "avwap_heartbeat_timestamp_seconds", group=service, consumer=f"{service}-0") < 60
    assert value(m, "avwap_messages_handled_total", group=service, stream=CLOCK, type="session_event") == r.xlen(CLOCK)


def test_scanner_published_one_candidate_batch_per_session(live_system: LiveSystem) -> None:
    m = scrape(live_system, "scanner-0")
    sessions = len(live_system.inp.sessions)
    assert value(m, "avwap_messages_published_total", service="scanner", stream=CANDIDATES, type="candidate_batch") == sessions


def test_risk_counts_decisions_by_reason_code(live_system: LiveSystem) -> None:
    m = scrape(live_system, "risk-0")
    intents = [decode(f[b"data"]) for _, f in live_system.r.xrange(INTENTS)]
    entry_intents = [i for i in intents if type(i).__name__ == "EntryIntent"]
    assert value(m, "avwap_decisions_total", service="risk", outcome="intent", reason="") == len(entry_intents) > 0
    want: Counter[str] = Counter()
    for p in sorted((live_system.out / "artifacts" / "rejections").glob("*.json")):
        for rej in json.loads(p.read_text())["rejections"]:
            if rej["source"] == "risk":
                want.update(rej["reasons"])
    got = {dict(ls)["reason"]: v for (n, ls), v in m.items()
           if n == "avwap_decisions_total" and dict(ls).get("outcome") == "rejection"}
    assert got == dict(want) and got


def test_executor_counts_orders_by_status(live_system: LiveSystem) -> None:
    m = scrape(live_system, "executor-0")
    want: Counter[tuple[str, str]] = Counter()
    for p in sorted((live_system.out / "ledger" / "PAPER_SIM").glob("*.jsonl")):
        for rec in _jsonl(p):
            if rec["record"] == "order_event":
                want[(rec["event"], rec["kind"])] += 1
    got = {(dict(ls)["status"], dict(ls)["kind"]): v for (n, ls), v in m.items() if n == "avwap_order_events_total"}
    assert got == dict(want) and ("filled", "entry") in got


def test_exits_counts_stop_moves_and_unprotected_positions(live_system: LiveSystem) -> None:
    m = scrape(live_system, "exits-0")
    want: Counter[str] = Counter()
    for p in sorted((live_system.out / "artifacts" / "exit_events").glob("*.jsonl")):
        want.update(e["kind"] for e in _jsonl(p))
    got = {dict(ls)["kind"]: v for (n, ls), v in m.items() if n == "avwap_exit_events_total"}
    assert got == dict(want) and got.get("STOP_REPLACED", 0) > 0
    open_ = [p for p in load_positions(live_system.r, include_closed=False).values() if p.qty > 0]
    unprotected = sum(1 for p in open_ if p.live_stop_price <= 0 or p.live_stop_qty < p.qty)
    assert value(m, "avwap_exits_positions_without_live_stop") == unprotected


def test_a_dead_lettered_entry_shows_in_every_consuming_group(live_system: LiveSystem) -> None:
    r = live_system.r
    before = r.xlen(DLQ)
    bad = r.xadd(CANDIDATES, {"type": "candidate_batch", "v": 1, "data": b"{not json"})
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and r.xlen(DLQ) < before + 2:  # risk and analytics both consume it
            time.sleep(0.05)
        m = scrape(live_system, "risk-0")
        assert value(m, "avwap_messages_dead_lettered_total", group="risk", stream=CANDIDATES) == 1
        assert value(m, "avwap_dlq_size") == r.xlen(DLQ) == before + 2
    finally:
        for entry_id, f in r.xrange(DLQ):
            if f.get(b"dlq_source_id", b"").decode() == (bad.decode() if isinstance(bad, bytes) else bad):
                r.xdel(DLQ, entry_id)
    assert value(scrape(live_system, "risk-0"), "avwap_dlq_size") == before


def test_metered_broker_times_calls_and_counts_errors_by_code() -> None:
    """The real alpaca-py client against the local Alpaca stand-in, through the wrapper the executor uses."""
    from prometheus_client import generate_latest

    from services.executor.alpaca import AlpacaBroker
    from services.executor.broker import NotFound
    from standins.alpaca_api import AlpacaStandIn
    from tests.executor_helpers import KEY, SECRET

    def count(text: str, line: str) -> float:
        return next((float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(line + " ")), 0.0)

    with AlpacaStandIn() as standin:
        b = metrics.MeteredBroker(AlpacaBroker.connect(KEY, SECRET, base_url=standin.url, paper=True, timeout_s=2))
        before = generate_latest(metrics.REGISTRY).decode()
        assert b.list_open() == []
        assert b.list_open() == []
        with pytest.raises(NotFound):
            b.get_by_client_id("av-never-sent")
    after = generate_latest(metrics.REGISTRY).decode()
    calls = 'avwap_broker_request_seconds_count{call="list_open"}'
    assert count(after, calls) - count(before, calls) == 2
    errors = 'avwap_broker_errors_total{call="get_by_client_id",code="NOT_FOUND"}'
    assert count(after, errors) - count(before, errors) == 1
    assert count(after, 'avwap_broker_request_seconds_sum{call="list_open"}') > 0


def test_feed_reports_its_last_bar_on_its_endpoint(fake_redis, tmp_path) -> None:  # noqa: ANN001
    """The live feed (real AlpacaData client against the market-data stand-in) publishes minute bars;
    its endpoint (the same ``metrics.serve`` its ``main`` starts) shows the last bar's time and age."""
    from services.executor.feed import AlpacaData, Feed
    from services.executor.settings import BrokerSettings
    from shared.bars import BarStore, load_bars
    from shared.clock import ReplayClock, calendar, dt_to_ns, ny_datetime
    from shared.redis_conn import free_port
    from shared.schemas import BarBatch
    from shared.settings import load_settings
    from shared.streams import BARS_1M
    from standins.alpaca_data import AlpacaDataStandIn
    from tests.conftest import INTRADAY_FILE

    d = "2019-02-11"
    minute = [b for b in load_bars(INTRADAY_FILE).rows() if b.symbol == "AAPL" and calendar().session_of(b.ts) == d]
    clock = ReplayClock(dt_to_ns(ny_datetime(d, "09:45")) + 15 * 10**9)
    with AlpacaDataStandIn(minute, []) as standin:
        src = AlpacaData("PKFEEDKEY123", "FEEDSECRET123", url=standin.url, feed="iex", timeout_s=2.0)
        feed = Feed(fake_redis, src, BarStore(tmp_path / "bars"), ["AAPL"], settings=load_settings(),
                    bs=BrokerSettings(feed_minute_delay_s=10), clock=clock)
        feed.tick()
    last = max(b.ts for _, f in fake_redis.xrange(BARS_1M) for b in decode(f[b"data"]).bars  # type: ignore[attr-defined]
               if isinstance(decode(f[b"data"]), BarBatch))
    port = free_port()
    server = metrics.serve(port)
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        server.shutdown()
    m = {(s.name, tuple(sorted(s.labels.items()))): s.value for fam in text_string_to_metric_families(text)
         for s in fam.samples}
    assert value(m, "avwap_feed_last_bar_timestamp_seconds", tf="1m") == last / 1e9
    assert abs(value(m, "avwap_feed_last_bar_age_seconds", tf="1m") - (time.time() - last / 1e9)) < 30
