"""The scan's column-wise primitives equal their definitions bit for bit (services/scanner/series.py)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from services.scanner.series import first_row, suffix_sums, wilder


def _wilder_by_definition(x: np.ndarray, alpha: float, start: int) -> np.ndarray:
    y = x.copy()
    for i in range(start + 1, len(x)):
        prev = y[i - 1]
        y[i] = np.where(np.isnan(prev), x[i], (1.0 - alpha) * prev + alpha * x[i])
    return y


def _panel(seed: int, inf: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.random((120, 3, 9)) * 10
    x[:rng.integers(1, 30), :, 0] = np.nan  # a late listing
    x[rng.random(x.shape) < 0.03] = np.nan  # holes: a NaN re-seeds
    if inf:
        x[rng.random(x.shape) < 0.01] = np.inf
        x[rng.random(x.shape) < 0.01] = -np.inf
    return x


def test_wilder_is_the_recursion_bit_for_bit_with_nan_and_inf() -> None:
    with np.errstate(invalid="ignore"):
        for seed in range(6):
            x = _panel(seed, inf=seed % 2 == 1)
            start = first_row(x[:, 0])
            got, want = wilder(x, 1 / 14, start), _wilder_by_definition(x, 1 / 14, start)
            assert got.tobytes() == want.tobytes()
            got1, want1 = wilder(x[:, 1], 0.2, start), _wilder_by_definition(x[:, 1], 0.2, start)
            assert got1.tobytes() == want1.tobytes()


def test_suffix_sums_are_the_reversed_cumsum_bit_for_bit() -> None:
    x = np.random.default_rng(1).random((50, 3, 7)) * 1e6
    x[3, 1, 2] = -0.0
    want = np.empty((51, 3, 7))
    want[-1] = 0.0
    np.cumsum(x[::-1], axis=0, out=want[-2::-1])
    assert suffix_sums(x).tobytes() == want.tobytes()


_FAULTS = """
import resource, sys
import numpy as np
from shared.allocator import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
def scan_like():  # a scan's temporaries: a few arrays of ~1 MB, allocated, filled and freed
    xs = [np.ones(131072) for _ in range(8)]
    del xs
for _ in range(5):
    scan_like()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    scan_like()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], cwd=root, capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's thresholds are glibc's")
def test_keeping_freed_memory_stops_the_page_faults_of_repeated_1mb_temporaries() -> None:
    """In a fresh process each (the allocator's state is per process): with glibc's defaults every round
    faults its freed pages back in; after ``keep_freed_memory`` the steady state faults none."""
    untuned, tuned = _faults("default"), _faults("tuned")
    assert untuned > 1000  # 20 rounds x 8 MB given back and faulted in again
    assert tuned < 100
