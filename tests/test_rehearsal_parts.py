"""The rehearsal's parts on their own: compose as local processes (read from docker-compose.yml, not
restated), compose's restart policy, and libfaketime as the rehearsal uses it (Python and redis-server
on one shared warped clock that a spec file speeds up and moves forward)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from avwap.rehearsal.compose import (
    ComposeService,
    EnvFile,
    LocalHost,
    app_services,
    load_compose,
    local_command,
    read_env_file,
    service_env,
)
from avwap.rehearsal.supervisor import Supervisor
from avwap.rehearsal.warp import Warp, find_libfaketime
from shared.redis_conn import free_port
from tests.conftest import ROOT

needs_faketime = pytest.mark.skipif(find_libfaketime() is None, reason="libfaketime missing (make test installs it)")


def test_the_fault_plan_kills_every_service_but_redis_which_it_restarts_cleanly() -> None:
    """Redis's compose command is ``sh -c "exec redis-server ..."``: it is still Redis, so the plan's SIGKILL
    round leaves it out (a SIGKILLed Redis loses its last second of writes; the plan restarts it instead)."""
    from avwap.rehearsal.faults import fault_plan

    services = load_compose(ROOT / "docker-compose.yml")
    apps = app_services(services)
    assert "redis" in services and "redis" not in apps and {"executor", "exits", "feed"} <= set(apps)
    plan = fault_plan("2019-02-13", apps)
    assert [f.action for f in plan if "redis" in f.action] == ["restart:redis"]
    assert [f.action for f in plan if f.action.startswith("kill:")] == [f"kill:{s}" for s in apps]


def test_every_compose_service_becomes_a_local_process_with_composes_environment(tmp_path: Path) -> None:
    services = load_compose(ROOT / "docker-compose.yml")
    assert {"redis", "scanner", "risk", "executor", "exits", "analytics", "notifier", "feed"} <= set(services)
    (tmp_path / ".env").write_text("# shared\nSCAN_UNIVERSE_FILE=/u.txt\nLOG_FORMAT=console\nREDIS_PASSWORD=pw\n")
    (tmp_path / ".env.broker").write_text("APCA_API_KEY_ID='k'\n")
    (tmp_path / ".env.slack").write_text("SLACK_BOT_TOKEN=xoxb-1\n")
    host = LocalHost(project_dir=tmp_path, volumes_dir=tmp_path / "vol", ports={"redis": 7001}, url_query="socket_timeout=9",
                     variables=read_env_file(tmp_path / ".env"))
    for name, svc in services.items():
        cmd = local_command(svc, host)
        assert Path(cmd[0]).exists(), (name, cmd)
        if name == "redis":
            assert cmd[cmd.index("--port") + 1] == "7001" and "--appendonly" in cmd
            assert cmd[cmd.index("--requirepass") + 1] == "pw"  # compose's `sh -c` expanded, as the container does
            continue
        env = service_env(svc, host)
        assert env["REDIS_URL"] == "redis://:pw@127.0.0.1:7001/0?socket_timeout=9"
        assert env["ARTIFACTS_DIR"] == str(tmp_path / "vol" / "artifacts")
        assert env["LOG_FORMAT"] == "json"  # compose's `environment` wins over the env file
        assert env["SCAN_UNIVERSE_FILE"] == "/u.txt"
        assert ("APCA_API_KEY_ID" in env) == (name in ("executor", "feed")), name
        assert ("SLACK_BOT_TOKEN" in env) == (name == "notifier"), name
        assert svc.restart == "unless-stopped"
    assert services["executor"].health_target() == "executor"
    rq = local_command(services["rq-worker"], host)
    assert rq[0].endswith("/rq") and "avwap.rqworker.Worker" in rq  # the allowlist worker, from this environment
    assert service_env(services["rq-worker"], host)["RQ_REDIS_URL"] == "redis://:pw@127.0.0.1:7001/0?socket_timeout=9"


def test_required_env_file_missing_is_an_error(tmp_path: Path) -> None:
    from avwap.rehearsal.compose import ComposeError

    svc = ComposeService(name="x", command=["python"], env_files=[EnvFile(".env.x", required=True)])
    with pytest.raises(ComposeError, match="required"):
        service_env(svc, LocalHost(project_dir=tmp_path, volumes_dir=tmp_path, ports={}))


def _sleeper(tmp_path: Path, sup: Supervisor, name: str, restart: str) -> None:
    sup.add(name, [sys.executable, "-c", "import time; time.sleep(60)"], {}, restart, tmp_path)
    sup.start(name)


def _until(cond, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_supervisor_applies_composes_restart_policy(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path / "logs")
    _sleeper(tmp_path, sup, "kept", "unless-stopped")
    _sleeper(tmp_path, sup, "once", "no")
    _sleeper(tmp_path, sup, "onfail", "on-failure")
    try:
        for name in ("kept", "once", "onfail"):
            _until(lambda n=name: sup.pid(n) is not None)
        first = sup.pid("kept")
        sup.kill("kept", signal.SIGKILL)
        _until(lambda: sup.pid("kept") not in (None, first))
        sup.kill("once", signal.SIGKILL)
        sup.kill("onfail", signal.SIGKILL)  # -9 is a failure: restarted
        _until(lambda: sup.procs["onfail"].starts == 2 and sup.pid("onfail") is not None)
        time.sleep(0.5)
        assert sup.pid("once") is None and sup.procs["once"].starts == 1
        assert sup.restarts() == {"kept": 1, "once": 0, "onfail": 1}
        assert sup.procs["kept"].exits[0][1] == -signal.SIGKILL
    finally:
        codes = sup.stop_all()
    assert sup.pid("kept") is None and codes["kept"] == -signal.SIGTERM  # a stop is never restarted
    time.sleep(0.3)
    assert sup.pid("kept") is None


_NOW = "import time; print(time.time())"


@needs_faketime
def test_warped_clock_is_shared_by_python_and_redis_and_moves_forward(tmp_path: Path) -> None:
    start = datetime(2019, 2, 11, 13, 30, tzinfo=UTC)
    with Warp(start=start, speed=60.0, workdir=tmp_path / "clock") as warp:
        env = {"PATH": "/usr/bin:/bin", **warp.env()}
        a = float(subprocess.run([sys.executable, "-c", _NOW], env=env, capture_output=True, text=True, check=True).stdout)
        time.sleep(1.0)  # a process started a real second later lives on the same clock (~60 warped s later)
        b = float(subprocess.run([sys.executable, "-c", _NOW], env=env, capture_output=True, text=True, check=True).stdout)
        assert start.timestamp() <= a < start.timestamp() + 120
        assert 45 <= b - a <= 120, (a, b)
        port = free_port()
        rd = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)],
                              env={"PATH": "/usr/bin:/bin", **warp.redis_env()}, stdout=subprocess.DEVNULL)
        try:
            r = redis.Redis(port=port)
            _until(lambda: _ping(r))
            sec, _ = r.time()
            assert abs(sec - time_of(env)) < 60
            r.set("k", "v", ex=120)  # two warped minutes: ~2 real seconds
            time.sleep(2.5)
            assert r.get("k") is None
            warp.retime(datetime.fromtimestamp(r.time()[0], UTC), datetime(2019, 2, 12, 8, 0, tzinfo=UTC), 60.0)
            _until(lambda: r.time()[0] >= datetime(2019, 2, 12, 8, 0, tzinfo=UTC).timestamp(), timeout=5)
            assert time_of(env) >= datetime(2019, 2, 12, 8, 0, tzinfo=UTC).timestamp()
        finally:
            rd.terminate()
            rd.wait(timeout=10)


@needs_faketime
def test_a_relative_clock_directory_still_warps_a_redis_that_changes_directory(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``make rehearse`` writes into the relative ``out/rehearsal``; redis-server chdirs to its --dir, so a
    relative spec-file path made it run on the real clock (a week's rehearsal then never saw its sessions)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    start = datetime(2019, 2, 11, 13, 30, tzinfo=UTC)
    with Warp(start=start, speed=1.0, workdir=Path("out") / "clock") as warp:
        assert Path(warp.redis_env()["FAKETIME_TIMESTAMP_FILE"]).is_absolute()
        port = free_port()
        rd = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--dir", str(tmp_path / "data")], cwd=tmp_path,
                              env={"PATH": "/usr/bin:/bin", **warp.redis_env()}, stdout=subprocess.DEVNULL)
        try:
            r = redis.Redis(port=port)
            _until(lambda: _ping(r))
            assert abs(r.time()[0] - start.timestamp()) < 600
        finally:
            rd.terminate()
            rd.wait(timeout=10)


def time_of(env: dict[str, str]) -> float:
    return float(subprocess.run([sys.executable, "-c", _NOW], env=env, capture_output=True, text=True, check=True).stdout)


def _ping(r: redis.Redis) -> bool:
    try:
        return bool(r.ping())
    except redis.RedisError:
        return False


def _run_root(root: Path, broker_id: str, fill: float, mode: str) -> Path:
    import json

    art, led = root / "artifacts", root / "ledger" / mode
    for sub in ("candidates", "portfolio_decisions", "risk_decisions", "exit_events"):
        (art / sub).mkdir(parents=True, exist_ok=True)
    led.mkdir(parents=True)
    d = "2019-02-13"
    (art / "candidates" / f"{d}.json").write_text(json.dumps({"scan_date": d, "candidates": [{"symbol": "AMT"}],
                                                               "provenance": {"run_id": broker_id}}))
    (art / "portfolio_decisions" / f"{d}.json").write_text(json.dumps({"batch_id": broker_id, "decisions": [1]}))
    (art / "risk_decisions" / f"{d}.jsonl").write_text(json.dumps({"outcome": "intent", "provenance": {"m": mode}}) + "\n")
    (art / "exit_events" / f"{d}.jsonl").write_text(json.dumps({"symbol": "AMT", "kind": "STOP_RESOLVED",
                                                                 "stop_price": 172.28, "event_id": broker_id}) + "\n")
    rows = [{"record": "order_event", "event": "accepted", "client_order_id": "av-1", "broker_order_id": broker_id,
             "symbol": "AMT", "ts": hash(broker_id) % 1000},
            {"record": "order_event", "event": "filled", "client_order_id": "av-1", "broker_order_id": broker_id,
             "symbol": "AMT", "fill_qty": 10, "fill_price": fill, "mode": mode}]
    (led / f"{d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_parity_ignores_broker_ids_timestamps_mode_and_provenance_only(tmp_path: Path) -> None:
    from avwap.rehearsal.parity import canonical, differences

    live = canonical(_run_root(tmp_path / "a", "f3c1-uuid", 173.38, "ALPACA_PAPER"), ["2019-02-13"])
    replay = canonical(_run_root(tmp_path / "b", "sim-0001", 173.38, "PAPER_SIM"), ["2019-02-13"])
    assert live["fills"] and differences(live, replay) == []
    later = canonical(_run_root(tmp_path / "c", "sim-0002", 173.23, "PAPER_SIM"), ["2019-02-13"])
    diffs = differences(live, later)
    assert diffs and all(d.startswith(("fills", "orders")) for d in diffs)


def _descendants(pid: int) -> set[int]:
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        kids = {c for c, pp in parent.items() if pp == p}
        out |= kids
        todo.extend(kids)
    return out


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@needs_faketime
def test_sigterm_to_avwap_rehearse_takes_its_whole_stack_down(tmp_path: Path) -> None:
    """The services run in sessions of their own: a SIGTERMed rehearsal (a stopped `make rehearse`) must stop
    them itself, or they keep ports (the dashboard's 8050) that the next rehearsal then cannot bind."""
    import os

    out = tmp_path / "r"
    kids: set[int] = set()
    p = subprocess.Popen([sys.executable, "-m", "avwap", "rehearse", "--from", "2019-02-13", "--to", "2019-02-13",
                          "--out", str(out)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _until(lambda: (out / "logs" / "exits.log").exists() and (out / "logs" / "exits.log").stat().st_size > 0,
               timeout=240)
        kids = _descendants(p.pid)
        assert len(kids) >= 8  # the stand-ins, redis and the compose services
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=120) != 0
        _until(lambda: not any(_alive(k) for k in kids), timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
        for k in kids:  # what a failed run left behind
            if _alive(k):
                os.kill(k, signal.SIGKILL)
