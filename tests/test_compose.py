"""docker-compose.yml has the properties the runbook promises (no Docker engine here: we parse it)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("scanner", "risk", "executor", "exits", "analytics")


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_redis_is_durable_and_never_evicts() -> None:
    redis = _compose()["services"]["redis"]
    cmd = " ".join(redis["command"])
    assert "--appendonly yes" in cmd
    assert "--maxmemory-policy noeviction" in cmd
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"])


def test_each_service_restarts_and_checks_its_heartbeat() -> None:
    services = _compose()["services"]
    for name in SERVICES:
        svc = services[name]
        assert svc["restart"] == "unless-stopped"
        assert svc["command"] == ["python", "-m", f"services.{name}"]
        assert svc["healthcheck"]["test"] == ["CMD", "avwap", "health", name]
        assert svc["build"] == "."
        vols = " ".join(svc["volumes"])
        assert "artifacts:/app/artifacts" in vols and "state:/app/state" in vols
    assert "rq" in services["rq-worker"]["command"][0]


def test_only_the_executor_and_the_feed_get_broker_variables() -> None:
    compose = _compose()
    for name, svc in compose["services"].items():
        env_files = [e["path"] if isinstance(e, dict) else e for e in svc.get("env_file", [])]
        env = svc.get("environment", {}) or {}
        has_broker = ".env.broker" in env_files or any(k.startswith("APCA_") for k in env)
        assert has_broker == (name in ("executor", "feed")), name
    assert "APCA_" not in (ROOT / ".env.example").read_text().split("do NOT go here")[0]


def test_named_volumes_exist_and_dockerfile_is_shared() -> None:
    compose = _compose()
    assert {"redis-data", "artifacts", "ledger", "state"} <= set(compose["volumes"])
    assert (ROOT / "Dockerfile").exists()


def test_the_notifier_runs_in_compose_with_slack_but_never_broker_keys() -> None:
    compose = _compose()
    svc = compose["services"]["notifier"]
    assert svc["command"] == ["python", "-m", "services.analytics.notifier"]
    assert svc["restart"] == "unless-stopped" and svc["build"] == "."
    assert svc["healthcheck"]["test"] == ["CMD", "avwap", "health", "notifier"]  # its heartbeat (group "notifier")
    assert "redis" in svc["depends_on"]
    env_files = [e["path"] if isinstance(e, dict) else e for e in svc["env_file"]]
    assert ".env.slack" in env_files and ".env.broker" not in env_files
    env = svc.get("environment", {}) or {}
    assert not any(k.startswith("APCA_") for k in env) and env["REDIS_URL"] == "redis://redis:6379/0"
    assert "artifacts:/app/artifacts:ro" in svc["volumes"]  # the daily chart it uploads, read-only
    for name, other in compose["services"].items():  # the Slack token reaches the notifier only
        files = [e["path"] if isinstance(e, dict) else e for e in other.get("env_file", [])]
        has_slack = ".env.slack" in files or any(k.startswith("SLACK_") for k in (other.get("environment") or {}))
        assert has_slack == (name == "notifier"), name
    assert "SLACK_BOT_TOKEN" in (ROOT / ".env.slack.example").read_text()
    assert "SLACK_BOT_TOKEN" not in (ROOT / ".env.example").read_text()
    assert ".env.slack" in (ROOT / ".gitignore").read_text().split()


def test_the_notifier_heartbeat_is_what_avwap_health_checks(redis_url: str, real_redis) -> None:
    """The healthcheck command finds the notifier's heartbeat key once its consumer has run a step."""
    from typer.testing import CliRunner

    from avwap.cli import app
    from services.analytics.notifier import SPEC
    from shared.service import make_consumer, make_context
    from shared.settings import load_settings

    runner = CliRunner()
    env = {"REDIS_URL": redis_url}
    assert runner.invoke(app, ["health", "notifier"], env=env).exit_code != 0
    c = make_consumer(SPEC, make_context("notifier", load_settings(redis_url=redis_url, bus_block_ms=50), real_redis),
                      consumer_name="n1")
    c.ensure_groups()
    c.step(block=False)
    res = runner.invoke(app, ["health", "notifier"], env=env)
    assert res.exit_code == 0 and "1 live consumer" in res.output


