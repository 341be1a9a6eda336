"""Test hook for restart tests: ``AVWAP_TEST_CRASH=<name>:<n>`` SIGKILLs this process the n-th time
``crash_point(name)`` is reached (unset in production: one environment lookup, nothing else)."""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get("AVWAP_TEST_CRASH", "")
    if not spec.startswith(name + ":"):
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= int(spec.rsplit(":", 1)[1]):
        os.kill(os.getpid(), signal.SIGKILL)
