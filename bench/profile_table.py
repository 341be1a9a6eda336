"""The "where the time goes" table of docs/performance.md, from the stacks ``bench_replay.py --profile`` wrote.

Each sample goes to the first category, in the order below, whose pattern matches any of its frames
(so a bar-store read inside the core counts as bar store, a Redis reply awaited by a commit as commit). Prints a Markdown table, one row
per service, each cell the share of that service's samples (%).

    python bench/profile_table.py /tmp/prof
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

# (category, pattern over "function (file:line)"), checked in this order for each frame
CATEGORIES: list[tuple[str, re.Pattern[str]]] = [
    ("wait/read", re.compile(r"xreadgroup|Consumer(Reads)?\._read\b|Consumer(Reads)?\._claim\b")),
    ("commit", re.compile(r"UnitOfWork\._run|UnitOfWork\._exec_watched|Consumer\._commit_blocks|Consumer\._flush")),
    ("state load/store", re.compile(r"UnitOfWork\.__enter__|UnitOfWork\.watch|decode_state|encode_state|"
                                    r"\b_read \(services/risk|typed_get|Executor\.load|decode_index|decode_position|"
                                    r"Store\.ingest|SnapshotCache")),
    ("bar store", re.compile(r"BarStore\.")),
    ("artifacts", re.compile(r"write_artifacts|write_atomic|canonical_json|canonical_line|write_json_artifact|"
                             r"append_jsonl|flush_ledger|write_ledger")),
    ("core", re.compile(r"services/\w+/(core|compute|trades|decisions|portfolio|recon|checks|sizing|limits)\.py")),
    ("decode/check", re.compile(r"shared/schemas|msgspec|decode \(shared")),
    ("other Redis", re.compile(r"redis/")),
]
NAMES = [c for c, _ in CATEGORIES] + ["other"]


def categorize(path: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = stack.split(";")
        counts[next((name for name, pat in CATEGORIES if any(pat.search(f) for f in frames)), "other")] += int(n)
    return counts


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else "/tmp/prof")
    print("| service | samples | " + " | ".join(NAMES) + " |")
    print("|---|---|" + "---|" * len(NAMES))
    for path in sorted(root.glob("*.txt")):
        c = categorize(path)
        total = sum(c.values()) or 1
        cells = " | ".join(f"{100 * c[name] / total:.0f}" for name in NAMES)
        print(f"| {path.stem.removesuffix('-0')} | {total} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