# -- the producer -> stream -> consumer graph, from the code's declarations and docker-compose.yml --------
def _entry_module(cmd: list[str]) -> str:
    """The module a compose command runs: ``python -m M`` (M's ``__main__`` -> the module it takes ``main``
    from), ``avwap scan cron`` (the scheduler) or an rq worker on the scan queue (the scan jobs)."""
    import ast
    import importlib.util

    from shared.settings import ScannerSettings

    if cmd[:2] == ["python", "-m"]:
        spec = importlib.util.find_spec(cmd[2])
        assert spec is not None and spec.origin, cmd
        if spec.submodule_search_locations:  # a package: what its __main__ runs
            tree = ast.parse(Path(spec.submodule_search_locations[0], "__main__.py").read_text())
            return next(n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                        and any(a.name == "main" for a in n.names))
        return cmd[2]
    if cmd == ["avwap", "scan", "cron"]:
        return "services.scanner.schedule:CRON_IO"
    if cmd[0] == "rq" and cmd[1].startswith("worker"):
        assert cmd[-1] == ScannerSettings().scan_rq_queue, cmd  # the queue the scan jobs go to
        return "services.scanner.schedule:JOBS_IO"
    raise AssertionError(f"no stream declaration known for the command {cmd}")


def _declared_io(entry: str):
    """The ``StreamIO`` a module declares: ``SPEC``/``build_spec`` (a consumer service) or a named ``StreamIO``."""
    import importlib

    from services.executor.settings import BrokerSettings
    from shared.service import StreamIO

    name, _, attr = entry.partition(":")
    mod = importlib.import_module(name)
    if attr:
        io = getattr(mod, attr)
    elif hasattr(mod, "SPEC"):
        io = mod.SPEC.io
    elif hasattr(mod, "build_spec"):
        io = mod.build_spec(BrokerSettings()).io
    else:
        io = mod.STREAM_IO
    assert isinstance(io, StreamIO), entry
    return io


def _started(svc: dict) -> bool:
    """Started by ``docker compose up -d`` (no profile)."""
    return not svc.get("profiles")


def compose_graph() -> dict[str, tuple[str, object]]:
    """compose service -> (entry module, StreamIO) for every service built from this repository that
    ``docker compose up -d`` starts (Redis and third-party images aside)."""
    return {name: (_entry_module(svc["command"]), _declared_io(_entry_module(svc["command"])))
            for name, svc in _compose()["services"].items() if "build" in svc and _started(svc)}


def test_every_consumed_stream_has_a_producer_in_compose() -> None:
    from shared.streams import ALL_STREAMS

    graph = compose_graph()
    producers: dict[str, set[str]] = {}
    for name, (_, io) in graph.items():
        assert set(io.consumes) | set(io.produces) <= set(ALL_STREAMS), name
        for s in io.produces:
            producers.setdefault(s, set()).add(name)
    orphans = {(name, s) for name, (_, io) in graph.items() for s in io.consumes if not producers.get(s)}
    assert not orphans, f"consumed in compose but produced by no compose service: {sorted(orphans)}"
    # the feed is the one source of the clock and the bars
    assert producers["avwap:clock"] == producers["avwap:bars:1m"] == producers["avwap:bars:1d"] == {"feed"}


def test_the_graph_check_fails_without_the_feed() -> None:
    """The check has teeth: drop the feed and the clock and bars have consumers but no producer."""
    graph = {k: v for k, v in compose_graph().items() if k != "feed"}
    produced = {s for _, io in graph.values() for s in io.produces}
    assert {s for _, io in graph.values() for s in io.consumes} - produced == {"avwap:clock", "avwap:bars:1m",
                                                                              "avwap:bars:1d"}


