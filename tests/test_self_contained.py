"""A clone of the repository alone runs everything: no code, test, benchmark or build file names a path
outside the checkout (a user's clone has nothing beside it)."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import DAILY_FILE, INTRADAY_FILE, REFERENCE_DATA, ROOT

# a parent-relative path, or the sibling folder built from ROOT.parent
OUTSIDE = re.compile(r"\.\./shared|ROOT\.parent\b|parents\[\d+\]\s*/\s*['\"]shared")


def tracked(*patterns: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True)
    return [p for p in out.stdout.split() if p]


def test_no_code_names_a_path_outside_the_checkout() -> None:
    files = tracked("*.py", "Makefile", ".ci/*", "*.sh", "*.yml", "*.yaml", "*.toml")
    assert files, "git ls-files found nothing"
    offenders = []
    for rel in files:
        text = (ROOT / rel).read_text(encoding="utf-8", errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line) and rel != "tests/test_self_contained.py":
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "paths outside the checkout:\n" + "\n".join(offenders)


def test_reference_data_ships_with_the_project() -> None:
    assert REFERENCE_DATA.is_relative_to(ROOT)
    for path in (DAILY_FILE, INTRADAY_FILE, REFERENCE_DATA / "daily_2019-01-02_2019-02-15_intraday_symbols.csv.gz"):
        assert path.is_file() and path.stat().st_size > 1000, path
        assert path.name in (REFERENCE_DATA / "README.md").read_text(), f"{path.name} not described in the README"
