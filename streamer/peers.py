"""Peer detectors for ``streamer eval``, run on the very same window features as ours.

Each peer gets the windows our normalizer produces (same decode, same categorical hashing, same
windows, same scaling), is fitted on the same training split and scores the same test stream.

* ``river-hst``: River ``HalfSpaceTrees`` (River's defaults; feature limits from the training
  data), online: ``score_one`` then ``learn_one`` for every window.
* ``river-loda``: River ``LODA`` (defaults), online likewise.
* ``iforest``: scikit-learn ``IsolationForest`` (defaults, fixed seed), fitted on the training split.
* ``knn``: mean distance to the 10 nearest training windows in the (normalized) input space.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from streamer.score import knn_distance

__all__ = ["Peer", "PEERS", "make_peer"]

# Largest training set kept for the batch kNN peer (exact search; beyond this it only gets slower).
KNN_MAX_TRAIN = 20_000
KNN_K = 10


class Peer(Protocol):
    name: str

    def fit(self, x: np.ndarray) -> None: ...

    def score(self, x: np.ndarray) -> np.ndarray:
        """Scores of windows in stream order (online peers learn as they go); higher = anomalous."""


class _RiverPeer:
    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.seed = seed
        self.model = None

    def _make(self, x: np.ndarray):  # noqa: ANN202
        from river.anomaly import LODA, HalfSpaceTrees

        if self.name == "river-hst":
            lo, hi = x.min(axis=0), x.max(axis=0)
            hi = np.where(hi > lo, hi, lo + 1.0)
            return HalfSpaceTrees(limits={i: (float(a), float(b)) for i, (a, b) in enumerate(zip(lo, hi))},
                                  seed=self.seed)
        return LODA(seed=self.seed)

    def fit(self, x: np.ndarray) -> None:
        self.model = self._make(x)
        for row in x.tolist():
            self.model.learn_one(dict(enumerate(row)))

    def score(self, x: np.ndarray) -> np.ndarray:
        assert self.model is not None, "fit first"
        out = np.empty(len(x))
        m = self.model
        for i, row in enumerate(x.tolist()):
            d = dict(enumerate(row))
            out[i] = m.score_one(d)
            m.learn_one(d)
        return out


class _IForest:
    name = "iforest"

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def fit(self, x: np.ndarray) -> None:
        from sklearn.ensemble import IsolationForest

        self.model = IsolationForest(random_state=self.seed).fit(x)

    def score(self, x: np.ndarray) -> np.ndarray:
        return -self.model.score_samples(x)


class _KNN:
    name = "knn"

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def fit(self, x: np.ndarray) -> None:
        if len(x) > KNN_MAX_TRAIN:
            idx = np.random.default_rng(self.seed).choice(len(x), KNN_MAX_TRAIN, replace=False)
            x = x[np.sort(idx)]
        self.ref = np.ascontiguousarray(x, dtype=np.float32)

    def score(self, x: np.ndarray) -> np.ndarray:
        return knn_distance(x, self.ref, KNN_K)


PEERS = ("river-hst", "river-loda", "iforest", "knn")


def make_peer(name: str, seed: int = 7) -> Peer:
    if name in ("river-hst", "river-loda"):
        return _RiverPeer(name, seed)
    if name == "iforest":
        return _IForest(seed)
    if name == "knn":
        return _KNN(seed)
    raise ValueError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")
