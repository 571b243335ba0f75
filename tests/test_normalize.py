"""streamer.normalize: log flags, robust centre and scale, clipping, non-finite inputs, round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamer.normalize import CLIP, SKEW_FOR_LOG, Normalizer


def _skew(c: np.ndarray) -> float:
    return float(((c - c.mean()) ** 3).mean() / c.std() ** 3)


def test_log_flag_only_for_skewed_non_negative_columns():
    rng = np.random.default_rng(0)
    lognormal = np.exp(rng.normal(8, 1.5, 4000))  # bytes-like, skewness >> 3
    normal = rng.normal(50, 5, 4000)
    negative_skewed = lognormal - lognormal.mean()  # as skewed, but with negative values
    x = np.stack([lognormal, normal, negative_skewed], axis=1)
    assert _skew(lognormal) > SKEW_FOR_LOG and abs(_skew(normal)) < 1
    n = Normalizer.fit(x, ["bytes", "temp", "centred"])
    assert n.log.tolist() == [True, False, False]
    # the log column is centred on the median of log1p(x)
    assert n.center[0] == pytest.approx(np.median(np.log1p(lognormal)))
    z = n.transform(x)
    assert abs(float(np.median(z[:, 0]))) < 0.01
    assert 0.7 < float(np.percentile(z[:, 0], 75) - np.percentile(z[:, 0], 25)) / 1.349 < 1.3


def test_robust_centre_and_scale_hand_computed():
    x = np.array([[1.0, 0.0, 7.0], [2.0, 0.0, 7.0], [3.0, 0.0, 7.0], [4.0, 0.0, 7.0], [5.0, 1.0, 7.0]] * 2)
    n = Normalizer.fit(x, ["a", "onehot", "const"])
    assert n.log.tolist() == [False, False, False]
    # a: median 3, IQR 4 - 2 = 2 -> scale 2 / 1.349
    assert n.center[0] == 3.0 and n.scale[0] == pytest.approx(2 / 1.349)
    # binary (one-hot) column: kept on its 0/1 scale, not divided by its small std (0.4 here)
    assert n.center[1] == 0.0 and n.scale[1] == 1.0
    # constant column: IQR 0, std 0 -> scale 1
    assert n.center[2] == 7.0 and n.scale[2] == 1.0
    # a mostly-zero column that is not binary: IQR 0 -> the standard deviation
    m = Normalizer.fit(np.array([[0.0], [0.0], [0.0], [0.0], [2.0]] * 2), ["rare"])
    assert m.scale[0] == pytest.approx(0.8)
    z = n.transform(np.array([[5.0, 1.0, 9.0]]))
    assert z.dtype == np.float32
    np.testing.assert_allclose(z[0], [2 / (2 / 1.349), 1.0, 2.0], rtol=1e-6)


def test_log_column_hand_computed():
    # 19 zeros and one big value: skewness 4.13 > 3, non-negative -> log1p
    col = np.array([0.0] * 19 + [np.e ** 4 - 1])
    assert _skew(col) > SKEW_FOR_LOG
    n = Normalizer.fit(col[:, None], ["c"])
    assert n.log.tolist() == [True]
    # log1p: 19 zeros and 4.0; median 0, IQR 0 -> std of the log values = 4 * sqrt(19) / 20
    assert n.center[0] == 0.0
    assert n.scale[0] == pytest.approx(4 * np.sqrt(19) / 20)
    z = n.transform(np.array([[np.e ** 2 - 1]]))
    assert z[0, 0] == pytest.approx(2 / (4 * np.sqrt(19) / 20), rel=1e-6)


def test_clip():
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    n = Normalizer.fit(x, ["a"])
    z = n.transform(np.array([[1e12], [-1e12], [1e300], [1.5]]))
    assert z[:, 0].tolist()[:3] == [CLIP, -CLIP, CLIP]
    assert abs(z[3, 0]) < 1
    assert Normalizer(["a"], np.array([False]), np.array([0.0]), np.array([1.0]), clip=5.0).transform(
        np.array([[7.0], [-9.0]]))[:, 0].tolist() == [5.0, -5.0]


def test_non_finite_inputs_become_finite():
    x = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])
    n = Normalizer(["a", "b"], np.array([False, True]), np.array([2.5, 3.0]), np.array([1.0, 0.5]))
    z = n.transform(np.array([[np.nan, np.nan], [np.inf, np.inf], [-np.inf, -np.inf]]))
    assert np.isfinite(z).all()
    assert z[0].tolist() == [0.0, 0.0]  # NaN -> the column centre
    assert z[1].tolist() == [CLIP, CLIP]
    assert z[2, 0] == -CLIP
    assert z[2, 1] == pytest.approx((0.0 - 3.0) / 0.5)  # log column: negative values count as 0
    assert np.isfinite(Normalizer.fit(x, ["a", "b"]).transform(np.full((1, 2), np.nan))).all()


def test_to_dict_from_dict_round_trip():
    rng = np.random.default_rng(1)
    x = np.stack([np.exp(rng.normal(5, 2, 500)), rng.normal(size=500), rng.integers(0, 2, 500)], axis=1)
    n = Normalizer.fit(x, ["bytes", "z", "flag"])
    d = json.loads(json.dumps(n.to_dict()))  # must survive JSON
    back = Normalizer.from_dict(d)
    assert back.names == n.names and back.clip == n.clip
    np.testing.assert_array_equal(back.log, n.log)
    np.testing.assert_array_equal(back.center, n.center)
    np.testing.assert_array_equal(back.scale, n.scale)
    np.testing.assert_array_equal(back.transform(x), n.transform(x))


def test_from_dict_rejects_mismatched_arrays():
    d = Normalizer.fit(np.array([[1.0, 2.0], [3.0, 5.0]]), ["a", "b"]).to_dict()
    for key, value in (("center", [0.0]), ("scale", [1.0, 1.0, 1.0]), ("log", [True])):
        with pytest.raises(ValueError, match="do not match"):
            Normalizer.from_dict({**d, key: value})


@pytest.mark.parametrize("x", [np.zeros((1, 3)), np.zeros((0, 3)), np.zeros(5)])
def test_fit_needs_two_rows_of_a_matrix(x):
    with pytest.raises(ValueError, match="at least 2 training windows"):
        Normalizer.fit(x, ["a", "b", "c"])


def test_fit_rejects_non_finite_training_data():
    with pytest.raises(ValueError, match="NaN or infinity"):
        Normalizer.fit(np.array([[1.0], [np.inf], [2.0]]), ["a"])
    with pytest.raises(ValueError, match="NaN or infinity"):
        Normalizer.fit(np.array([[1.0], [np.nan], [2.0]]), ["a"])


def test_log_compressed_is_the_rule_fit_applies():
    from streamer.normalize import log_compressed

    rng = np.random.default_rng(0)
    x = np.column_stack([rng.lognormal(0, 1.5, 2000),   # non-negative, skewed: compressed
                         rng.normal(0, 1, 2000),         # symmetric: not
                         -rng.lognormal(0, 1.5, 2000)])  # skewed the other way, negative: not
    np.testing.assert_array_equal(log_compressed(x), [True, False, False])
    np.testing.assert_array_equal(Normalizer.fit(x, ["a", "b", "c"]).log, log_compressed(x))
