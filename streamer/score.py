"""Score windows: latent kNN distance to a reservoir of recent normal embeddings, combined with the
reconstruction error.

The reservoir only admits windows the detector judged normal (see :class:`streamer.detector.Detector`),
so an attack cannot teach it that attacks are normal. The nearest-neighbour search is exact either
way: for a small reservoir, blocks of queries with one BLAS matrix product per block; for a large
one, a k-d tree over the (low-dimensional) embeddings, rebuilt lazily after admissions, whose query
cost grows with the logarithm of the reservoir rather than linearly.

With a density-relative score (``Reservoir(density_k=k)``), a query's mean kNN distance is divided by
its neighbours' own mean distance to their k nearest entries (their *k-distance*), as the local
outlier factor does: a window as far from a sparse normal mode as that mode's members are from each
other scores about 1, one next to a dense mode but outside it scores high.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Reservoir", "knn_distance", "knn_neighbours", "combine_scores", "recon_error"]

# From this many embeddings on, the k-d tree beats the brute-force product (measured with
# benchmarks/model.py: at 4k entries and 8 dimensions both cost about the same per query).
KD_TREE_MIN_SIZE = 4096
# Points per leaf of the k-d tree (scipy's default is 16).
KD_TREE_LEAF = 32
# k-d trees lose their edge in high dimensions; beyond this the BLAS product stays.
KD_TREE_MAX_DIM = 32
# Queries x reservoir entries per block of the distance matrix (float32): 16M entries = 64 MiB,
# large enough for BLAS to run at full speed, small enough to stay in memory on a laptop.
BLOCK_ENTRIES = 1 << 24


def knn_distance(queries: np.ndarray, ref: np.ndarray, k: int, ref_sq: np.ndarray | None = None) -> np.ndarray:
    """Mean Euclidean distance of each query to its ``k`` nearest rows of ``ref``."""
    k = min(k, ref.shape[0])
    out = np.empty(queries.shape[0], dtype=np.float64)
    for lo, d2 in _distance_blocks(queries, ref, ref_sq):
        part = np.partition(d2, k - 1, axis=1)[:, :k] if k < d2.shape[1] else d2
        out[lo:lo + len(d2)] = np.sqrt(np.maximum(part, 0.0)).mean(axis=1)
    return out


def knn_neighbours(queries: np.ndarray, ref: np.ndarray, k: int,
                   ref_sq: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distances (float64) and row indices in ``ref`` of each query's ``min(k, len(ref))`` nearest
    rows of ``ref``, in no particular order along a row. (:func:`knn_distance` skips the indices:
    a partition of the values alone is faster.)"""
    k = min(k, ref.shape[0])
    dist = np.empty((queries.shape[0], k), dtype=np.float64)
    idx = np.empty((queries.shape[0], k), dtype=np.int64)
    for lo, d2 in _distance_blocks(queries, ref, ref_sq):
        i = np.argpartition(d2, k - 1, axis=1)[:, :k] if k < d2.shape[1] else np.broadcast_to(np.arange(k), d2.shape)
        idx[lo:lo + len(d2)] = i
        dist[lo:lo + len(d2)] = np.sqrt(np.maximum(np.take_along_axis(d2, i, axis=1), 0.0))
    return dist, idx


