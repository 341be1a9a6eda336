"""Every ``runbook=`` an alert carries in the code names an existing section of the docs."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from services.analytics.slack_format import runbook_link, runbook_target

ROOT = Path(__file__).resolve().parent.parent
CODE_DIRS = ("services", "shared", "avwap")


def anchors(doc: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file (code fences skipped; repeats get -1, -2, ...)."""
    out: set[str] = set()
    fenced = False
    for line in doc.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        m = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            n, cand = 0, slug
            while cand in out:
                n += 1
                cand = f"{slug}-{n}"
            out.add(cand)
    return out


def runbook_values() -> list[tuple[str, int, str]]:
    """(file, line, value) of every string a ``runbook=`` keyword can take: constants, module-level
    string names, and every branch of a conditional expression."""
    found = []
    for d in CODE_DIRS:
        for py in sorted((ROOT / d).rglob("*.py")):
            tree = ast.parse(py.read_text())
            consts = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                      and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
                      for t in n.targets if isinstance(t, ast.Name)}
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                for kw in node.keywords:
                    if kw.arg != "runbook":
                        continue
                    for sub in ast.walk(kw.value):
                        value = sub.value if isinstance(sub, ast.Constant) else consts.get(sub.id) if isinstance(sub, ast.Name) else None
                        if isinstance(value, str) and value:
                            found.append((str(py.relative_to(ROOT)), node.lineno, value))
    return found


def test_anchor_slugs_follow_github() -> None:
    doc = ROOT / "docs" / "runbook.md"
    assert {"reconciliation-mismatch", "candidates-missing", "service-heartbeat-missing", "dead-letter-queue",
            "slack-notifier", "kill-switch"} <= anchors(doc)


def test_every_runbook_value_is_an_existing_section() -> None:
    values = runbook_values()
    seen = {v for _, _, v in values}
    # the alerts this test must see (a refactor that hides them from it must update it)
    assert {"reconciliation-mismatch", "candidates-missing", "service-heartbeat-missing", "dead-letter-queue"} <= seen
    for file, line, value in values:
        target = runbook_target(value)
        assert not target.startswith("http"), f"{file}:{line}: runbook {value!r} must be a docs section, not a URL"
        doc, _, anchor = target.partition("#")
        assert (ROOT / doc).is_file(), f"{file}:{line}: runbook {value!r} -> {doc} does not exist"
        assert anchor in anchors(ROOT / doc), f"{file}:{line}: runbook {value!r} -> no section #{anchor} in {doc}"
        assert f"#{anchor}" in runbook_link(value)
