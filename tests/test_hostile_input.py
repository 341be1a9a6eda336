"""Hostile input at every boundary (issue 20): one named test per case an attacker with write access to
Redis, to a bar file or to the settings tried, plus bounded fuzzing of the decoders and the bar loader.

Each case is refused with a reason (dead-lettered, a rejected row, a one-line refusal), never run, written
outside its root, or silently dropped; every dead-lettered case stays readable with ``avwap dlq show``.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from avwap.cli import app
from shared.artifacts import UnsafePath, under
from shared.bars import (
    R_BAD_SYMBOL,
    R_NON_FINITE,
    R_OUT_OF_RANGE,
    BarFileError,
    BarStore,
    load_bars,
    validate_rows,
)
from shared.consumer import Consumer
from shared.intake import session_problem
from shared.schemas import (
    BarRow,
    BrokerSnapshot,
    Candidate,
    CandidateBatch,
    EntryIntent,
    InvalidPayload,
    SchemaError,
    SessionEvent,
    decode,
    encode,
    registered_types,
)
from shared.streams import CANDIDATES, CLOCK, DLQ, INTENTS
from tests.conftest import ROOT, SAMPLE_DIR

SAMPLE = SAMPLE_DIR / "daily_2017_2018.csv.gz"
D = "2018-06-01"
TRAVERSAL = "../../../../elsewhere/sess"
HOSTILE_SYMBOLS = ("A B", "A;DROP", "../../x", "ÄPFEL✓", "Z\nBAD", "A,B", "aapl", "")


def _json(msg: object, **changes: object) -> bytes:
    """The JSON of ``msg`` with fields replaced as a hostile writer would (bypassing the constructor)."""
    data = json.loads(encode(msg))  # type: ignore[arg-type]
    data.update(changes)
    return json.dumps(data).encode()


def _candidate(**kw: object) -> Candidate:
    base = dict(candidate_id="cd-1", scan_date=D, symbol="AAPL", price=101.0, anchor="YTD", anchor_date="2018-01-02",
                avwap=100.0, entry_level=100.0, entry_dist_pct=1.0, stop_loss=97.0, target_r1=104.0,
                target_r2=106.0, trend_score=10.0, avwap_slope=0.5, score=60.0)
    return Candidate(**{**base, **kw})  # type: ignore[arg-type]


def _batch(candidates: list[Candidate] | None = None, **kw: object) -> CandidateBatch:
    return CandidateBatch(batch_id="cb-1", scan_date=str(kw.pop("scan_date", D)), market_gate_ok=True,
                          candidates=candidates if candidates is not None else [_candidate()], **kw)  # type: ignore[arg-type]


def _intent(**kw: object) -> EntryIntent:
    base = dict(intent_id="in-1", candidate_id="cd-1", symbol="AAPL", trade_date=D, qty=10, entry_level=100.0,
                stop_price=97.0, risk_per_share=3.0, notional=1000.0)
    return EntryIntent(**{**base, **kw})  # type: ignore[arg-type]


def _consume(r, stream: str, raw_entries: list[bytes], **consumer_kw: object) -> list[dict]:  # noqa: ANN001
    """Put raw ``data`` entries on ``stream``, run one consumer until idle; the handled messages are returned
    and every refused one is in the DLQ."""
    handled: list = []
    for raw in raw_entries:
        r.xadd(stream, {"type": "x", "v": 1, "data": raw})
    c = Consumer(r, "hostile", [stream], lambda m, d: handled.append(m) or [], block_ms=10, **consumer_kw)  # type: ignore[arg-type]
    c.run(install_signals=False, until_idle=True)
    return handled


def _dlq(r) -> list[tuple[str, dict[str, bytes]]]:  # noqa: ANN001
    return [(e.decode(), {k.decode(): v for k, v in f.items()}) for e, f in r.xrange(DLQ)]


def _dlq_show(redis_url: str, entry_id: str) -> dict:
    from shared.settings import get_settings

    get_settings.cache_clear()
    res = CliRunner().invoke(app, ["dlq", "show", entry_id], env={"REDIS_URL": redis_url})
    get_settings.cache_clear()
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def _avwap(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real ``avwap`` process (its exit code and stderr as a user sees them)."""
    full = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | {"PYTHONPATH": str(ROOT)} | (env or {})
    return subprocess.run([sys.executable, "-m", "avwap", *args], cwd=ROOT, env=full, capture_output=True, text=True,
                          timeout=120)