def _distance_blocks(queries: np.ndarray, ref: np.ndarray, ref_sq: np.ndarray | None):
    """Consecutive blocks of queries with their squared distances to every row of ``ref``, as
    ``(first query's index, block)``: one BLAS product per block, bounded in memory."""
    m = ref.shape[0]
    if m == 0:
        raise ValueError("the reservoir is empty: nothing to compare with")
    q = np.ascontiguousarray(queries, dtype=np.float32)
    r = np.ascontiguousarray(ref, dtype=np.float32)
    r_sq = (r * r).sum(axis=1) if ref_sq is None else ref_sq
    step = max(1, BLOCK_ENTRIES // m)
    for lo in range(0, q.shape[0], step):
        yield lo, _sq_distances(q[lo:lo + step], r, r_sq)


def _sq_distances(q: np.ndarray, r: np.ndarray, r_sq: np.ndarray | None = None) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``q`` and of ``r`` (one BLAS product)."""
    r_sq = (r * r).sum(axis=1) if r_sq is None else r_sq
    return (q * q).sum(axis=1)[:, None] + r_sq[None, :] - 2.0 * (q @ r.T)


def recon_error(sq_err: np.ndarray, err_scale: np.ndarray | None = None, top: int = 0) -> np.ndarray:
    """Reconstruction error of each row: the mean over features of the squared error, each feature's
    error first divided by its typical value on normal held-out windows (``err_scale``) when given,
    so that a feature the model always reconstructs poorly does not drown one it normally gets right.
    With ``top`` = m > 0 (and fewer than all features) only each row's m largest errors are averaged."""
    sq = np.asarray(sq_err, dtype=np.float64)
    if err_scale is not None:
        sq = sq / err_scale
    if 0 < top < sq.shape[1]:
        sq = np.partition(sq, sq.shape[1] - top, axis=1)[:, sq.shape[1] - top:]
    return sq.mean(axis=1)


def combine_scores(knn: np.ndarray, recon: np.ndarray, *, knn_scale: float, recon_scale: float,
                   recon_weight: float) -> np.ndarray:
    """One anomaly score: each component divided by its typical value on normal validation data,
    then mixed; higher is more anomalous."""
    return (1.0 - recon_weight) * knn / knn_scale + recon_weight * recon / recon_scale


class Reservoir:
    """A bounded store of normal embeddings. Once full, each admitted embedding replaces a random
    slot, so the content is recent-biased (ages decay geometrically) yet keeps rare normal modes
    for a while.

    With the k-d tree in use, small admissions wait in a pending block (searched by brute force
    next to the tree, so every query stays exact over tree and pending together) and enter the
    indexed store in bulk once the block holds ``pending_max`` embeddings: a detector fed small
    batches (low latency) does not rebuild the tree for every one. Until then the reservoir holds up
    to ``capacity + pending_max`` embeddings; a large admission goes straight in, as it did."""

    def __init__(self, capacity: int, dim: int, *, seed: int = 0, workers: int = 1, density_k: int = 0) -> None:
        self.capacity = capacity
        self.dim = dim
        self.workers = workers  # threads of a k-d tree query (-1: one per core)
        self._data = np.zeros((capacity, dim), dtype=np.float32)
        self._n = 0
        self.pending_max = min(1024, capacity // 8)
        self._pending = np.zeros((self.pending_max, dim), dtype=np.float32)
        self._n_pending = 0
        self._rng = np.random.default_rng(seed)
        self._tree = None  # scipy cKDTree over the indexed store, built on demand, dropped when it changes
        self.admitted = 0
        # Density-relative scoring (0: off): each entry's k-distance, in the store's and the pending
        # block's slots. A new entry gets its own against the entries already there when admitted;
        # every entry's is recomputed when the k-d tree is rebuilt (or, without a tree, once
        # ``pending_max`` embeddings have been admitted since the last time).
        self.density_k = density_k
        self._kd = np.zeros(capacity)
        self._kd_pending = np.zeros(self.pending_max)
        self._kd_floor = 0.0  # added to the neighbours' k-distance: duplicates have k-distance 0
        self._kd_stale = True
        self._since_refresh = 0

    def __len__(self) -> int:
        return self._n + self._n_pending

    @property
    def data(self) -> np.ndarray:
        if self._n_pending:
            return np.concatenate([self._data[: self._n], self._pending[: self._n_pending]])
        return self._data[: self._n]

    def _uses_tree(self) -> bool:
        return self._n >= KD_TREE_MIN_SIZE and self.dim <= KD_TREE_MAX_DIM

    def add(self, z: np.ndarray) -> None:
        z = np.asarray(z, dtype=np.float32)
        if z.size == 0:
            return
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ValueError(f"reservoir expects (n, {self.dim}) embeddings, got {z.shape}")
        if not np.isfinite(z).all():
            raise ValueError("refusing non-finite embeddings in the reservoir")
        kd = self._k_distance_of(z) if self.density_k else None  # (they move with their embeddings)
        self.admitted += len(z)
        if self._uses_tree() and self._n_pending + len(z) <= self.pending_max:
            self._pending[self._n_pending:self._n_pending + len(z)] = z
            if kd is not None:
                self._kd_pending[self._n_pending:self._n_pending + len(z)] = kd
            self._n_pending += len(z)
            return
        if self._n_pending:
            z = np.concatenate([self._pending[: self._n_pending], z])
            if kd is not None:
                kd = np.concatenate([self._kd_pending[: self._n_pending], kd])
            self._n_pending = 0
        free = self.capacity - self._n
        head, tail = z[:free], z[free:]
        if len(head):
            self._data[self._n:self._n + len(head)] = head
            if kd is not None:
                self._kd[self._n:self._n + len(head)] = kd[:free]
            self._n += len(head)
        if len(tail):
            if len(tail) > self.capacity:
                tail = tail[-self.capacity:]
            slots = self._rng.choice(self.capacity, size=len(tail), replace=False)
            self._data[slots] = tail
            if kd is not None:
                self._kd[slots] = kd[free:][-self.capacity:]
        self._tree = None

    def _k_distance_of(self, z: np.ndarray) -> np.ndarray:
        """Each new embedding's k-distance against the entries already held (an empty reservoir
        marks every k-distance for recomputation instead)."""
        self._since_refresh += len(z)
        if len(self) == 0:
            self._kd_stale = True
            return np.zeros(len(z))
        if self._uses_tree() and self._tree is None:
            # the store changed since its last tree: one product over what it holds, rather than a
            # tree this admission would drop again
            return knn_neighbours(z, self.data, self.density_k)[0].mean(axis=1)
        return self._nearest(z, self.density_k)[0].mean(axis=1)

    def _refresh_k_distances(self) -> None:
        """Every stored entry's k-distance among the others (not itself), and the floor."""
        n = self._n
        kk = min(self.density_k + 1, n)
        data = self._data[:n]
        if self._uses_tree():
            d, _ = self._index().query(data.astype(np.float64), k=kk, workers=self.workers)
            d = d.reshape(n, kk)
        else:
            d = knn_neighbours(data, data, kk)[0]
        # its k + 1 nearest include itself, at distance 0 (the smallest)
        self._kd[:n] = (d.sum(axis=1) - d.min(axis=1)) / max(kk - 1, 1)
        median = float(np.median(self._kd[:n])) if n else 0.0
        self._kd_floor = 0.1 * median if median > 0 else 1e-6
        self._kd_stale = False
        self._since_refresh = 0

    def knn(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Mean distance of each query to its ``k`` nearest embeddings (exact); with ``density_k``,
        divided by those neighbours' mean k-distance (plus a floor: a tenth of the median k-distance)."""
        if not self.density_k and not self._uses_tree():
            return knn_distance(queries, self._data[: self._n], k)  # (no indices needed: faster without)
        dist, slot = self._nearest(queries, k)
        if not self.density_k:
            return dist.mean(axis=1)
        if self._kd_stale or (not self._uses_tree() and self._since_refresh >= self.pending_max):
            self._refresh_k_distances()
        kd = np.concatenate([self._kd[: self._n], self._kd_pending[: self._n_pending]])[slot]
        return dist.mean(axis=1) / (kd.mean(axis=1) + self._kd_floor)

    def _index(self):
        """The k-d tree over the store, built if the store changed since the last one."""
        if self._tree is None:
            from scipy.spatial import cKDTree

            # Median splits and shrunk boxes: ~20% more to build than sliding midpoints, and
            # queries about twice as fast; leaves of 32 (not 16): ~15% more pipeline throughput
            # (both measured on embeddings of the e2e benchmark's model).
            self._tree = cKDTree(self._data[: self._n].astype(np.float64), leafsize=KD_TREE_LEAF)
            self._kd_stale = True  # (a new tree: the store changed since the last k-distances)
        return self._tree

    def _nearest(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Distances to each query's ``k`` nearest embeddings and their slots (the store's first, then
        the pending block's)."""
        if not self._uses_tree():  # (nothing is pending then)
            return knn_neighbours(queries, self._data[: self._n], k)
        q = np.asarray(queries, dtype=np.float64)
        k = min(k, len(self))
        # Threads only pay for themselves on a batch of some size.
        dist, slot = self._index().query(q, k=k, workers=self.workers if len(q) >= 256 else 1)
        dist, slot = dist.reshape(len(q), k), slot.reshape(len(q), k)
        if self._n_pending:
            d2 = _sq_distances(q.astype(np.float32), self._pending[: self._n_pending])
            both = np.concatenate([dist, np.sqrt(np.maximum(d2, 0.0))], axis=1)
            slots = np.concatenate([slot, np.broadcast_to(self._n + np.arange(self._n_pending), d2.shape)], axis=1)
            pick = np.argpartition(both, k - 1, axis=1)[:, :k]
            dist, slot = np.take_along_axis(both, pick, axis=1), np.take_along_axis(slots, pick, axis=1)
        return dist, slot
