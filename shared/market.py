"""The market series shared by the scanner's market gate and the regime classifier."""

from __future__ import annotations

import numpy as np


def equal_weight_index(close: np.ndarray) -> np.ndarray:
    """The equal-weight index of a (T, S) close matrix: 1.0 on the first row, then compounded by the
    mean close-to-close return of the symbols with both closes (0 when none has). NaN = no bar."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ret = close[1:] / close[:-1] - 1.0
    counts = (~np.isnan(ret)).sum(axis=1)
    mean = np.where(counts > 0, np.nansum(ret, axis=1) / np.maximum(counts, 1), 0.0)
    return np.concatenate([[1.0], np.cumprod(1.0 + mean)])
