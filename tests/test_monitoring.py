"""The monitoring files an operator loads (monitoring/) and the compose wiring of the dashboard
and the metrics match the code: every metric a Grafana panel queries is one the services expose,
Prometheus scrapes every service that serves metrics, the dashboard is published on localhost only."""

from __future__ import annotations

import json
import re
from pathlib import Path

import fakeredis
import yaml
from prometheus_client.core import GaugeMetricFamily

from shared import metrics

ROOT = Path(__file__).resolve().parent.parent
MON = ROOT / "monitoring"


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def exposed_names() -> set[str]:
    """Every sample name the code can expose: the registry's, the scrape-time collector's, and the
    scrape gauges services register (found by their literal ``scrape_gauge("name"`` call)."""
    names = set()
    for fam in metrics.REGISTRY.collect():
        names |= {fam.name, *(s.name for s in fam.samples)}
        if fam.type == "histogram":
            names |= {f"{fam.name}_bucket", f"{fam.name}_count", f"{fam.name}_sum"}
        if fam.type == "counter":
            names.add(f"{fam.name}_total")
    r = fakeredis.FakeRedis()
    r.xadd("s", {"a": 1})
    r.xgroup_create("s", "g", id="0")
    col = metrics.RedisCollector(r, "g", ["s"], "dlq")
    names |= {f.name for f in col.collect() if isinstance(f, GaugeMetricFamily)}
    for py in (ROOT / "services").rglob("*.py"):
        names |= set(re.findall(r'scrape_gauge\(\s*"(\w+)"', py.read_text()))
    return names


def test_every_grafana_query_uses_a_metric_the_services_expose() -> None:
    dash = json.loads((MON / "grafana" / "dashboards" / "avwap.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {n for e in exprs for n in re.findall(r"\bavwap_\w+", e)}
    assert used and used <= exposed_names(), used - exposed_names()
    assert all(t["datasource"]["uid"] == "avwap-prometheus" for p in dash["panels"] for t in p["targets"])
    ds = yaml.safe_load((MON / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert ds["datasources"][0]["uid"] == "avwap-prometheus"
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"


def test_prometheus_scrapes_every_service_that_serves_metrics() -> None:
    compose = _compose()
    prom = yaml.safe_load((MON / "prometheus.yml").read_text())
    targets = {t.split(":")[0]: t.split(":")[1] for c in prom["scrape_configs"] for sc in c["static_configs"]
               for t in sc["targets"]}
    serving = {name for name, svc in compose["services"].items()
               if svc.get("command", [""])[:2] == ["python", "-m"] and name != "dashboard"}
    assert serving <= set(targets), serving - set(targets)
    assert set(targets) - serving <= {"feed"}  # the live feed's container (issue 12's compose service)
    common = compose["x-service"]["environment"]
    assert set(targets.values()) == {common["METRICS_PORT"]}
    for name in ("prometheus", "grafana"):
        svc = compose["services"][name]
        assert svc["profiles"] == ["monitoring"]
        assert all(p.startswith("127.0.0.1:") for p in svc["ports"])
        for vol in svc["volumes"]:
            if vol.startswith("./"):
                assert (ROOT / vol.split(":")[0]).exists(), vol


def test_the_dashboard_is_published_on_localhost_only_and_reads_the_artifacts_read_only() -> None:
    svc = _compose()["services"]["dashboard"]
    assert svc["command"] == ["python", "-m", "services.dashboard"]
    assert svc["ports"] == ["127.0.0.1:${DASHBOARD_PORT:-8050}:8050"]
    assert {"artifacts:/app/artifacts:ro", "ledger:/app/ledger:ro", "state:/app/state:ro"} == set(svc["volumes"])
    files = [e["path"] if isinstance(e, dict) else e for e in svc["env_file"]]
    assert ".env.dashboard" in files and ".env.broker" not in files and ".env.slack" not in files
    assert "/healthz" in " ".join(svc["healthcheck"]["test"])
    assert "DASHBOARD_TOKEN=" in (ROOT / ".env.dashboard.example").read_text()
    assert ".env.dashboard" in (ROOT / ".gitignore").read_text().split()
    for name, other in _compose()["services"].items():  # the token reaches the dashboard only
        files = [e["path"] if isinstance(e, dict) else e for e in other.get("env_file", [])]
        assert (".env.dashboard" in files) == (name == "dashboard"), name
