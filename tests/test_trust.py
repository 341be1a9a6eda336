"""Trust checks: the required docs exist and are current; the layering rules hold."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_required_docs_exist_and_say_something() -> None:
    for rel in ("README.md", "ROADMAP.md", "docs/runbook.md", "docs/configuration.md", "docs/ARCHITECTURE.md"):
        p = ROOT / rel
        assert p.exists(), rel
        assert len(p.read_text().strip()) > 200, rel


def test_readme_leads_with_demo_and_test() -> None:
    head = (ROOT / "README.md").read_text().split("##")[0]
    assert "make demo" in head and "make test" in head


def test_ci_calls_make_test() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_configuration_doc_is_generated_from_settings() -> None:
    from shared.settings.docs import render

    assert (ROOT / "docs/configuration.md").read_text() == render(), "run `make config-docs`"


def test_a_service_never_imports_another_service() -> None:
    pat = re.compile(r"^\s*(?:from|import)\s+services\.(\w+)", re.M)
    for svc_dir in (ROOT / "services").iterdir():
        if not svc_dir.is_dir() or svc_dir.name.startswith("_"):
            continue
        for py in svc_dir.rglob("*.py"):
            for other in pat.findall(py.read_text()):
                assert other == svc_dir.name, f"{py.relative_to(ROOT)} imports services.{other}"


def test_shared_never_imports_services() -> None:
    for py in (ROOT / "shared").rglob("*.py"):
        text = py.read_text()
        assert not re.search(r"^\s*(from|import)\s+services", text, re.M), py
        # nor by name: importlib.import_module("services.x"), "services.x:Class" specs...
        assert not re.search(r"[\"']services[.:/]", text), f"{py.relative_to(ROOT)} names a service in a string"


def test_every_service_settings_section_is_registered_for_the_docs() -> None:
    """A Section defined in services/<name>/settings.py is an `avwap.settings` entry point (docs/configuration.md)."""
    import importlib

    from pydantic_settings import BaseSettings

    from shared.settings.docs import registered_sections

    registered = set(registered_sections())
    found = []
    for py in sorted((ROOT / "services").glob("*/settings.py")):
        mod = importlib.import_module(f"services.{py.parent.name}.settings")
        found += [v for v in vars(mod).values()
                  if isinstance(v, type) and issubclass(v, BaseSettings) and v.__module__ == mod.__name__]
    assert found and set(found) <= registered, sorted(c.__name__ for c in set(found) - registered)


def test_every_scanner_artifact_carries_provenance(tmp_path: Path) -> None:
    import hashlib
    import json

    from services.scanner.artifacts import write_artifacts
    from services.scanner.session import scan_for
    from shared.bars import Panel, load_bars
    from shared.settings import load_settings

    s = load_settings(scan_market_gate="universe_proxy")
    frame = load_bars(ROOT / "data" / "sample" / "daily_2017_2018.csv.gz").frame
    files = write_artifacts(tmp_path, scan_for(Panel.from_frame(frame, before="2018-06-01", lookback=260), "2018-06-01", s))
    for name in ("batch", "rejects"):
        prov = json.loads(files[name].read_bytes())["provenance"]
        assert {"code_version", "settings_hash", "input:bars", "input:universe", "history"} <= set(prov), name
        assert not any("/" in v for v in prov.values()), prov  # no paths: CLI, worker and replay agree
    prov = json.loads(files["rejects"].read_bytes())["provenance"]
    assert prov["output:csv_sha256"] == hashlib.sha256(files["csv"].read_bytes()).hexdigest()
