"""The executor as a process: start gates (LIVE, endpoints), SIGKILL mid-submission against the Alpaca
stand-in (exactly one broker order), broker keys confined to the executor and never leaked."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from avwap.procs import ServiceProcs
from services.executor.modes import start_check
from shared.bus import HEARTBEAT_PREFIX, Bus
from shared.ids import client_order_id
from shared.schemas import Alert
from shared.streams import ALERTS, BARS_1D, BARS_1M, CLOCK, INTENTS
from standins.alpaca_api import AlpacaStandIn
from tests.executor_helpers import at, daily, entry, read, session

ROOT = Path(__file__).resolve().parent.parent
KEY, SECRET = "PKPROCKEY0987654321", "PROCSECRET0987654321zyxwvu"
PAPER, LIVE = "https://paper-api.alpaca.markets", "https://api.alpaca.markets"
D1 = "2018-03-01"


def test_start_check_gates() -> None:
    ok = dict(has_keys=True, live_trading=True, live_token="tok", token_on_file="tok")
    assert start_check("DRY_RUN", base_url=LIVE, **ok) is None
    assert start_check("PAPER_SIM", base_url=LIVE, **ok) is None
    assert start_check("ALPACA_PAPER", base_url=PAPER, **ok) is None
    assert "paper endpoint" in start_check("ALPACA_PAPER", base_url=LIVE, **ok)  # type: ignore[operator]
    assert "must not use the paper endpoint" in start_check("LIVE", base_url=PAPER, **ok)  # type: ignore[operator]
    assert start_check("LIVE", base_url=LIVE, **ok) is None
    assert "LIVE_TRADING" in start_check("LIVE", base_url=LIVE, **{**ok, "live_trading": False})  # type: ignore[operator]
    assert "does not match" in start_check("LIVE", base_url=LIVE, **{**ok, "live_token": "other"})  # type: ignore[operator]
    assert "no confirmation token" in start_check("LIVE", base_url=LIVE, **{**ok, "token_on_file": None})  # type: ignore[operator]
    assert "APCA_API_KEY_ID" in start_check("ALPACA_PAPER", base_url=PAPER, **{**ok, "has_keys": False})  # type: ignore[operator]
    assert start_check("ALPACA_PAPER", base_url="http://127.0.0.1:5000", **ok) is not None
    assert start_check("ALPACA_PAPER", base_url="http://127.0.0.1:5000", allow_local=True, **ok) is None
    # the trade-update stream must be on the trading endpoint's host (no live stream for a paper account)
    assert start_check("ALPACA_PAPER", base_url=PAPER, stream_url="wss://paper-api.alpaca.markets/stream", **ok) is None
    assert "APCA_STREAM_URL" in start_check("ALPACA_PAPER", base_url=PAPER, stream_url="wss://api.alpaca.markets/stream", **ok)  # type: ignore[operator]
    assert "APCA_STREAM_URL" in start_check("LIVE", base_url=LIVE, stream_url="ws://127.0.0.1:1/stream", **ok)  # type: ignore[operator]


def _env(redis_url: str, tmp: Path, **env: str) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("APCA_", "LIVE_"))}
    full.update({"REDIS_URL": redis_url, "LEDGER_DIR": str(tmp / "ledger"), "PYTHONPATH": str(ROOT),
                 "LIVE_CONFIRM_TOKEN_FILE": str(tmp / "token"), **env})
    return full


def _refused(redis_url: str, r: redis.Redis, tmp: Path, env: dict[str, str]) -> tuple[int, str, list[Alert]]:
    """Start the executor, wait for its alert, check it idles (alive, no heartbeat, unhealthy), SIGTERM it."""
    log = tmp / "executor.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "services.executor"], cwd=ROOT, env=_env(redis_url, tmp, **env),
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not [a for a in read(r, ALERTS) if isinstance(a, Alert)]:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        time.sleep(1.0)
        assert proc.poll() is None  # idle: nothing for a supervisor to restart in a loop
        assert not list(r.scan_iter(f"{HEARTBEAT_PREFIX}:executor:*"))  # unhealthy: `avwap health executor` fails
        assert not r.exists(INTENTS)  # no consumer group, nothing consumed
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, log.read_text(), [a for a in read(r, ALERTS) if isinstance(a, Alert)]


@pytest.mark.parametrize("env,why", [
    ({"EXECUTION_MODE": "LIVE", "APCA_API_BASE_URL": LIVE}, "LIVE_TRADING is not 1"),
    ({"EXECUTION_MODE": "LIVE", "APCA_API_BASE_URL": LIVE, "LIVE_TRADING": "1", "LIVE_CONFIRM_TOKEN": "wrong-token"},
     "does not match"),
    ({"EXECUTION_MODE": "LIVE", "APCA_API_BASE_URL": PAPER, "LIVE_TRADING": "1"}, "must not use the paper endpoint"),
    ({"EXECUTION_MODE": "ALPACA_PAPER", "APCA_API_BASE_URL": LIVE}, "must use the paper endpoint"),
])
def test_refuses_to_start_with_one_line_and_an_alert_then_idles(redis_url: str, real_redis: redis.Redis,
                                                                 tmp_path: Path, env: dict[str, str], why: str) -> None:
    (tmp_path / "token").write_text("right-token\n")
    code, out, alerts = _refused(redis_url, real_redis, tmp_path, {"APCA_API_KEY_ID": KEY, "APCA_API_SECRET_KEY": SECRET, **env})
    assert code == 2
    lines = [x for x in out.splitlines() if x.strip()]
    assert len(lines) == 1 and "CRITICAL" in lines[0] and why in lines[0], out
    assert f"executor not started: refusing to start {env['EXECUTION_MODE']}" in lines[0]
    assert len(alerts) == 1 and alerts[0].kind == "refused_to_start" and why in alerts[0].text
    assert alerts[0].severity == "critical" and alerts[0].runbook == "executor-refusing-to-start"
    assert KEY not in out and SECRET not in out and "wrong-token" not in alerts[0].text + out


def test_the_same_refusal_twice_is_one_slack_message(redis_url: str, real_redis: redis.Redis, tmp_path: Path) -> None:
    env = {"APCA_API_KEY_ID": KEY, "APCA_API_SECRET_KEY": SECRET, "EXECUTION_MODE": "LIVE", "APCA_API_BASE_URL": LIVE}
    first = _refused(redis_url, real_redis, tmp_path, env)[2]
    real_redis.delete(ALERTS)
    second = _refused(redis_url, real_redis, tmp_path, env)[2]
    assert len(first) == len(second) == 1 and first[0].alert_id == second[0].alert_id  # the notifier de-duplicates by id


def test_invalid_broker_settings_idle_with_one_line_naming_them(redis_url: str, real_redis: redis.Redis,
                                                                tmp_path: Path) -> None:
    code, out, alerts = _refused(redis_url, real_redis, tmp_path, {"EXECUTION_MODE": "PAPER_SIM", "BROKER_POLL_S": "often"})
    assert code == 2
    lines = [x for x in out.splitlines() if x.strip()]
    assert len(lines) == 1 and "executor not started: invalid settings" in lines[0] and "BROKER_POLL_S='often'" in lines[0]
    assert [(a.kind, a.runbook) for a in alerts] == [("settings_invalid", "invalid-settings")]


def _quiescent(r: redis.Redis) -> bool:
    for s in (INTENTS, CLOCK, BARS_1M, BARS_1D):
        if r.exists(s):
            for g in r.xinfo_groups(s):
                if g["name"] == b"executor" and (g["pending"] or g.get("lag")):
                    return False
    return True


@pytest.mark.redis
@pytest.mark.parametrize("crash", ["after_outbox:1", "before_commit:4"])
def test_sigkill_mid_submission_leaves_exactly_one_broker_order(redis_url: str, real_redis: redis.Redis,
                                                                tmp_path: Path, crash: str) -> None:
    """after_outbox: killed after the outbox write, before the submit; before_commit: after the broker
    answered, before the answer was recorded. The restart reconciles by client_order_id. The
    trade-update stream runs too (both processes connect to it)."""
    with AlpacaStandIn(stream=True, keys=(KEY, SECRET), clock=at("2018-03-02", "10:00")) as standin:
        env = {"EXECUTION_MODE": "ALPACA_PAPER", "APCA_API_BASE_URL": standin.url, "APCA_ALLOW_LOCAL_URL": "1",
               "APCA_STREAM_URL": standin.stream_url,
               "APCA_API_KEY_ID": KEY, "APCA_API_SECRET_KEY": SECRET, "LEDGER_DIR": str(tmp_path / "ledger"),
               "BUS_BLOCK_MS": "50", "BROKER_POLL_S": "0.05", "AVWAP_TEST_CRASH": crash, "LOG_LEVEL": "DEBUG"}
        procs = ServiceProcs(redis_url, env=env, log_dir=tmp_path / "logs")
        it = entry(D1, "AAA", 100, level=50.0, stop=48.0)
        restarts = 0
        try:
            procs.start("executor")
            procs.wait_ready()
            bus = Bus(real_redis)
            for stream, msg in ((CLOCK, session(D1, "PRE_MARKET")), (INTENTS, it),
                                (BARS_1D, daily(D1, ("AAA", 50.5, 52.0, 50.0, 51.0)))):
                bus.publish(stream, msg)
                deadline = time.monotonic() + 30
                while not _quiescent(real_redis):
                    p = procs.procs["executor-0"]
                    if p.poll() is not None:
                        assert p.returncode == -9
                        procs.env.pop("AVWAP_TEST_CRASH")
                        procs.start("executor")
                        restarts += 1
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
            deadline = time.monotonic() + 30
            while not any(e.event == "accepted" for e in read(real_redis, "avwap:orders")):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert standin.stream is not None
            standin.stream.wait_connected(2, timeout_s=30)  # the restarted process listens too
        finally:
            codes = procs.stop_all()
        assert codes == {"executor-0": 0}  # SIGTERM: the last message finished, the stream closed (on_stop)
        assert "Trading stream stopped" in (tmp_path / "logs" / "executor-0.log").read_text()
        assert restarts == 1
        assert standin.stream.auth_failures == 0
        assert len(standin.orders_for(client_order_id(it.intent_id))) == 1
        accepted = [e for e in read(real_redis, "avwap:orders") if e.event == "accepted"]
        assert len(accepted) == 1 and accepted[0].broker_order_id == standin.by_client_id(client_order_id(it.intent_id)).id
        # the keys never reach a stream, a ledger or a log
        blobs = [f[b"data"] for s in real_redis.scan_iter(b"avwap:*") if real_redis.type(s) == b"stream"
                 for _, f in real_redis.xrange(s) if b"data" in f]
        blobs += [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
        pieces = {k[i:i + 8].encode() for k in (KEY, SECRET) for i in range(len(k) - 7)}  # truncated copies too
        for blob in blobs:
            assert not [p for p in pieces if p in blob]


def test_only_the_executor_imports_alpaca_or_reads_broker_keys() -> None:
    pat = re.compile(r"^\s*(from|import)\s+alpaca|APCA_", re.M)
    for top in ("avwap", "shared", "services"):
        for py in (ROOT / top).rglob("*.py"):
            if py.is_relative_to(ROOT / "services" / "executor"):
                continue
            assert not pat.search(py.read_text()), f"{py.relative_to(ROOT)} touches the broker SDK or keys"


def test_cli_check_says_why_the_executor_would_refuse(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APCA_", "LIVE_", "REDIS_URL"))}  # gates only
    env.update({"EXECUTION_MODE": "ALPACA_PAPER", "APCA_API_KEY_ID": KEY, "APCA_API_SECRET_KEY": SECRET,
                "APCA_API_BASE_URL": LIVE, "PYTHONPATH": str(ROOT)})
    res = subprocess.run([sys.executable, "-m", "avwap", "executor", "check"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2 and "must use the paper endpoint" in res.stderr and KEY not in res.stderr
    env["APCA_API_BASE_URL"] = PAPER
    res = subprocess.run([sys.executable, "-m", "avwap", "executor", "check"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and "start gates pass" in res.stdout
