"""The risk benchmark runs, prints its figures with a same-run reference, and ends in one JSON line;
`make bench` runs it and never fails on a benchmark whose script is not written yet."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_risk_prints_figures_a_ratio_and_a_json_last_line() -> None:
    out = subprocess.run([sys.executable, "bench/bench_risk.py", "--n", "20"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip().splitlines()
    assert len(out) >= 5 and any("x core" in line for line in out[:-1])
    res = json.loads(out[-1])
    assert res["n"] == 20 and res["lost_races"] == 0
    for k in ("core_steps_per_s", "transact_msgs_per_s", "worker_msgs_per_s"):
        assert res[k] > 0
    assert abs(res["ratio_worker_vs_core"] - res["worker_msgs_per_s"] / res["core_steps_per_s"]) < 0.01


def test_bench_refuses_a_non_empty_redis(redis_url: str, real_redis) -> None:
    real_redis.set("someone:else", "1")
    proc = subprocess.run([sys.executable, "bench/bench_risk.py", "--n", "5", "--redis", redis_url], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not empty" in proc.stderr and real_redis.get("someone:else") == b"1"


def test_make_bench_includes_risk_and_guards_scripts_not_written_yet() -> None:
    make = (ROOT / "Makefile").read_text()
    deps = re.search(r"^bench:(.*)$", make, re.M).group(1).split()  # type: ignore[union-attr]
    assert "bench-risk" in deps
    for target in deps:
        recipe = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", make, re.M).group(1)  # type: ignore[union-attr]
        script = re.search(r"bench/\w+\.py", recipe).group(0)  # type: ignore[union-attr]
        if not (ROOT / script).exists():
            assert f"if [ -f {script} ]" in recipe, f"{target}: {script} is missing and not guarded"
