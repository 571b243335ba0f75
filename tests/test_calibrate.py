"""streamer.calibrate: conformal p-values, the threshold, and the false-alarm rate they promise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamer.calibrate import Calibrator


def test_p_values_hand_computed():
    c = Calibrator(np.array([3.0, 1.0, 4.0, 2.0]), alpha=0.45)
    assert c.n == 4 and c.sorted.tolist() == [1, 2, 3, 4]
    # p(s) = (1 + #{c >= s}) / (n + 1)
    p = c.p_values(np.array([0.0, 1.0, 2.0, 2.5, 4.0, 4.5]))
    np.testing.assert_allclose(p, [5 / 5, 5 / 5, 4 / 5, 3 / 5, 2 / 5, 1 / 5])
    assert c.min_p == pytest.approx(0.2)


def test_p_values_with_ties():
    c = Calibrator(np.array([1.0, 2.0, 2.0, 2.0, 5.0]), alpha=0.3)
    np.testing.assert_allclose(c.p_values(np.array([2.0, 2.0001, 5.0])), [5 / 6, 2 / 6, 2 / 6])


def test_threshold_hand_computed():
    c = Calibrator(np.array([1.0, 2.0, 3.0, 4.0]), alpha=0.45)
    # p < 0.45 <=> 1 + ge < 2.25 <=> ge <= 1: alert above the second largest score
    assert c.threshold == 3.0
    assert c.is_alert(c.p_values(np.array([3.0, 3.5, 4.0, 9.0]))).tolist() == [False, True, True, True]
    c = Calibrator(np.arange(1.0, 100.0), alpha=0.05)  # n = 99: ge <= 3
    assert c.threshold == 96.0


def test_threshold_semantics_agree_with_p_values():
    rng = np.random.default_rng(0)
    for n in list(range(1, 60)) + [99, 199, 999, 1999]:
        for cal in (np.round(rng.normal(size=n), 1), rng.permutation(n).astype(float)):  # ties; distinct
            probe = np.concatenate([cal, cal + 0.05, cal - 0.05, [-10.0, 1e6]])
            for alpha in (0.001, 0.01, 0.02, 0.05, 0.07, 0.1, 0.13, 0.2, 0.3, 0.49):
                c = Calibrator(cal, alpha)
                alert = c.is_alert(c.p_values(probe))
                assert np.array_equal(alert, probe > c.threshold), (n, alpha, c.threshold)


def test_threshold_where_alpha_times_n_plus_one_rounds_up():
    # 0.07 * 100 == 7.000000000000001 in floating point; p = 7 / 100 is not < 0.07
    # so at most 5 calibration scores may lie at or above an alerting score: the threshold is 93
    # (94..98 above it), not 92.
    c = Calibrator(np.arange(99, dtype=float), alpha=0.07)
    assert c.threshold == 93.0
    assert c.p_values(np.array([92.5, 93.0]))[0] == 0.07
    assert not c.is_alert(c.p_values(np.array([92.5, 93.0]))).any()
    assert c.is_alert(c.p_values(np.array([93.5])))[0]


def test_too_small_calibration_set_never_alerts():
    c = Calibrator(np.arange(50, dtype=float), alpha=0.01)
    assert c.min_p == pytest.approx(1 / 51) and c.min_p > c.alpha
    assert c.threshold == math.inf
    assert not c.is_alert(c.p_values(np.array([1e9]))).any()
    # the smallest set that can alert at 0.01 has 100 scores (min p = 1/101)
    assert Calibrator(np.arange(99, dtype=float), 0.01).threshold == math.inf
    c = Calibrator(np.arange(100, dtype=float), 0.01)
    assert c.threshold == 99.0 and c.is_alert(c.p_values(np.array([99.5])))[0]


@pytest.mark.parametrize("bad", [np.array([]), np.array([1.0, np.nan]), np.array([np.inf]), np.ones((2, 2))])
def test_rejects_bad_calibration_scores(bad):
    with pytest.raises(ValueError, match="finite"):
        Calibrator(bad, 0.01)


def test_false_alarm_rate_on_exchangeable_data():
    rng = np.random.default_rng(42)
    cal = rng.normal(size=20_000)
    test = rng.normal(size=20_000)
    c = Calibrator(cal, alpha=0.01)
    rate = float(c.is_alert(c.p_values(test)).mean())
    assert 0.005 <= rate <= 0.02
    assert rate == float((test > c.threshold).mean())
    # p-values of exchangeable data are (super-)uniform: about 10 % fall below 0.1
    assert 0.09 <= float((c.p_values(test) < 0.1).mean()) <= 0.11


def test_shifted_data_alerts_much_more():
    rng = np.random.default_rng(1)
    c = Calibrator(rng.normal(size=5000), alpha=0.01)
    assert c.is_alert(c.p_values(rng.normal(3.0, 1.0, size=2000))).mean() > 0.3