def test_the_declared_outputs_cover_what_the_code_publishes() -> None:
    """Each entry module's package publishes (xadd / emitted tuples) only on streams its declaration names."""
    import importlib.util
    import re

    from shared import streams

    names = {k: v for k, v in vars(streams).items() if isinstance(v, str) and v.startswith("avwap:") and k.isupper()}
    pub = re.compile(r"(?:xadd\(|_publish\(|return \[?\(|append\(\(|return )([A-Z][A-Z0-9_]+)\b")
    seen = set()
    declared: dict[str, set[str]] = {}  # module -> what its declarations name (cron and jobs share one)
    for entry, io in compose_graph().values():
        declared.setdefault(entry.partition(":")[0], set()).update(io.produces)
    for mod, produces in declared.items():
        origin = Path(importlib.util.find_spec(mod).origin)
        text = origin.read_text()
        for sib in re.findall(r"(?m)^from \.(\w+) import", text):  # the package modules it runs
            text += (origin.parent / f"{sib}.py").read_text()
        found = {names[m] for m in pub.findall(text) if m in names and m != "DLQ"}
        assert found <= produces, (mod, found - produces)
        seen |= found
    assert {"avwap:clock", "avwap:bars:1m", "avwap:candidates", "avwap:intents", "avwap:orders"} <= seen  # it reads


def _env_of(svc: dict) -> tuple[list[str], dict]:
    files = [e["path"] if isinstance(e, dict) else e for e in svc.get("env_file", [])]
    return files, svc.get("environment", {}) or {}


def _file_vars(path: Path) -> set[str]:
    """The variables an env file sets or shows commented out (``# NAME=...``)."""
    import re

    return set(re.findall(r"(?m)^#?\s*([A-Z][A-Z0-9_]*)=", path.read_text()))


def test_every_service_has_a_healthcheck_and_secrets_stay_in_their_containers() -> None:
    """Broker keys (APCA_*) only where the code that talks to the broker runs (the executor package:
    executor, feed); Slack (SLACK_*) only in the notifier; every service has a healthcheck."""
    services = _compose()["services"]
    graph = compose_graph()
    assert set(graph) | {"redis"} == {n for n, svc in services.items() if _started(svc)}
    for name, svc in services.items():
        test = (svc.get("healthcheck") or {}).get("test")
        if _started(svc):
            assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name}: no healthcheck"
        if name not in graph:
            continue
        files, env = _env_of(svc)
        entry = graph[name][0]
        broker_ok = entry.startswith("services.executor.") or entry == "services.executor"
        slack_ok = entry == "services.analytics.notifier"
        vars_in = set(env) | {v for f in files if (ROOT / f"{f}.example").exists() for v in _file_vars(ROOT / f"{f}.example")}
        assert broker_ok == (".env.broker" in files), name
        assert slack_ok == (".env.slack" in files), name
        assert broker_ok or not any(v.startswith("APCA_") for v in vars_in), name
        assert slack_ok or not any(v.startswith("SLACK_") for v in vars_in), name
    assert {"APCA_API_KEY_ID", "APCA_API_SECRET_KEY"} <= _file_vars(ROOT / ".env.broker.example")
    assert "SLACK_BOT_TOKEN" in _file_vars(ROOT / ".env.slack.example")
    assert not any(v.startswith(("APCA_", "SLACK_")) for v in _file_vars(ROOT / ".env.example"))


def test_the_feed_runs_once_with_broker_keys_and_its_heartbeat() -> None:
    svc = _compose()["services"]["feed"]
    assert svc["command"] == ["python", "-m", "services.executor.feed"]
    assert svc["restart"] == "unless-stopped" and svc["build"] == "."
    assert svc["healthcheck"]["test"] == ["CMD", "avwap", "health", "feed"]
    assert "deploy" not in svc and "scale" not in svc  # one replica
    from services.executor.feed import GROUP

    assert GROUP == "feed"  # the heartbeat group `avwap health feed` reads
