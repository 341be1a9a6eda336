"""docker-compose.yml has the properties the runbook promises (no Docker engine here: we parse it)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("scanner", "regime", "risk", "executor", "exits", "analytics")


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


def test_only_the_executor_gets_broker_variables() -> None:
    compose = _compose()
    for name, svc in compose["services"].items():
        env_files = [e["path"] if isinstance(e, dict) else e for e in svc.get("env_file", [])]
        env = svc.get("environment", {}) or {}
        has_broker = ".env.broker" in env_files or any(k.startswith("APCA_") for k in env)
        assert has_broker == (name == "executor"), name
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