# -- 1. dates in messages: no path traversal, a real session, within the horizon -------------------------------
def test_a_traversal_date_in_a_session_event_or_intent_does_not_decode() -> None:
    for msg in (SessionEvent(trade_date=D, phase="PRE_MARKET", ts=1), _intent()):
        with pytest.raises(InvalidPayload, match="trade_date"):
            decode(_json(msg, trade_date=TRAVERSAL))


def test_a_broker_snapshot_dated_dot_dot_does_not_decode() -> None:
    snap = BrokerSnapshot(snapshot_id="s", mode="DRY_RUN", trade_date=D, ts=1, equity=1.0, cash=1.0, buying_power=1.0)
    with pytest.raises(InvalidPayload):
        decode(_json(snap, trade_date="../.."))


def test_the_path_helper_refuses_anything_that_leaves_its_root(tmp_path: Path) -> None:
    assert under(tmp_path, "candidates", f"{D}.json") == tmp_path / "candidates" / f"{D}.json"
    for bad in (f"{TRAVERSAL}.json", "/etc/passwd", "a/../../b", "..", "", "x\x00y"):
        with pytest.raises(UnsafePath):
            under(tmp_path, "candidates", bad)
    (tmp_path / "link").symlink_to("/")  # a symlink out of the root is refused too
    with pytest.raises(UnsafePath):
        under(tmp_path, "link", "etc")
    root = tmp_path / "art"
    (tmp_path / "art-other").mkdir()
    root.mkdir()
    (root / "near").symlink_to(tmp_path / "art-other")  # a sibling whose name begins with the root's
    with pytest.raises(UnsafePath):
        under(root, "near", "x.json")
    (root / "sub").mkdir()
    (root / "inside").symlink_to(root / "sub")  # a symlink that stays inside is fine
    assert under(root, "inside", "x.json") == root / "inside" / "x.json"


def test_services_build_artifact_paths_with_the_helper(tmp_path: Path) -> None:
    from services.executor.ledger import ledger_path
    from services.risk.worker import artifact_path as risk_path
    from services.scanner.artifacts import paths as scan_paths
    from shared.settings import load_settings

    s = load_settings(artifacts_dir=str(tmp_path / "art"))
    for build in (lambda: scan_paths(tmp_path, TRAVERSAL), lambda: risk_path(s, TRAVERSAL),
                  lambda: ledger_path(tmp_path, "DRY_RUN", TRAVERSAL), lambda: ledger_path(tmp_path, "../x", D)):
        with pytest.raises(UnsafePath):
            build()


def test_traversal_and_impossible_dates_are_dead_lettered_and_readable(redis_url: str, real_redis) -> None:
    ev = SessionEvent(trade_date=D, phase="PRE_MARKET", ts=1)
    entries = [_json(ev, trade_date=TRAVERSAL), _json(ev, trade_date="2026-13-45"),
               _json(ev, trade_date="2099-06-01"), _json(ev, trade_date="2018-06-02"), encode(ev)]
    handled = _consume(real_redis, CLOCK, entries)
    assert handled == [ev]  # only the real session got through
    dlq = _dlq(real_redis)
    reasons = [f["dlq_reason"].decode() for _, f in dlq]
    assert [r.split(":")[0] for r in reasons] == ["INVALID_PAYLOAD", "INVALID_PAYLOAD", "NOT_A_SESSION", "NOT_A_SESSION"]
    assert "trade_date" in reasons[0] and "2018-06-02" in reasons[3]
    for entry_id, _ in dlq:
        shown = _dlq_show(redis_url, entry_id)
        assert shown["dlq_reason"] and shown["dlq_source_stream"] == CLOCK and "trade_date" in shown["data"]


def test_a_batch_far_from_now_is_out_of_the_live_horizon() -> None:
    from shared.clock import dt_to_ns, ny_datetime

    now = dt_to_ns(ny_datetime(D, "08:00"))
    far = _batch(scan_date="2018-12-31")
    assert session_problem(far, now, horizon_days=7).startswith("DATE_OUT_OF_HORIZON")  # type: ignore[union-attr]
    assert session_problem(_batch(), now, horizon_days=7) is None
    assert session_problem(far, now, horizon_days=0) is None  # replays: off


