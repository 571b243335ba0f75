"""streamer.score: exact kNN distance, the reservoir, the combined score."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import density_ref, own_k_distance

from streamer import score as score_mod
from streamer.score import Reservoir, combine_scores, knn_distance, recon_error


def brute_knn(q: np.ndarray, ref: np.ndarray, k: int) -> np.ndarray:
    d = np.sqrt(((q[:, None, :].astype(np.float64) - ref[None, :, :].astype(np.float64)) ** 2).sum(axis=2))
    return np.sort(d, axis=1)[:, :min(k, len(ref))].mean(axis=1)


def test_knn_hand_computed():
    ref = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    q = np.array([[0.0, 0.0], [3.0, 0.0]])
    # q0: distances 0, 5, 10; q1: 3, 4, sqrt(9 + 64)
    np.testing.assert_allclose(knn_distance(q, ref, 1), [0.0, 3.0], atol=1e-3)
    np.testing.assert_allclose(knn_distance(q, ref, 2), [2.5, 3.5], atol=1e-5)
    np.testing.assert_allclose(knn_distance(q, ref, 3), [5.0, (7 + np.sqrt(73)) / 3], atol=1e-5)


@pytest.mark.parametrize("k", [1, 3, 10, 49, 50])
def test_knn_matches_brute_force(k):
    rng = np.random.default_rng(k)
    ref = rng.normal(size=(50, 8)).astype(np.float32)
    q = rng.normal(size=(37, 8)).astype(np.float32)
    out = knn_distance(q, ref, k)
    assert out.dtype == np.float64 and out.shape == (37,)
    np.testing.assert_allclose(out, brute_knn(q, ref, k), rtol=1e-4, atol=1e-4)


def test_knn_k_larger_than_reservoir_uses_all_entries():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(4, 3))
    q = rng.normal(size=(6, 3))
    np.testing.assert_allclose(knn_distance(q, ref, 10), brute_knn(q, ref, 4), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(knn_distance(q, ref, 10), knn_distance(q, ref, 4), rtol=1e-6)


@pytest.mark.parametrize("block", [1, 7, 12, 100])
def test_knn_in_small_blocks(monkeypatch, block):
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(6, 4)).astype(np.float32)
    q = rng.normal(size=(11, 4)).astype(np.float32)
    full = knn_distance(q, ref, 3)
    monkeypatch.setattr(score_mod, "BLOCK_ENTRIES", block)  # 1, 1, 2 and 16 queries per block
    out = knn_distance(q, ref, 3)
    np.testing.assert_allclose(out, full, rtol=1e-6)
    np.testing.assert_allclose(out, brute_knn(q, ref, 3), rtol=1e-4, atol=1e-4)


def test_knn_given_ref_sq_and_empty_queries():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(9, 2)).astype(np.float32)
    q = rng.normal(size=(3, 2)).astype(np.float32)
    np.testing.assert_allclose(knn_distance(q, ref, 2, (ref * ref).sum(axis=1)), knn_distance(q, ref, 2))
    assert knn_distance(np.empty((0, 2)), ref, 2).shape == (0,)


def test_knn_empty_reservoir():
    with pytest.raises(ValueError, match="empty"):
        knn_distance(np.zeros((2, 3)), np.zeros((0, 3)), 1)


def test_combine_scores_hand_computed():
    s = combine_scores(np.array([2.0, 4.0]), np.array([1.0, 3.0]), knn_scale=2.0, recon_scale=1.0,
                       recon_weight=0.25)
    np.testing.assert_allclose(s, [0.75 * 1 + 0.25 * 1, 0.75 * 2 + 0.25 * 3])
    only_knn = combine_scores(np.array([3.0]), np.array([100.0]), knn_scale=1.5, recon_scale=1.0, recon_weight=0.0)
    only_recon = combine_scores(np.array([3.0]), np.array([100.0]), knn_scale=1.5, recon_scale=4.0, recon_weight=1.0)
    assert only_knn.tolist() == [2.0] and only_recon.tolist() == [25.0]


def test_recon_error_hand_computed_over_all_or_the_largest_features():
    sq = np.array([[1.0, 5.0, 2.0, 0.0], [3.0, 3.0, 3.0, 3.0]])
    np.testing.assert_allclose(recon_error(sq), [2.0, 3.0])
    np.testing.assert_allclose(recon_error(sq, top=2), [(5 + 2) / 2, 3.0])
    np.testing.assert_allclose(recon_error(sq, top=1), [5.0, 3.0])
    # top >= the number of features: every feature, as top=0
    np.testing.assert_allclose(recon_error(sq, top=4), recon_error(sq))
    np.testing.assert_allclose(recon_error(sq, top=9), recon_error(sq))
    # features are scaled first, then the largest are taken: 1/1, 5/5, 2/1, 0/1 -> the largest is 2
    np.testing.assert_allclose(recon_error(sq, np.array([1.0, 5.0, 1.0, 1.0]), top=1), [2.0, 3.0])


# -- reservoir --------------------------------------------------------------------------------------


def _rows(a: np.ndarray) -> set[tuple]:
    return {tuple(r) for r in np.asarray(a, dtype=np.float32).tolist()}


def test_reservoir_fills_in_order():
    r = Reservoir(5, 2, seed=0)
    assert len(r) == 0 and r.data.shape == (0, 2)
    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    r.add(a)
    assert len(r) == 3 and r.admitted == 3
    np.testing.assert_array_equal(r.data, a)
    r.add(np.empty((0, 2)))
    assert len(r) == 3 and r.admitted == 3


def test_reservoir_replaces_at_capacity():
    r = Reservoir(5, 2, seed=0)
    first = np.arange(6, dtype=np.float32).reshape(3, 2)
    new = 100 + np.arange(8, dtype=np.float32).reshape(4, 2)
    r.add(first)
    r.add(new)
    assert len(r) == 5 and r.capacity == 5 and r.admitted == 7
    content = _rows(r.data)
    assert len(content) == 5
    # rows 0, 1 of `new` filled the free slots; rows 2, 3 replaced two random slots
    assert _rows(new[2:]) <= content
    assert content <= _rows(first) | _rows(new)
    for _ in range(10):
        r.add(np.full((3, 2), 7.0, dtype=np.float32))
    assert len(r) == 5 and r.admitted == 37


def test_reservoir_batch_larger_than_capacity_keeps_its_newest():
    r = Reservoir(4, 1, seed=1)
    r.add(np.array([[-1.0]] * 4))
    r.add(np.arange(10, dtype=np.float32)[:, None])
    assert sorted(r.data[:, 0].tolist()) == [6.0, 7.0, 8.0, 9.0]
    assert r.admitted == 14


def test_reservoir_is_seeded():
    batches = [np.random.default_rng(i).normal(size=(7, 3)) for i in range(5)]
    a, b, c = Reservoir(10, 3, seed=3), Reservoir(10, 3, seed=3), Reservoir(10, 3, seed=4)
    for z in batches:
        a.add(z), b.add(z), c.add(z)
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(a.data, c.data)


def test_reservoir_rejects_non_finite_and_bad_shapes():
    r = Reservoir(5, 2)
    r.add(np.ones((2, 2)))
    for bad in (np.array([[1.0, np.nan]]), np.array([[np.inf, 0.0]])):
        with pytest.raises(ValueError, match="non-finite"):
            r.add(bad)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        r.add(np.ones((2, 3)))
    with pytest.raises(ValueError):
        r.add(np.ones(2))
    assert len(r) == 2 and r.admitted == 2  # nothing partially added


def test_reservoir_knn_tracks_replacements():
    rng = np.random.default_rng(2)
    r = Reservoir(20, 4, seed=0)
    for _ in range(6):
        r.add(rng.normal(size=(9, 4)))
    q = rng.normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(r.knn(q, 3), brute_knn(q, r.data, 3), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="empty"):
        Reservoir(3, 4).knn(q, 1)


def test_large_reservoir_uses_the_tree_and_stays_exact():
    from streamer.score import KD_TREE_MIN_SIZE, Reservoir, knn_distance

    rng = np.random.default_rng(5)
    r = Reservoir(KD_TREE_MIN_SIZE + 500, 6, seed=1)
    r.add(rng.normal(size=(KD_TREE_MIN_SIZE + 100, 6)))
    q = rng.normal(size=(300, 6)).astype(np.float32)
    np.testing.assert_allclose(r.knn(q, 7), knn_distance(q, r.data, 7), rtol=1e-4, atol=1e-5)
    assert r._tree is not None
    r.add(rng.normal(size=(r.pending_max + 1, 6)))  # a large admission goes into the index at once
    assert r._tree is None and r._n_pending == 0
    np.testing.assert_allclose(r.knn(q, 7), knn_distance(q, r.data, 7), rtol=1e-4, atol=1e-5)


def test_small_admissions_wait_beside_the_tree_and_queries_stay_exact():
    from streamer.score import KD_TREE_MIN_SIZE, Reservoir, knn_distance

    rng = np.random.default_rng(6)
    r = Reservoir(KD_TREE_MIN_SIZE, 5, seed=2)
    r.add(rng.normal(size=(KD_TREE_MIN_SIZE, 5)))  # full
    q = rng.normal(size=(400, 5)).astype(np.float32)
    r.knn(q, 10)
    tree = r._tree
    near = q[:3] + 0.05  # admitted points right next to three queries: they must be found
    r.add(near)
    r.add(rng.normal(size=(20, 5)))
    assert r._tree is tree and len(r) == KD_TREE_MIN_SIZE + 23 and r.admitted == KD_TREE_MIN_SIZE + 23
    assert r.data.shape == (KD_TREE_MIN_SIZE + 23, 5)
    np.testing.assert_allclose(r.knn(q, 10), knn_distance(q, r.data, 10), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(r.knn(q[:3], 1), 0.05 * np.sqrt(5), rtol=1e-2)
    # The block fills up: everything moves into the store (random slots), the tree is rebuilt.
    while r._n_pending + 50 <= r.pending_max:
        r.add(rng.normal(size=(50, 5)))
    r.add(rng.normal(size=(50, 5)))
    assert r._n_pending == 0 and r._tree is None and len(r) == KD_TREE_MIN_SIZE == r.capacity
    np.testing.assert_allclose(r.knn(q, 10), knn_distance(q, r.data, 10), rtol=1e-4, atol=1e-5)


def test_knn_neighbours_returns_the_nearest_rows():
    from streamer.score import knn_neighbours

    ref = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    q = np.array([[0.0, 0.0], [3.0, 0.0]])
    d, i = knn_neighbours(q, ref, 2)
    order = np.argsort(d, axis=1)
    np.testing.assert_array_equal(np.take_along_axis(i, order, axis=1), [[0, 1], [0, 1]])
    np.testing.assert_allclose(np.take_along_axis(d, order, axis=1), [[0.0, 5.0], [3.0, 4.0]], atol=1e-6)
    d, i = knn_neighbours(q, ref, 5)  # more than the rows: every row
    assert d.shape == i.shape == (2, 3)


def test_density_relative_score_hand_computed():
    """A dense mode {0, 0.1, 0.2} and a sparse one {10, 12, 14} on a line, k = 1: the k-distances are
    0.1 and 2, their median 1.05, so the floor is 0.105. A window 0.3 from the dense mode scores
    0.3 / (0.1 + 0.105); one 2 from the sparse mode, farther, scores lower: 2 / (2 + 0.105)."""
    r = Reservoir(6, 1, density_k=1)
    r.add(np.array([[0.0], [0.1], [0.2], [10.0], [12.0], [14.0]]))
    out = r.knn(np.array([[0.5], [16.0]]), 1)
    np.testing.assert_allclose(out, [0.3 / 0.205, 2.0 / 2.105], rtol=1e-5)
    assert out[0] > out[1]
    plain = Reservoir(6, 1)
    plain.add(r.data)
    np.testing.assert_allclose(plain.knn(np.array([[0.5], [16.0]]), 1), [0.3, 2.0], rtol=1e-5)


def test_density_without_tree_follows_admissions():
    """Small reservoir (brute force): a new entry's k-distance is taken against the entries already
    there; after ``pending_max`` admissions every entry's is recomputed among the others."""
    rng = np.random.default_rng(8)
    r = Reservoir(64, 3, seed=0, density_k=4)
    base = rng.normal(size=(40, 3)).astype(np.float32)
    r.add(base)
    q = rng.normal(size=(7, 3)).astype(np.float32)
    np.testing.assert_allclose(r.knn(q, 4), density_ref(q, base, own_k_distance(base, 4), 4), rtol=1e-4)
    extra = rng.normal(size=(3, 3)).astype(np.float32) + 2.0  # fewer than pending_max (8): no recomputation
    r.add(extra)
    kd_extra = np.sort(np.sqrt(((extra[:, None] - base[None]) ** 2).sum(axis=2)), axis=1)[:, :4].mean(axis=1)
    kd_base = own_k_distance(base, 4)
    ref = np.concatenate([base, extra])
    kd = np.concatenate([kd_base, kd_extra])
    # (the floor stays the one of the last recomputation: the base's)
    np.testing.assert_allclose(r.knn(q, 4), density_ref(q, ref, kd, 4, floor_of=kd_base), rtol=1e-4)
    r.add(rng.normal(size=(r.pending_max, 3)).astype(np.float32))  # now every k-distance is recomputed
    np.testing.assert_allclose(r.knn(q, 4), density_ref(q, r.data, own_k_distance(r.data, 4), 4), rtol=1e-4)


