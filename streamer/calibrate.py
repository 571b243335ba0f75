"""Calibrate scores into empirical p-values against scores of normal windows.

``p(s) = (1 + #{c >= s}) / (n + 1)`` over the calibration scores ``c`` (held-out normal validation
windows, never seen by the reservoir). An alert fires when ``p < alpha``, which bounds the
false-alarm rate on normal data exchangeable with the calibration set by ``alpha``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["Calibrator"]


class Calibrator:
    def __init__(self, scores: np.ndarray, alpha: float) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 1 or len(scores) == 0 or not np.isfinite(scores).all():
            raise ValueError("calibration needs a non-empty vector of finite scores")
        self.alpha = float(alpha)
        self.sorted = np.sort(scores)
        n = len(self.sorted)
        # Largest count of calibration scores >= s that still gives p < alpha.
        g = math.ceil(alpha * (n + 1) - 1) - 1
        # Settle g with the very float arithmetic of p_values (alpha * (n + 1) may round across an
        # integer), so that "score > threshold" and "p < alpha" always agree.
        while g >= 0 and (1.0 + g) / (n + 1.0) >= alpha:
            g -= 1
        while g < n - 1 and (2.0 + g) / (n + 1.0) < alpha:
            g += 1
        self._max_ge = g

    @property
    def n(self) -> int:
        return len(self.sorted)

    @property
    def min_p(self) -> float:
        """Smallest p-value this calibration set can give; alpha below it never alerts."""
        return 1.0 / (self.n + 1)

    @property
    def threshold(self) -> float:
        """Scores strictly above this alert (``inf`` when the set is too small for alpha)."""
        if self._max_ge < 0:
            return math.inf
        return float(self.sorted[self.n - self._max_ge - 1])

    def p_values(self, scores: np.ndarray) -> np.ndarray:
        ge = self.n - np.searchsorted(self.sorted, np.asarray(scores, dtype=np.float64), side="left")
        return (1.0 + ge) / (self.n + 1.0)

    def is_alert(self, p: np.ndarray) -> np.ndarray:
        return np.asarray(p) < self.alpha