# -- 2. the rq worker runs only the project's jobs ------------------------------------------------------------
def _compose_worker_class() -> str:
    """The worker class compose's rq-worker runs (``-w``), rq's plain worker when it names none."""
    import yaml

    cmd = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["rq-worker"]["command"]
    return cmd[cmd.index("-w") + 1] if "-w" in cmd else "rq.Worker"


def test_the_rq_worker_refuses_any_function_not_on_the_allowlist(redis_url: str, real_redis, tmp_path: Path) -> None:
    from rq import Queue
    from rq.job import Job
    from rq.serializers import JSONSerializer

    marker = tmp_path / "pwned"
    pickled = Queue("hostile-q", connection=real_redis).enqueue("os.system", f"touch {marker}")  # rq's default pickle
    as_json = Queue("hostile-q", connection=real_redis, serializer=JSONSerializer).enqueue("os.system", f"touch {marker}")
    callback = Queue("hostile-q", connection=real_redis, serializer=JSONSerializer).enqueue(
        "services.scanner.schedule.premarket_job", on_failure="os.system")
    rq = Path(sys.executable).parent / "rq"
    out = subprocess.run([str(rq), "worker", "-w", _compose_worker_class(), "--url", redis_url, "--burst", "hostile-q"],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert not marker.exists()  # nothing ran
    for job in (pickled, as_json, callback):
        assert Job.fetch(job.id, connection=real_redis, serializer=JSONSerializer if job is not pickled else None
                         ).get_status() == "failed"
    assert "not on the avwap worker's allowlist" in (out.stdout + out.stderr)


def test_the_scanner_enqueues_its_shards_as_json(fake_redis) -> None:
    from services.scanner.shards import sharded_results
    from shared.bars import Panel
    from shared.clock import calendar
    from shared.settings import load_settings

    s = load_settings(scan_rq_queue="json-check")
    pan = Panel.from_frame(load_bars(SAMPLE).frame, before=D, lookback=120)
    sharded_results(fake_redis, pan, pan.symbols[:4], {}, D, calendar().previous_session(D), s.scanner, shards=2,
                    timeout_s=0.01)  # nobody runs them: computed in process, but they were enqueued first
    datas = [fake_redis.hget(k, "data") for k in fake_redis.scan_iter("rq:job:*") if fake_redis.type(k) == b"hash"]
    datas = [d for d in datas if d]
    assert len(datas) == 2
    for d in datas:
        func, _instance, args, _kwargs = json.loads(zlib_or_raw(d))
        assert func == "services.scanner.shards.run_shard" and isinstance(args[0], str)


def zlib_or_raw(data: bytes) -> bytes:
    """rq stores job data zlib-compressed when that is smaller."""
    import zlib

    try:
        return zlib.decompress(data)
    except zlib.error:
        return data


def test_compose_redis_requires_a_password_and_publishes_no_port() -> None:
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    redis = compose["services"]["redis"]
    assert "ports" not in redis and "--requirepass" in " ".join(redis["command"])
    assert "REDIS_PASSWORD" in str(redis["environment"]) and "REDISCLI_AUTH" in " ".join(redis["healthcheck"]["test"])
    for name, svc in compose["services"].items():
        assert "ports" not in svc or "6379" not in str(svc["ports"]), name
        url = (svc.get("environment") or {}).get("REDIS_URL")
        if name != "redis" and svc.get("build"):  # the project's own services (not Prometheus/Grafana)
            assert url and url.startswith("redis://:${REDIS_PASSWORD:?"), name
    assert "-w" in compose["services"]["rq-worker"]["command"]
    assert "avwap.rqworker.Worker" in compose["services"]["rq-worker"]["command"]
    assert "REDIS_PASSWORD=" in (ROOT / ".env.example").read_text()


# -- 3. settings that cannot disable a gate --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["MAX_RISK_PER_TRADE", "MAX_CONCURRENT_POSITIONS", "MAX_NEW_ENTRIES_PER_DAY",
                                  "MAX_RISK_PER_SHARE", "SNAPSHOT_MAX_AGE_S", "ACCOUNT_EQUITY"])