def test_density_with_tree_and_pending_block():
    from streamer.score import KD_TREE_MIN_SIZE

    rng = np.random.default_rng(9)
    r = Reservoir(KD_TREE_MIN_SIZE + 200, 4, seed=1, density_k=5)
    base = rng.normal(size=(KD_TREE_MIN_SIZE + 100, 4)).astype(np.float32)
    r.add(base)
    q = rng.normal(size=(50, 4)).astype(np.float32)
    kd_base = own_k_distance(base, 5)
    np.testing.assert_allclose(r.knn(q, 5), density_ref(q, base, kd_base, 5), rtol=1e-4)
    assert r._tree is not None
    near = q[:4] + 0.01  # pending entries next to four queries: found, with their own k-distance
    r.add(near)
    assert r._n_pending == 4
    # (admitted together: each one's k-distance is against the store held before that admission)
    kd_near = np.sort(np.sqrt(((near[:, None] - base[None]) ** 2).sum(axis=2)), axis=1)[:, :5].mean(axis=1)
    kd = np.concatenate([kd_base, kd_near])
    out = r.knn(q, 5)
    np.testing.assert_allclose(out, density_ref(q, np.concatenate([base, near]), kd, 5, floor_of=kd_base), rtol=1e-4)
    assert (out[:4] < density_ref(q[:4], base, kd_base, 5)).all()  # the new neighbours were found


