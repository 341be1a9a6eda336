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