def test_risk_caps_refuse_negative_nan_and_inf(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    from shared.settings import settings_problems

    for bad in ("-1", "nan", "inf", "-inf", "1e400"):
        monkeypatch.setenv(name, bad)
        problems = settings_problems()
        assert any(p.startswith(f"{name}=") for p in problems), (name, bad, problems)


def test_sim_slippage_refuses_nonsense(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.executor.settings import BrokerSettings
    from shared.settings import settings_problems

    for bad in ("-1", "nan", "inf"):
        monkeypatch.setenv("SIM_SLIPPAGE_BPS", bad)
        assert any(p.startswith("SIM_SLIPPAGE_BPS=") for p in settings_problems((BrokerSettings,)))


def test_max_risk_per_share_nan_cannot_turn_the_gate_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from shared.settings import load_settings

    with pytest.raises(ValidationError):
        load_settings(max_risk_per_share=float("nan"))


def test_booleans_are_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.settings import CoreSettings, settings_problems

    for bad in ("yes", "on", "y", "t", "2", "enabled"):
        monkeypatch.setenv("LIVE_TRADING", bad)
        assert any(p.startswith("LIVE_TRADING=") for p in settings_problems()), bad
    for good, want in (("1", True), ("true", True), ("TRUE", True), ("0", False), ("false", False)):
        monkeypatch.setenv("LIVE_TRADING", good)
        assert CoreSettings().live_trading is want


def test_a_live_endpoint_must_be_https() -> None:
    from services.executor.modes import start_check

    ok = dict(has_keys=True, live_trading=True, live_token="t", token_on_file="t")
    assert "https://" in start_check("LIVE", base_url="http://api.alpaca.markets", **ok)  # type: ignore[operator]
    assert "https://" in start_check("ALPACA_PAPER", base_url="http://paper-api.alpaca.markets", **ok)  # type: ignore[operator]
    assert start_check("LIVE", base_url="https://api.alpaca.markets", **ok) is None
    assert "wss://" in start_check("LIVE", base_url="https://api.alpaca.markets",  # type: ignore[operator]
                                   stream_url="ws://api.alpaca.markets/stream", **ok)


def test_risk_and_the_executor_agree_on_every_token(tmp_path: Path) -> None:
    from services.executor.modes import live_gate_check
    from services.risk.worker import live_token_status
    from shared.settings import load_settings

    f = tmp_path / "token"
    for on_file, token in (("s3cret\n", "s3cret"), ("s3cret", " s3cret "), ("s3cret", "s3cret\t"), ("s3cret", "other"),
                           ("", "s3cret"), ("s3cret", "")):
        f.write_text(on_file)
        s = load_settings(execution_mode="LIVE", live_confirm_token=token or None, live_confirm_token_file=str(f))
        risk_ok = live_token_status(s) == "ok"
        exec_ok = live_gate_check(live_trading=True, live_token=token or None,
                                  token_on_file=(on_file.strip() or None)) is None
        assert risk_ok == exec_ok, (on_file, token)


def test_a_garbage_kill_switch_is_unreadable_for_risk_and_the_executor(fake_redis) -> None:
    from services.executor import core as ex_core
    from shared.controls import read_kill_switch
    from shared.streams import KILL_SWITCH_KEY

    fake_redis.set(KILL_SWITCH_KEY, b"{garbage")
    state = read_kill_switch(fake_redis)
    assert state == "unreadable"
    gates = ex_core.Gates(kill_switch=True, kill_switch_unreadable=state == "unreadable")
    assert ex_core.entry_blocks(ex_core.ExecState(mode="DRY_RUN", reconciled=True), gates) == ["KILL_SWITCH_UNREADABLE"]


# -- 4. bar files and the store -------------------------------------------------------------------------------
def _csv(tmp_path: Path, rows: list[str], name: str = "bars.csv") -> Path:
    p = tmp_path / name
    p.write_text("date,symbol,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    return p


def test_a_symbol_with_a_newline_cannot_inject_a_store_row(tmp_path: Path) -> None:
    p = tmp_path / "inject.csv"
    p.write_text('date,symbol,open,high,low,close,volume\n'
                 '2018-06-01,"Z\nBAD,1527883200000000000,-5,-1,-10,-3,-100\nY",10,11,9,10,1000\n'
                 '2018-06-01,GOOD,10,11,9,10,1000\n')
    res = load_bars(p)
    assert res.symbols() == ["GOOD"] and [r.reason for r in res.rejects] == [R_BAD_SYMBOL]
    store = BarStore(tmp_path / "store")
    store.import_result(res)
    assert store.read_day("1d", D)["symbol"].tolist() == ["GOOD"]
    row = res.rows()[0]
    with pytest.raises(ValueError, match="BAD_SYMBOL"):  # the store refuses it even from code
        store.append("1d", [msgspec.structs.replace(row, symbol="Z\nBAD,1,2,3")])
    assert store.read_day("1d", D)["symbol"].tolist() == ["GOOD"]


def test_a_symbol_with_a_comma_is_rejected_not_silently_dropped(tmp_path: Path) -> None:
    res = load_bars(_csv(tmp_path, ['2018-06-01,"A,B",10,11,9,10,1000', "2018-06-01,BRK.B,10,11,9,10,1000"]))
    assert res.symbols() == ["BRK.B"] and [(r.symbol, r.reason) for r in res.rejects] == [("A,B", R_BAD_SYMBOL)]


def test_non_finite_and_absurd_prices_are_rejected_with_reasons(tmp_path: Path) -> None:
    res = load_bars(_csv(tmp_path, ["2018-06-01,A,1e400,1e400,9,10,1000", "2018-06-01,B,inf,inf,9,10,1000",
                                    "2018-06-01,C,10,11,9,10,inf", "2018-06-01,E,2e7,2e7,2e7,2e7,1000",
                                    "2018-06-01,F,10,11,9,10,1000"]))
    assert res.symbols() == ["F"]
    assert {r.symbol: r.reason for r in res.rejects} == {"A": R_NON_FINITE, "B": R_NON_FINITE, "C": R_NON_FINITE,
                                                         "E": R_OUT_OF_RANGE}
    row = res.rows()[0]
    good, rejects = validate_rows([row, msgspec.structs.replace(row, symbol="G", high=math.inf)])
    assert good == [row] and [r.reason for r in rejects] == [R_NON_FINITE]


def test_a_hand_edited_store_line_is_skipped_on_read(tmp_path: Path) -> None:
    store = BarStore(tmp_path)
    store.import_result(load_bars(_csv(tmp_path, ["2018-06-01,GOOD,10,11,9,10,1000"])))
    with open(store.path("1d", D), "a") as fh:
        fh.write("../../x,1527883200000000000,1,2,1,1,1\nINF,1527883200000000000,inf,inf,1,1,1\n"
                 "NEG,1527883200000000000,-5,-1,-10,-3,-100\n")
    assert BarStore(tmp_path).read_day("1d", D)["symbol"].tolist() == ["GOOD"]


@pytest.mark.parametrize("command", ["check", "import", "scan"])
def test_a_truncated_gzip_is_one_line_naming_the_file_exit_1(tmp_path: Path, command: str) -> None:
    bad = tmp_path / "cut.csv.gz"
    bad.write_bytes(SAMPLE.read_bytes()[:20_000])
    args = {"check": ["data", "check", str(bad)], "import": ["data", "import", str(bad), "--bars-dir", str(tmp_path / "s")],
            "scan": ["scan", "--bars", str(bad), "--date", D, "--out", str(tmp_path / "o")]}[command]
    out = _avwap(*args)
    assert out.returncode == 1, (out.returncode, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "truncated or corrupt compressed file" in lines[0]
    with pytest.raises(BarFileError):
        load_bars(bad)


def test_a_non_csv_bar_file_is_named_in_plain_words(tmp_path: Path) -> None:
    junk = tmp_path / "notes.csv"
    junk.write_text('hello world\n"a,b\n1,2,3,4\n')
    out = _avwap("data", "check", str(junk))
    assert out.returncode == 1 and "not a bar CSV file" in out.stderr and "C error" not in out.stderr
    binary = tmp_path / "blob.csv"
    binary.write_bytes(gzip.compress(b"x" * 100)[:40] + b"\xff\xfe")
    assert "avwap: error:" in _avwap("data", "check", str(binary)).stderr


# -- 5. symbols, invariants and sizes in messages ------------------------------------------------------------
def test_hostile_symbols_do_not_decode_as_candidates_or_intents() -> None:
    for sym in HOSTILE_SYMBOLS:
        cand = json.loads(encode(_batch()))
        cand["candidates"][0]["symbol"] = sym
        with pytest.raises(InvalidPayload, match="symbol"):
            decode(json.dumps(cand).encode())
        with pytest.raises(InvalidPayload, match="symbol"):
            decode(_json(_intent(), symbol=sym))


def test_an_intent_with_its_stop_above_entry_or_a_wrong_risk_does_not_decode() -> None:
    with pytest.raises(InvalidPayload, match="stop"):
        decode(_json(_intent(), stop_price=185.58, entry_level=184.84, risk_per_share=0.74))
    with pytest.raises(InvalidPayload, match="risk_per_share"):
        decode(_json(_intent(), risk_per_share=0.5))
    for field, bad in (("qty", 0), ("qty", -5), ("qty", 10**12), ("entry_level", -1.0), ("entry_level", 1e400),
                       ("notional", 1e400)):
        with pytest.raises(InvalidPayload):
            decode(_json(_intent(), **{field: bad}))
    assert decode(encode(_intent())) == _intent()


def test_hostile_intents_are_dead_lettered_before_the_executor_sees_them(redis_url: str, real_redis) -> None:
    good = _intent()
    bad = [_json(good, symbol="A;DROP"), _json(good, stop_price=105.0, risk_per_share=-5.0),
           _json(good, trade_date=TRAVERSAL)]
    assert _consume(real_redis, INTENTS, [*bad, encode(good)]) == [good]
    dlq = _dlq(real_redis)
    assert len(dlq) == 3 and all(f["dlq_reason"].startswith(b"INVALID_PAYLOAD") for _, f in dlq)
    for entry_id, _ in dlq:
        assert _dlq_show(redis_url, entry_id)["dlq_reason"].startswith("INVALID_PAYLOAD")


def test_an_oversized_batch_is_dead_lettered_small(redis_url: str, real_redis) -> None:
    huge = _batch([_candidate(candidate_id=f"cd-{i}", sector="x" * 1000) for i in range(10_000)])
    raw = encode(huge)
    assert len(raw) > 10_000_000
    assert _consume(real_redis, CANDIDATES, [raw], max_payload_bytes=4 * 1024 * 1024) == []
    ((entry_id, f),) = _dlq(real_redis)
    assert f["dlq_reason"].startswith(b"PAYLOAD_TOO_LARGE") and len(f["data"]) == 4096
    assert int(f["dlq_data_bytes"]) == len(raw)
    shown = _dlq_show(redis_url, entry_id)
    assert shown["dlq_reason"].startswith("PAYLOAD_TOO_LARGE") and len(shown["data"]) < 5000


def test_the_service_consumer_takes_its_limits_from_the_settings(fake_redis) -> None:
    from shared.service import ServiceSpec, make_consumer, make_context
    from shared.settings import load_settings

    s = load_settings(bus_max_payload_bytes=100_000, message_date_horizon_days=7)
    c = make_consumer(ServiceSpec("t", [CLOCK], lambda ctx: lambda m, d: []), make_context("t", s, fake_redis))
    assert c.max_payload_bytes == 100_000
    assert c.check(SessionEvent(trade_date="2018-06-01", phase="OPEN", ts=1)).startswith("DATE_OUT_OF_HORIZON")  # type: ignore[misc, union-attr]


# -- 6. errors in the user's words ---------------------------------------------------------------------------
def test_cli_dates_say_what_is_wrong(tmp_path: Path) -> None:
    out = _avwap("scan", "--bars", str(SAMPLE), "--date", "2018-13-01")
    assert out.returncode == 1 and "is not a date" in out.stderr and "NYSE" not in out.stderr
    out = _avwap("scan", "why", "AAPL", "--date", "18-06-01", "--artifacts", str(tmp_path))
    assert out.returncode == 1 and "must be a date YYYY-MM-DD" in out.stderr and "no scan artifacts" not in out.stderr
    out = _avwap("scan", "--bars", str(SAMPLE), "--date", "2016-06-01", "--out", str(tmp_path / "o"))
    assert out.returncode == 1 and "no daily bars before 2016-06-01" in out.stderr
    assert not (tmp_path / "o").exists()  # no empty files


def test_a_bad_redis_url_is_one_line() -> None:
    out = _avwap("dlq", "list", env={"REDIS_URL": "notaurl"})
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "REDIS_URL='notaurl'" in out.stderr and "must be a Redis URL" in out.stderr and "Traceback" not in out.stderr


def test_a_single_service_requires_redis_url() -> None:
    out = _avwap("run", "risk")
    assert out.returncode == 1 and "REDIS_URL is not set" in out.stderr and "embedded" in out.stderr


def test_a_service_process_without_redis_url_refuses_and_idles(tmp_path: Path) -> None:
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"} | {"PYTHONPATH": str(ROOT),
                                                                      "ARTIFACTS_DIR": str(tmp_path / "a")}
    err = tmp_path / "err.log"
    with open(err, "wb") as fh:
        p = subprocess.Popen([sys.executable, "-m", "services.risk"], cwd=ROOT, env=env, stdout=fh, stderr=fh)
    try:
        deadline = time.monotonic() + 60
        while "REDIS_URL is not set" not in err.read_text() and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.1)
        assert "REDIS_URL is not set" in err.read_text() and "embedded" not in err.read_text().split("not set")[0]
        assert p.poll() is None  # idling (no crash loop)
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 2
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_the_scanner_never_emits_a_candidate_whose_stop_is_not_below_entry(tmp_path: Path) -> None:
    from services.scanner.artifacts import explain
    from services.scanner.session import scan_for
    from shared.bars import Panel
    from shared.settings import load_settings

    s = load_settings(scan_market_gate="off")
    res = load_bars(SAMPLE)
    out = scan_for(Panel.from_frame(res.frame, before=D, lookback=260), D, s)
    assert out.batch.candidates and all(c.stop_loss < c.entry_level for c in out.batch.candidates)
    assert out.rejects["rejects"]["AAPL"]["code"] == "STOP_NOT_BELOW_ENTRY"  # entry 184.84, stop 185.58
    from services.scanner.artifacts import write_artifacts

    write_artifacts(tmp_path, out)
    found, text = explain(tmp_path, "AAPL", D)
    assert found and "STOP_NOT_BELOW_ENTRY" in text and "cannot be traded" in text and "IS a candidate" not in text


# -- 7. fuzzing (bounded) --------------------------------------------------------------------------------------
_TYPES = sorted(registered_types())
_json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                            lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                            max_leaves=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_TYPES), st.dictionaries(st.text(max_size=20), _json_values, max_size=8), st.integers(-2, 4))
def test_fuzz_decode_raises_only_schema_errors(type_name: str, fields: dict, v: int) -> None:
    with contextlib.suppress(SchemaError):  # anything else (TypeError, KeyError...) fails the test
        decode(json.dumps({**fields, "type": type_name, "v": v}).encode())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_decode_of_raw_bytes(raw: bytes) -> None:
    with contextlib.suppress(SchemaError):
        decode(raw)


_cell = st.one_of(st.text(max_size=12), st.sampled_from(["1e400", "inf", "-inf", "nan", "-5", "0", "10", "2018-06-01",
                                                         "AAPL", "A B", "Z\nBAD", '"', ","]))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(st.lists(st.lists(_cell, min_size=7, max_size=7), max_size=6))
def test_fuzz_the_bar_loader_and_the_store(tmp_path_factory: pytest.TempPathFactory, rows: list[list[str]]) -> None:
    import csv
    import io

    d = tmp_path_factory.mktemp("fuzz")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["date", "symbol", "open", "high", "low", "close", "volume"])
    w.writerows(rows)
    p = d / "f.csv"
    p.write_text(buf.getvalue())
    try:
        res = load_bars(p)
    except ValueError:  # BarFileError or missing columns: one line, never anything else
        return
    for r in res.rows():  # every accepted row obeys the rules the messages enforce (decode checks them)
        msgspec.json.decode(msgspec.json.encode(r), type=BarRow)
    store = BarStore(d / "store")
    store.import_result(res)
    back = sum(len(store.read_day("1d", day)) for day in store.dates("1d"))
    assert back == len(res.frame)