def test_density_new_entries_count_the_pending_block_before_any_tree():
    from streamer.score import KD_TREE_MIN_SIZE

    rng = np.random.default_rng(11)
    r = Reservoir(KD_TREE_MIN_SIZE + 200, 4, seed=1, density_k=5)
    base = rng.normal(size=(KD_TREE_MIN_SIZE + 100, 4)).astype(np.float32)
    r.add(base)
    near = base[:4] + 0.01
    r.add(near)  # pending, and no tree built yet (no query since the store changed)
    assert r._tree is None and r._n_pending == 4
    later = near + 0.001  # its nearest held entries are the pending ones
    r.add(later)
    held = np.concatenate([base, near])
    want = np.sort(np.sqrt(((later[:, None] - held[None]) ** 2).sum(axis=2)), axis=1)[:, :5].mean(axis=1)
    np.testing.assert_allclose(r._kd_pending[4:8], want, rtol=1e-3)  # (float32 products)


def test_density_when_full_new_entries_replace_slots_with_their_k_distance():
    rng = np.random.default_rng(10)
    r = Reservoir(80, 2, seed=3, density_k=3)  # (no tree: pending_max 10 admissions between recomputations)
    before = rng.normal(size=(80, 2)).astype(np.float32)
    r.add(before)
    q = rng.normal(size=(6, 2)).astype(np.float32)
    kd_before = own_k_distance(before, 3)
    np.testing.assert_allclose(r.knn(q, 3), density_ref(q, before, kd_before, 3), rtol=1e-4)
    new = np.array([[0.0, 0.0], [3.0, 3.0], [0.1, 0.0], [-3.0, 3.0], [5.0, -5.0]], dtype=np.float32)
    q = np.concatenate([q, new + 0.01])  # (each new entry is among its query's neighbours)
    r.add(new)  # full: five random slots replaced, k-distances from dense (centre) to sparse (far out)
    kd_new = np.sort(np.sqrt(((new[:, None] - before[None]) ** 2).sum(axis=2)), axis=1)[:, :3].mean(axis=1)
    now = r.data
    kd = np.empty(len(now))
    for i, row in enumerate(now):  # each row's k-distance: the old one, or the one it was admitted with
        hit = np.flatnonzero((new == row).all(axis=1))
        kd[i] = kd_new[hit[0]] if len(hit) else kd_before[np.flatnonzero((before == row).all(axis=1))[0]]
    assert sum(bool((new == row).all(axis=1).any()) for row in now) == 5  # all five went in
    np.testing.assert_allclose(r.knn(q, 3), density_ref(q, now, kd, 3, floor_of=kd_before), rtol=1e-4)
