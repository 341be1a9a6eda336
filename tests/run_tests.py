#!/usr/bin/env python3
"""Deterministic test entry point (``make test`` calls it).

Fixes the hash seed, TZ and test order; makes sure a Redis is reachable (REDIS_URL if set,
else 127.0.0.1:6379 if it answers, else a private redis-server on a free port, else a
clear error); runs the whole suite; prints PASS/FAIL per area and the pytest summary.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


LOCAL_REDIS = "redis://127.0.0.1:6379/0"


def ensure_redis(local: str = LOCAL_REDIS) -> tuple[str, object | None]:
    """(url, private server or None): REDIS_URL, else ``local`` if it answers, else a private redis-server."""
    from shared.redis_conn import ping, redact_url, start_redis_server

    url = os.environ.get("REDIS_URL")
    if url:
        if not ping(url, timeout=2):
            sys.exit(f"run_tests: REDIS_URL={redact_url(url)} does not answer PING")
        return url, None
    if ping(local):
        return local, None
    try:
        emb = start_redis_server()
    except FileNotFoundError:
        sys.exit("run_tests: no Redis reachable: set REDIS_URL, start Redis on 127.0.0.1:6379, "
                 "or install redis-server (apt-get install redis-server)")
    print(f"run_tests: started a private redis-server at {emb.url}")
    return emb.url, emb


def area_of(classname: str) -> str:
    # tests.test_bus.TestX -> bus ; tests.test_scanner_avwap -> scanner
    mod = classname.split(".")[1] if "." in classname else classname
    name = mod.removeprefix("test_")
    return name.split("_")[0]


def main() -> int:
    url, emb = ensure_redis()
    env = {**os.environ, "PYTHONHASHSEED": "0", "TZ": "UTC", "AVWAP_TEST_REDIS_URL": url,
           "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    env.pop("REDIS_URL", None)  # tests choose their own databases from AVWAP_TEST_REDIS_URL
    for k in [k for k in env if k.startswith("APCA_") or k.startswith("SLACK_")]:
        env.pop(k)
    junit = Path(tempfile.mkdtemp(prefix="avwap-tests-")) / "junit.xml"
    args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--junitxml={junit}", *sys.argv[1:]]
    try:
        rc = subprocess.call(args, cwd=ROOT, env=env)
    finally:
        if emb is not None:
            emb.stop()  # type: ignore[attr-defined]
    results: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            area = area_of(case.get("classname", "?"))
            failed = any(child.tag in ("failure", "error") for child in case)
            results[area][1 if failed else 0] += 1
    print("\n== areas ==")
    for area in sorted(results):
        ok, bad = results[area]
        print(f"{'FAIL' if bad else 'PASS'}  {area:<14} {ok} passed, {bad} failed")
    if rc == 5:
        print("run_tests: no tests ran")
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
