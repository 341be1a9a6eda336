"""The README's scan example, run as written on the bundled sample, produces the candidates it says."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_scan_example_produces_candidates(tmp_path: Path) -> None:
    text = (ROOT / "README.md").read_text()
    line = next(ln for ln in text.splitlines() if "avwap scan --bars data/sample/" in ln)
    words = shlex.split(line)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCAN_", "REDIS_URL"))}
    while "=" in words[0]:  # leading VAR=value assignments
        k, _, v = words.pop(0).partition("=")
        env[k] = v
    assert env.get("SCAN_MARKET_GATE") == "universe_proxy" and "no SPY" in text
    assert words[0] == "avwap"
    words[words.index("--out") + 1] = str(tmp_path / "scan")
    res = subprocess.run([sys.executable, "-m", "avwap", *words[1:]], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    n = int(re.search(r"candidates (\d+)", res.stdout).group(1))
    said = re.search(r"candidates (\d+), market gate open", text.split(line, 1)[1])
    assert n > 0 and said and int(said.group(1)) == n  # the README says what it prints
    assert (tmp_path / "scan" / "candidates" / "2018-06-01.json").exists()
