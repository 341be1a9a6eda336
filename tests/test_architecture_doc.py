"""docs/ARCHITECTURE.md's "Follow a candidate" stays true of the code: at most 12 hops, and every
``module::function`` it names exists (methods as ``Class.method``)."""

from __future__ import annotations

import importlib
import re

from tests.conftest import ROOT

DOC = ROOT / "docs" / "ARCHITECTURE.md"
REF = re.compile(r"`([\w/]+)\.py::([\w.]+)`")


def _section() -> str:
    text = DOC.read_text()
    start = text.index("## Follow a candidate")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def test_follow_a_candidate_has_at_most_twelve_hops_from_scan_to_trade() -> None:
    hops = re.findall(r"^(\d+)\. ", _section(), flags=re.M)
    assert 8 <= len(hops) <= 12 and [int(h) for h in hops] == list(range(1, len(hops) + 1))
    sec = _section()
    for word in ("Candidate", "EntryIntent", "OrderEvent", "StopIntent", "Trade"):
        assert word in sec


def test_every_function_the_path_names_exists() -> None:
    refs = REF.findall(_section())
    assert len(refs) >= 20
    missing = []
    for path, name in refs:
        obj: object = importlib.import_module(path.replace("/", "."))
        for part in name.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if not callable(obj):
            missing.append(f"{path}.py::{name}")
    assert not missing, missing
