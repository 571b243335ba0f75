"""A bounded first-in-first-out store of raw windows: the newest ``capacity`` rows are kept.

Used by the pipeline (recently admitted windows, re-embedded by a hot-swapped model), and by the
retrainer (its training reservoir of recent normal windows, and its set of confident alerts).
"""

from __future__ import annotations

import numpy as np

__all__ = ["RecentWindows"]


class RecentWindows:
    """Raw window features with their end time and entity, in a ring buffer."""

    def __init__(self, capacity: int, n_features: int) -> None:
        self.capacity = int(capacity)
        self.n_features = int(n_features)
        self._x = np.zeros((self.capacity, self.n_features), dtype=np.float64)
        self._end = np.zeros(self.capacity, dtype=np.int64)
        self._entity = np.empty(self.capacity, dtype=object)
        self._p = np.ones(self.capacity, dtype=np.float64)
        self._head = 0  # next slot to write
        self._n = 0
        self.added = 0  # rows ever added

    def __len__(self) -> int:
        return self._n

    def add(self, x: np.ndarray, end_ms: np.ndarray, entity: np.ndarray, p: np.ndarray | None = None) -> None:
        """Append rows (``p``: each window's p-value when it was scored; 1 when not given)."""
        n = len(x)
        self.added += n
        if n == 0 or self.capacity == 0:
            return
        p = np.ones(n) if p is None else np.asarray(p, dtype=np.float64)
        if n > self.capacity:
            x, end_ms, entity, p = x[-self.capacity:], end_ms[-self.capacity:], entity[-self.capacity:], p[-self.capacity:]
            n = self.capacity
        idx = (self._head + np.arange(n)) % self.capacity
        self._x[idx] = x
        self._end[idx] = end_ms
        self._entity[idx] = entity
        self._p[idx] = p
        self._head = int((self._head + n) % self.capacity)
        self._n = min(self.capacity, self._n + n)

    def _order(self) -> np.ndarray:
        if self._n < self.capacity:
            return np.arange(self._n)
        return (self._head + np.arange(self.capacity)) % self.capacity

    @property
    def x(self) -> np.ndarray:
        """Rows oldest first (a copy)."""
        return self._x[self._order()]

    @property
    def end_ms(self) -> np.ndarray:
        return self._end[self._order()]

    @property
    def entity(self) -> np.ndarray:
        return self._entity[self._order()]

    @property
    def p_value(self) -> np.ndarray:
        return self._p[self._order()]

    def clear(self) -> None:
        self._head = self._n = 0
