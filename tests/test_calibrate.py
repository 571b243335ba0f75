"""streamer.calibrate: conformal p-values, the threshold, and the false-alarm rate they promise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamer.calibrate import Calibrator


def test_p_values_hand_computed():
    c = Calibrator(np.array([3.0, 1.0, 4.0, 2.0]), alpha=0.45, tail=False)
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
                for tail in (False, True):
                    c = Calibrator(cal, alpha, tail=tail)
                    alert = c.is_alert(c.p_values(probe))
                    assert np.array_equal(alert, probe > c.threshold), (n, alpha, tail, c.threshold)


def test_threshold_where_alpha_times_n_plus_one_rounds_up():
    # 0.07 * 100 == 7.000000000000001 in floating point; p = 7 / 100 is not < 0.07
    # so at most 5 calibration scores may lie at or above an alerting score: the threshold is 93
    # (94..98 above it), not 92.
    c = Calibrator(np.arange(99, dtype=float), alpha=0.07)
    assert c.threshold == 93.0
    assert c.p_values(np.array([92.5, 93.0]))[0] == 0.07
    assert not c.is_alert(c.p_values(np.array([92.5, 93.0]))).any()
    assert c.is_alert(c.p_values(np.array([93.5])))[0]


def test_too_small_calibration_set_never_alerts_without_a_tail():
    c = Calibrator(np.arange(50, dtype=float), alpha=0.01, tail=False)
    assert c.min_p == pytest.approx(1 / 51) and c.min_p > c.alpha
    assert c.threshold == math.inf
    assert not c.is_alert(c.p_values(np.array([1e9]))).any()
    # the smallest set that can alert at 0.01 has 100 scores (min p = 1/101)
    assert Calibrator(np.arange(99, dtype=float), 0.01, tail=False).threshold == math.inf
    c = Calibrator(np.arange(100, dtype=float), 0.01, tail=False)
    assert c.threshold == 99.0 and c.is_alert(c.p_values(np.array([99.5])))[0]


def test_tail_hand_computed():
    # n = 20 scores 1..20: the tail takes the top max(10, 2) = 10 (11..20) over the next one (10):
    # mean excess beta = (1 + ... + 10) / 10 = 5.5; past 20, p(s) = exp(-(s - 20) / 5.5) / 21
    cal = np.arange(1.0, 21.0)
    c = Calibrator(cal, alpha=0.01)
    assert c.tail_beta == pytest.approx(5.5)
    p = c.p_values(np.array([0.0, 10.0, 20.0, 25.5, 31.0]))
    np.testing.assert_allclose(p, [1.0, 12 / 21, 2 / 21, math.exp(-1) / 21, math.exp(-2) / 21])
    # unchanged up to the largest calibration score
    probe = np.linspace(-1, 20, 50)
    np.testing.assert_array_equal(c.p_values(probe), Calibrator(cal, 0.01, tail=False).p_values(probe))
    # 21 scores cannot give 0.01 empirically; the tail reaches it at 20 + 5.5 * ln(1 / 0.21)
    assert c.min_p == 0.0
    assert c.threshold == pytest.approx(20 + 5.5 * math.log(1 / 0.21))
    assert c.is_alert(c.p_values(np.array([c.threshold - 1e-6, c.threshold + 1e-6]))).tolist() == [False, True]


def test_tail_is_continuous_and_non_increasing():
    rng = np.random.default_rng(3)
    c = Calibrator(rng.gamma(2.0, size=300), alpha=0.01)
    probe = np.sort(np.concatenate([c.sorted, c.sorted + 1e-9, np.linspace(0, 3 * c.sorted[-1], 2000)]))
    p = c.p_values(probe)
    assert (np.diff(p) <= 0).all() and p[-1] < c.min_p + 1 / 301 / 1e3
    top = c.sorted[-1]
    assert c.p_values(np.array([top + 1e-12]))[0] == pytest.approx(1 / 301)
    # far-out scores no longer tie
    far = c.p_values(np.array([2 * top, 3 * top, 4 * top]))
    assert far[0] > far[1] > far[2] > 0
    assert c.p_values(np.array([1e6 * top, np.inf]))[0] == np.finfo(np.float64).tiny  # never exactly 0


def test_tail_off_for_a_flat_top_or_a_single_score():
    assert Calibrator(np.ones(50), 0.01).tail_beta == 0.0
    assert Calibrator(np.array([2.0]), 0.5).tail_beta == 0.0
    c = Calibrator(np.ones(50), 0.01)
    assert c.p_values(np.array([5.0]))[0] == pytest.approx(1 / 51) and c.threshold == math.inf


def test_tail_false_alarm_rate_with_a_small_calibration_set():
    # 50 normal scores cannot give p < 0.01 empirically; with the tail the false-alarm rate on
    # exchangeable data stays near alpha (mean over 200 calibration draws; gamma scores, like distances)
    rng = np.random.default_rng(11)
    rates = []
    for _ in range(200):
        c = Calibrator(rng.gamma(2.0, size=50), alpha=0.01)
        rates.append(c.is_alert(c.p_values(rng.gamma(2.0, size=5000))).mean())
    assert 0.005 <= float(np.mean(rates)) <= 0.02


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


# -- EntityBaseline ---------------------------------------------------------------------------------
from streamer.calibrate import (AlertCooldown, ChangeMemory, EntityBaseline, InputBaseline,  # noqa: E402
                                RangeView, SeasonalBaseline, TransitionView, significance)


def _stream(rng, n, level=1.0):
    return rng.gamma(4.0, level / 4.0, size=n)


def test_entity_baseline_stationary_stream_rarely_surprises():
    rng = np.random.default_rng(0)
    b = EntityBaseline(_stream(rng, 2000), horizon=500)
    q = b.update(np.array(["h"] * 20000, dtype=object), _stream(rng, 20000))
    assert np.all((q > 0) & (q <= 1)) and np.isfinite(q).all()
    assert (q < 0.01).mean() < 0.02  # near its nominal rate on normal data


def test_entity_baseline_alerts_at_the_onset_of_a_shift_then_adapts():
    rng = np.random.default_rng(1)
    b = EntityBaseline(_stream(rng, 2000), horizon=300)
    ent = np.array(["h"] * 4000, dtype=object)
    scores = np.r_[_stream(rng, 2000), _stream(rng, 2000, level=8.0)]  # a lasting change at 2000
    q = b.update(ent, scores)
    assert q[2000:2030].min() < 1e-4  # surprising at the onset
    assert (q[3000:] < 0.01).mean() < 0.05  # the new level became the entity's normal


def test_entity_baseline_keeps_entities_apart_and_batches_do_not_matter():
    rng = np.random.default_rng(2)
    cal = _stream(rng, 1000)
    n = 3000
    ent = rng.choice(np.array(["a", "b", "c"], dtype=object), size=n)
    scores = _stream(rng, n) * np.where((ent == "b") & (np.arange(n) > 1500), 10.0, 1.0)
    whole = EntityBaseline(cal, horizon=200).update(ent, scores)
    parts = EntityBaseline(cal, horizon=200)
    cuts = [0, 1, 7, 500, 501, 1999, n]
    split = np.concatenate([parts.update(ent[a:b], scores[a:b]) for a, b in zip(cuts, cuts[1:])])
    np.testing.assert_allclose(whole, split)
    # alone, entity a gives exactly what it gave among the others
    alone = EntityBaseline(cal, horizon=200).update(ent[ent == "a"], scores[ent == "a"])
    np.testing.assert_allclose(whole[ent == "a"], alone)
    onset = np.flatnonzero((ent == "b") & (np.arange(n) > 1500))[:20]
    assert whole[onset].min() < 1e-3 and whole[ent == "a"].min() > 1e-4


def test_entity_baseline_forgets_the_least_recently_seen_entity():
    b = EntityBaseline(np.ones(10), horizon=10, max_entities=2)
    b.update(np.array(["a", "b"], dtype=object), np.array([1.0, 1.0]))
    b.update(np.array(["a"], dtype=object), np.array([1.0]))
    b.update(np.array(["c"], dtype=object), np.array([1.0]))  # evicts b (a was seen later)
    assert len(b) == 2 and set(b._rows.slot) == {"a", "c"}
    # a batch with more entities than the bound: none of them shares a slot with another
    q = b.update(np.array(["x", "y", "z", "x"], dtype=object), np.array([1.0, 50.0, 1.0, 1.0]))
    assert len(set(b._rows.slot.values())) == len(b._rows.slot) and {"x", "y", "z"} <= set(b._rows.slot)
    assert q[1] < q[0]
    assert b.update(np.array([], dtype=object), np.array([])).shape == (0,)
    with pytest.raises(ValueError):
        EntityBaseline(np.ones(3), horizon=1)


def test_significance_rules_hand_computed():
    p = np.array([1e-4, 1e-4, 0.5, 0.02, 1e-6])
    q = np.array([1e-6, 0.25, 1e-8, 1.0, 0.5])
    np.testing.assert_allclose(significance(p, q, "both"), [1e-4, 0.25, 0.5, 1.0, 0.5])
    # geometric: max(p, sqrt(p q)); an entity baseline can only soften p, never sharpen it
    np.testing.assert_allclose(significance(p, q, "geometric"), [1e-4, 5e-3, 0.5, math.sqrt(0.02), math.sqrt(5e-7)])
    assert significance(p, None, "both") is p and significance(p, None, "geometric") is p
    with pytest.raises(ValueError, match="unknown entity baseline rule"):
        significance(p, q, "mean")


def test_significance_alerts_are_subsets_of_the_calibrated_ones():
    rng = np.random.default_rng(3)
    p, q = rng.uniform(size=(2, 10_000)) ** 3
    both, geo = significance(p, q, "both"), significance(p, q, "geometric")
    assert (geo >= p).all() and (both >= geo).all()  # p <= geometric <= both
    alpha = 0.01
    assert ((both < alpha) <= (geo < alpha)).all() and ((geo < alpha) <= (p < alpha)).all()


def test_significance_with_an_input_baseline_is_a_geometric_mean():
    p, q, q_in = np.array([1e-4, 0.5]), np.array([1e-2, 0.5]), np.array([1e-6, 1e-8])
    np.testing.assert_allclose(significance(p, q, "both", input_p=q_in), [1e-4, math.sqrt(0.5e-8)])
    np.testing.assert_allclose(significance(p, None, input_p=q_in), [1e-5, math.sqrt(0.5e-8)])


def test_input_baseline_hand_computed():
    # prior: mean (10, 0), variance (4, 1); weight 2 / (3 + 1) = 0.5 per window
    b = InputBaseline(np.array([10.0, 0.0]), np.array([4.0, 1.0]), horizon=3)
    q = b.update(np.array(["a", "a"], dtype=object), np.array([[16.0, 0.0], [13.0, 0.0]]))
    # first window: z = (16 - 10) / 2 = 3 on feature 0, two-sided, Bonferroni over 2 features
    assert q[0] == pytest.approx(2 * math.erfc(3 / math.sqrt(2)))
    # then mean (13, 0), variance (0.5 * (4 + 0.5 * 36), 0.5 * 1) = (11, 0.5): the second window
    # sits on the mean (tail probability 1) and halves the variances
    assert q[1] == 1.0
    np.testing.assert_allclose(b._rows.state[0], [13.0, 0.0, 5.5, 0.25])


def test_input_baseline_stationary_stream_false_alarm_rate_near_alpha():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 4)) * [1, 10, 100, 0.1] + 5
    q = InputBaseline(np.full(4, 5.0), np.array([1, 100, 1e4, 0.01]), horizon=500).update(np.full(len(x), "e"), x)
    # Bonferroni over the features is conservative, the running estimates of mean and variance
    # make z heavier-tailed than normal: the two roughly cancel (0.0114 at alpha 0.01 here)
    assert 0.005 < (q < 0.01).mean() < 0.015


def test_input_baseline_keeps_entities_apart_and_batches_do_not_matter():
    rng = np.random.default_rng(1)
    ent = rng.choice(np.array(["a", "b", "c"], dtype=object), size=600)
    x = rng.normal(size=(600, 3)) + (ent == "b")[:, None] * 5.0  # b lives elsewhere: learned
    prior = (np.zeros(3), np.ones(3))
    whole = InputBaseline(*prior, horizon=50).update(ent, x)
    split = InputBaseline(*prior, horizon=50)
    parts = np.concatenate([split.update(ent[lo:lo + 37], x[lo:lo + 37]) for lo in range(0, 600, 37)])
    np.testing.assert_allclose(parts, whole)
    late = slice(300, None)
    assert (whole[late][ent[late] == "b"] < 0.01).mean() < 0.05  # b's own level is its normal by then
    spike = InputBaseline(*prior, horizon=50)
    spike.update(ent, x)
    assert spike.update(np.array(["a"], dtype=object), np.array([[0.0, 12.0, 0.0]]))[0] < 1e-20
    # far beyond: floored, never 0; a non-finite value counts as the mean
    far = spike.update(np.array(["a", "a"], dtype=object), np.array([[0.0, 1e6, 0.0], [np.nan, 0.0, 0.0]]))
    assert far[0] == np.finfo(np.float64).tiny and far[1] > 0.01


def test_input_baseline_floor_and_bad_input():
    b = InputBaseline(np.array([3.0]), np.array([0.0]), horizon=10)  # constant 3 in training
    b.update(np.full(200, "s"), np.full((200, 1), 3.0))
    # floor: 1% of max(3^2, 1) = 0.09, sd 0.3: a move of 0.15 is half an sd, not an infinite z
    assert b.update(np.array(["s"]), np.array([[3.15]]))[0] == pytest.approx(math.erfc(0.5 / math.sqrt(2)))
    assert b.update(np.array([], dtype=object), np.zeros((0, 1))).shape == (0,)
    with pytest.raises(ValueError, match="expected 1 features"):
        b.update(np.array(["s"]), np.zeros((1, 2)))
    for bad in [dict(prior_mean=[0.0], prior_var=[1.0], horizon=1), dict(prior_mean=[0.0], prior_var=[-1.0], horizon=5),
                dict(prior_mean=[0.0, 1.0], prior_var=[1.0], horizon=5), dict(prior_mean=[np.nan], prior_var=[1.0], horizon=5)]:
        with pytest.raises(ValueError):
            InputBaseline(**bad)


def test_input_baseline_judges_one_value_and_learns_another():
    # prior mean 0, variance 4, weight 0.5: judged 2 -> z = 1; the state learns from x = 6
    b = InputBaseline(np.zeros(1), np.array([4.0]), horizon=3)
    q = b.update(np.array(["a"]), np.array([[6.0]]), np.array([[2.0]]))
    assert q[0] == pytest.approx(math.erfc(1 / math.sqrt(2)))
    np.testing.assert_allclose(b._rows.state[0], [3.0, 0.5 * (4.0 + 0.5 * 36.0)])
    # a non-finite judged value counts as the mean
    assert b.update(np.array(["a"]), np.array([[3.0]]), np.array([[np.nan]]))[0] == 1.0
    with pytest.raises(ValueError, match="judged values"):
        b.update(np.array(["a", "a"]), np.zeros((2, 1)), np.zeros((1, 1)))


DAY_MS = 86_400_000


def test_change_memory_hand_computed():
    m = ChangeMemory(2, span_s=86_400)
    ent = np.array(["a"] * 4)
    t = np.array([0, 1000, 2000, 3000]) + 5 * DAY_MS  # one day's block
    d = np.array([[3.0, 0.0], [-2.0, 1.0], [-5.0, 0.5], [4.0, np.nan]])
    # nothing remembered at first; then |d| over the largest earlier |d| of the block, with d's sign
    np.testing.assert_allclose(m.excess(ent, t, d), [[3.0, 0.0], [0.0, 1.0], [-2.0, 0.0], [0.0, np.nan]])
    # the next day remembers the previous day (5 and 1), the day after the next forgets it
    nxt = m.excess(np.array(["a", "a"]), np.array([6 * DAY_MS, 6 * DAY_MS + 1]), np.array([[6.0, 0.5], [1.0, 0.0]]))
    np.testing.assert_allclose(nxt, [[1.0, 0.0], [0.0, 0.0]])
    later = m.excess(np.array(["a"]), np.array([8 * DAY_MS]), np.array([[2.0, 0.5]]))
    np.testing.assert_allclose(later, [[2.0, 0.5]])  # day 7 had no change: days 6 and earlier are gone


def test_change_memory_a_daily_step_stops_counting_a_larger_one_does_not():
    """Every day at 09:00 up by 5, at 17:00 back (noise 0.1, 5-minute steps, 4 days): after the
    first day the steps leave almost nothing over; on day 4 a jump of 9 keeps its excess of about 4."""
    n = 288 * 4
    i = np.arange(n)
    rng = np.random.default_rng(0)
    v = 5.0 * ((i % 288 >= 108) & (i % 288 < 204)) + rng.normal(0, 0.1, n)
    v[288 * 3 + 30:] += 9.0
    d = np.diff(v, prepend=v[0])[:, None]
    ex = ChangeMemory(1, span_s=86_400).excess(np.full(n, "s"), i * 300_000.0, d)[:, 0]
    assert ex[108] > 4.0  # the first step: nothing like it before
    steps = [k for k in range(288, n) if k % 288 in (108, 204)]
    assert np.abs(ex[steps]).max() < 0.5 and abs(d[steps[0], 0]) > 4.5
    assert ex[288 * 3 + 30] == pytest.approx(d[288 * 3 + 30, 0] - 5.0, abs=0.5)


def test_change_memory_keeps_entities_apart_and_batches_do_not_matter():
    rng = np.random.default_rng(3)
    ent = rng.choice(np.array(["a", "b", "c"], dtype=object), size=500)
    t = np.sort(rng.uniform(0, 4 * DAY_MS, 500))
    d = rng.normal(size=(500, 2)) * (1 + 4 * (ent == "b"))[:, None]
    whole = ChangeMemory(2, span_s=86_400).excess(ent, t, d)
    split = ChangeMemory(2, span_s=86_400)
    parts = np.concatenate([split.excess(ent[lo:lo + 41], t[lo:lo + 41], d[lo:lo + 41]) for lo in range(0, 500, 41)])
    np.testing.assert_allclose(parts, whole)
    alone = ChangeMemory(2, span_s=86_400).excess(ent[ent == "a"], t[ent == "a"], d[ent == "a"])
    np.testing.assert_allclose(whole[ent == "a"], alone)  # b's large changes never mask a's
    assert (np.abs(whole) <= np.abs(d)).all()


def test_change_memory_bad_input():
    for bad in [dict(n_features=0, span_s=1.0), dict(n_features=1, span_s=0.0), dict(n_features=1, span_s=np.inf)]:
        with pytest.raises(ValueError, match="change memory"):
            ChangeMemory(**bad)
    m = ChangeMemory(1, span_s=60)
    with pytest.raises(ValueError, match="expected 1 features"):
        m.excess(np.array(["a"]), np.array([0.0]), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="times of shape"):
        m.excess(np.array(["a"]), np.array([0.0, 1.0]), np.zeros((1, 1)))
    assert m.excess(np.array([], dtype=object), np.zeros(0), np.zeros((0, 1))).shape == (0, 1)


def test_range_view_hand_computed():
    """Training range [0, 1] and a constant 10; tolerance 0.05 of the width."""
    r = RangeView(np.array([0.0, 10.0]), np.array([1.0, 10.0]), tolerance=0.05)
    x = np.array([[0.5, 10.0],  # inside
                  [1.04, 10.0],  # above 1 but within 0.05: no break; the range becomes [0, 1.04]
                  [1.2, 10.0],  # 1.2 > 1.04 + 0.052: a break; [0, 1.2]
                  [1.22, 10.0],  # 1.22 < 1.2 + 0.06
                  [0.5, 10.1],  # the constant feature moves: width 0, any move breaks
                  [np.nan, np.nan],  # neither breaks nor moves the range
                  [-0.07, 10.0]])  # -0.07 < 0 - 0.05 * 1.22
    np.testing.assert_array_equal(r.update(np.array(["a"] * 7), x), [False, False, True, False, True, False, True])
    np.testing.assert_allclose(r._rows.state[r._rows.slot["a"]], [-0.07, 10.0, 1.22, 10.1, 7])  # (7 windows seen)
    # a new entity starts from the training range; tolerance 0 breaks on any new extreme
    z = RangeView(np.array([0.0]), np.array([1.0]), tolerance=0.0)
    np.testing.assert_array_equal(z.update(np.array(["b", "b", "b"]), np.array([[1.0], [1.01], [1.01]])),
                                  [False, True, False])


def test_range_view_a_level_shift_breaks_at_its_onset_a_slow_drift_never():
    rng = np.random.default_rng(4)
    train = rng.normal(0, 1, 5000)
    lo, hi = np.array([train.min()]), np.array([train.max()])
    shift = np.r_[rng.normal(0, 1, 500), rng.normal(8, 1, 500)]
    brk = RangeView(lo, hi, tolerance=0.05).update(np.full(1000, "s"), shift[:, None])
    # none before the shift, its onset, then at most a few of the shifted level's first new extremes
    assert not brk[:500].any() and brk[500] and brk.sum() <= 5
    drift = rng.normal(0, 0.1, 3000) + np.linspace(0, 6, 3000)  # steps of 0.002, far within the tolerance
    assert not RangeView(lo, hi, tolerance=0.05).update(np.full(3000, "s"), drift[:, None]).any()


def test_range_view_warmup_counts_breaks_from_an_entitys_nth_window_on():
    """Warm-up 3: the breaks of an entity's first three windows widen its range without counting."""
    x = np.array([[2.0], [3.0], [1.0], [5.0], [5.1], [-4.0]])
    ent = np.array(["a"] * 6)
    np.testing.assert_array_equal(RangeView(np.zeros(1), np.ones(1), tolerance=0.05).update(ent, x),
                                  [True, True, False, True, False, True])
    warm = RangeView(np.zeros(1), np.ones(1), tolerance=0.05, warmup=3)
    # windows 0-1 break but are young; [0, 3] by then, so 5 (window 3) breaks and counts; -4 too
    np.testing.assert_array_equal(warm.update(ent, x), [False, False, False, True, False, True])
    # each entity has its own count, and batches do not matter
    w2 = RangeView(np.zeros(1), np.ones(1), tolerance=0.05, warmup=2)
    both = np.array(["a", "b", "a", "b", "a", "b"])
    v = np.array([[2.0], [2.0], [4.0], [4.0], [9.0], [9.0]])
    np.testing.assert_array_equal(np.concatenate([w2.update(both[:3], v[:3]), w2.update(both[3:], v[3:])]),
                                  [False, False, False, False, True, True])


def test_range_view_keeps_entities_apart_and_batches_do_not_matter():
    rng = np.random.default_rng(5)
    ent = rng.choice(np.array(["a", "b", "c"], dtype=object), size=600)
    x = rng.standard_t(3, size=(600, 2)) * (1 + 9 * (ent == "b"))[:, None]
    whole = RangeView(np.full(2, -1.0), np.full(2, 1.0), tolerance=0.05).update(ent, x)
    split = RangeView(np.full(2, -1.0), np.full(2, 1.0), tolerance=0.05)
    parts = np.concatenate([split.update(ent[lo:lo + 37], x[lo:lo + 37]) for lo in range(0, 600, 37)])
    np.testing.assert_array_equal(parts, whole)
    alone = RangeView(np.full(2, -1.0), np.full(2, 1.0), tolerance=0.05).update(ent[ent == "a"], x[ent == "a"])
    np.testing.assert_array_equal(whole[ent == "a"], alone)  # b's wide values never widen a's range
    assert whole[ent == "b"].sum() > whole[ent == "a"].sum() > 0


def test_range_view_bad_input():
    for lo, hi, tol in [([0.0], [1.0], -0.1), ([0.0], [1.0], np.inf), ([2.0], [1.0], 0.1), ([np.nan], [1.0], 0.1),
                        ([0.0, 1.0], [1.0], 0.1), ([], [], 0.1)]:
        with pytest.raises(ValueError, match="range view"):
            RangeView(np.array(lo), np.array(hi), tolerance=tol)
    with pytest.raises(ValueError, match="warmup >= 0"):
        RangeView(np.zeros(1), np.ones(1), tolerance=0.05, warmup=-1)
    r = RangeView(np.zeros(1), np.ones(1), tolerance=0.05)
    with pytest.raises(ValueError, match="expected 1 features"):
        r.update(np.array(["a"]), np.zeros((1, 2)))
    assert r.update(np.array([], dtype=object), np.zeros((0, 1))).shape == (0,)


def test_transition_view_levels_and_hand_computed():
    """Training range [0, 10] in 5 levels of 2 (1-5), 0 below it, 6 above; the top value in level 5."""
    t = TransitionView(np.array([0.0]), np.array([10.0]), levels=5)
    np.testing.assert_array_equal(t.level(np.array([-0.1, 0.0, 1.99, 2.0, 9.99, 10.0, 10.01])), [0, 1, 1, 2, 5, 5, 6])
    prev = np.array([[1.0], [1.0], [1.5], [9.0], [9.5], [1.0], [np.nan], [1.0], [11.0]])
    new = np.array([[1.0], [1.5], [9.0], [9.5], [1.0], [9.0], [9.0], [np.inf], [12.0]])
    # steps 1->1 (new), 1->1, 1->5 (new), 5->5 (new), 5->1 (new), 1->5, then a NaN and an inf (neither counts
    # nor teaches), then 6->6 above the range (new)
    np.testing.assert_array_equal(t.update(np.array(["a"] * 9), new, prev),
                                  [True, False, True, True, True, False, False, False, True])
    row = t._rows.state[t._rows.slot["a"]]
    made = np.flatnonzero(row[:-1])  # cells (from * 7 + to): 1->1, 1->5, 5->5, 5->1, 6->6
    np.testing.assert_array_equal(made, sorted([1 * 7 + 1, 1 * 7 + 5, 5 * 7 + 5, 5 * 7 + 1, 6 * 7 + 6]))
    assert row[-1] == 9  # every window counts as shown
    # another entity knows none of a's steps; a feature constant in training: its value one level, others
    # below or above
    c = TransitionView(np.array([0.0, 3.0]), np.array([10.0, 3.0]), levels=5)
    np.testing.assert_array_equal(c.level(np.array([[5.0, 2.9], [5.0, 3.0], [5.0, 3.1]]))[:, 1], [0, 1, 6])
    x = np.array([[1.0, 3.0], [1.0, 3.0], [1.0, 3.1]])
    np.testing.assert_array_equal(c.update(np.array(["b"] * 3), x, x[[0, 0, 1]]), [True, False, True])


def test_transition_view_warmup_entities_and_batches():
    rng = np.random.default_rng(6)
    ent = rng.choice(np.array(["a", "b", "c"], dtype=object), size=900)
    v = rng.uniform(0, 10, size=(901, 1))
    new, prev = v[1:], v[:-1]
    whole = TransitionView(np.zeros(1), np.full(1, 10.0), levels=4).update(ent, new, prev)
    split = TransitionView(np.zeros(1), np.full(1, 10.0), levels=4)
    parts = np.concatenate([split.update(ent[lo:lo + 41], new[lo:lo + 41], prev[lo:lo + 41])
                            for lo in range(0, 900, 41)])
    np.testing.assert_array_equal(parts, whole)
    # 16 steps inside the range, each new once per entity: 3 x 16 at most, all made early
    assert 0 < whole.sum() <= 48 and not whole[600:].any()
    alone = TransitionView(np.zeros(1), np.full(1, 10.0), levels=4).update(ent[ent == "a"], new[ent == "a"],
                                                                               prev[ent == "a"])
    np.testing.assert_array_equal(whole[ent == "a"], alone)
    # a warm-up of 100 windows: an entity's new steps before its 100th window teach without counting
    warm = TransitionView(np.zeros(1), np.full(1, 10.0), levels=4, warmup=100).update(ent, new, prev)
    nth = np.array([np.sum(ent[:i] == e) for i, e in enumerate(ent)])
    np.testing.assert_array_equal(warm, whole & (nth >= 100))
    assert not warm.any()  # every step was made in the first 100 windows of each entity
    # a level shift past the range after the warm-up: its onset is new, then one step up there
    tail = np.array([[5.0], [5.0], [12.0], [12.0], [12.0]])
    w2 = TransitionView(np.zeros(1), np.full(1, 10.0), levels=4, warmup=2)
    np.testing.assert_array_equal(w2.update(np.array(["s"] * 5), tail, np.r_[[[5.0]], tail[:-1]]),
                                  [False, False, True, True, False])


def test_transition_view_bad_input():
    for lo, hi, levels in [([0.0], [1.0], 0), ([2.0], [1.0], 4), ([np.nan], [1.0], 4), ([0.0, 1.0], [1.0], 4),
                           ([], [], 4)]:
        with pytest.raises(ValueError, match="transition view"):
            TransitionView(np.array(lo), np.array(hi), levels=levels)
    with pytest.raises(ValueError, match="warmup >= 0"):
        TransitionView(np.zeros(1), np.ones(1), levels=4, warmup=-1)
    t = TransitionView(np.zeros(1), np.ones(1), levels=4)
    with pytest.raises(ValueError, match="expected 1 features"):
        t.update(np.array(["a"]), np.zeros((1, 2)), np.zeros((1, 2)))
    assert t.update(np.array([], dtype=object), np.zeros((0, 1)), np.zeros((0, 1))).shape == (0,)


def test_seasonal_baseline_phases_and_hand_computed():
    b = SeasonalBaseline(np.array([10.0]), np.array([4.0]), period_s=100, buckets=4, horizon=3)
    # 100 s in 4 phases of 25 s; the period wraps
    np.testing.assert_array_equal(b.phase(np.array([0, 24_999, 25_000, 99_999, 100_000, 180_000])), [0, 0, 1, 3, 0, 3])
    ent = np.array(["a", "a", "a"], dtype=object)
    q = b.update(ent, np.array([0, 25_000, 100_000]), np.array([[16.0], [16.0], [13.0]]))
    # phase 0 from the prior: z = (16 - 10) / 2 = 3; its mean moves halfway (2 / (3 + 1)) to 13,
    # the pooled variance by 2 / (3 * 4 + 1) towards 36: 4 + 2/13 * 32 = 116/13
    assert q[0] == pytest.approx(math.erfc(3 / math.sqrt(2)))
    # phase 1: its own mean (still the prior's 10), the pooled, wider, spread
    assert q[1] == pytest.approx(math.erfc(6 / math.sqrt(116 / 13) / math.sqrt(2)))
    # phase 0 again (next period): on its mean, 13
    assert q[2] == 1.0
    var = 116 / 13 + 2 / 13 * (36 - 116 / 13)
    var = var + 2 / 13 * (0 - var)
    np.testing.assert_allclose(b._rows.state[0], [var])
    assert len(b) == 1 and len(b._means.slot) == 2  # one entity, two phases seen


def test_seasonal_baseline_sees_a_value_normal_at_another_time_of_day():
    """A day/night level (10 by day, 0 by night): a 10 at night is a contextual anomaly that a
    baseline over all recent values cannot tell from the daytime 10s."""
    rng = np.random.default_rng(0)
    t = np.arange(0, 20 * 86_400, 600) * 1000  # 20 days, a value every 10 minutes
    day = ((t // 1000) % 86_400) < 43_200
    x = (10.0 * day + rng.normal(0, 0.5, len(t)))[:, None]
    ent = np.full(len(t), "s", dtype=object)
    prior = (np.array([5.0]), np.array([25.0]))
    seasonal = SeasonalBaseline(*prior, period_s=86_400, buckets=24, horizon=30)
    plain = InputBaseline(*prior, horizon=1000)
    q_season = seasonal.update(ent, t, x)
    plain.update(ent, x)
    late = slice(len(t) // 2, None)  # once a week of each hour is learned, a normal day rarely surprises
    assert (q_season[late] < 0.01).mean() < 0.02
    night = np.array([(20 * 86_400 + 50_000) * 1000])  # the next day, at night (~13:53 UTC: phase 13 of 24)
    assert seasonal.update(np.array(["s"], dtype=object), night, np.array([[10.0]]))[0] < 1e-6
    assert plain.update(np.array(["s"], dtype=object), np.array([[10.0]]))[0] > 0.1


@pytest.mark.parametrize("clip", [0.0, 3.0])
def test_seasonal_baseline_a_spike_echoes_a_period_later_unless_clipped(clip):
    rng = np.random.default_rng(3)
    t = np.arange(0, 6 * 86_400, 300) * 1000  # 6 days, a value every 5 minutes
    x = (np.sin(2 * np.pi * (t / 1000) / 86_400) + rng.normal(0, 0.05, len(t)))[:, None]
    spike = (t >= 4 * 86_400_000 + 3 * 3_600_000) & (t < 4 * 86_400_000 + 3 * 3_600_000 + 3_000_000)
    x[spike] += 5.0  # 10 rows at 03:00 on day 5
    b = SeasonalBaseline(np.array([0.0]), np.array([0.5]), period_s=86_400, buckets=24, horizon=30, clip=clip)
    q = b.update(np.full(len(t), "s", dtype=object), t, x)
    assert q[spike][0] < 1e-20
    # the next day at 03:00 is normal again: unclipped, the spike taught 03:00 a higher mean and
    # the normal values look low (the echo, README Limitations); clipped, they are judged normal
    next_day = np.flatnonzero(spike) + 288
    if clip:
        assert (q[next_day] > 1e-3).all()
    else:
        assert (q[next_day] < 1e-3).any()


def test_seasonal_baseline_keeps_entities_apart_and_batches_do_not_matter():
    rng = np.random.default_rng(2)
    ent = rng.choice(np.array(["a", "b"], dtype=object), size=500)
    t = np.sort(rng.integers(0, 10 * 3_600_000, size=500))
    x = rng.normal(size=(500, 2)) + (ent == "b")[:, None] * 3.0
    make = lambda: SeasonalBaseline(np.zeros(2), np.ones(2), period_s=3600, buckets=6, horizon=20)  # noqa: E731
    whole = make().update(ent, t, x)
    split = make()
    parts = np.concatenate([split.update(ent[lo:lo + 41], t[lo:lo + 41], x[lo:lo + 41]) for lo in range(0, 500, 41)])
    np.testing.assert_allclose(parts, whole)
    assert len(split) == 2 and len(split._means.slot) == 12  # 2 entities x 6 phases
    with pytest.raises(ValueError, match="expected 2 features"):
        split.update(ent[:1], t[:1], x[:1, :1])
    for bad in [dict(period_s=0, buckets=4, horizon=5), dict(period_s=60, buckets=0, horizon=5),
                dict(period_s=60, buckets=4, horizon=1), dict(period_s=60, buckets=4, horizon=5, clip=-1)]:
        with pytest.raises(ValueError):
            SeasonalBaseline(np.zeros(1), np.ones(1), **bad)


def test_alert_cooldown_hand_computed():
    c = AlertCooldown(2)
    ent = np.array(["a"] * 6)
    sig = np.array([0.5, 0.001, 0.002, 0.0005, 0.003, 0.004])
    # 0.5: first window; 0.001 < 0.5: new; 0.002 >= 0.001 (1 back): repeat; 0.0005 < both: new
    # (an escalation); 0.003 >= 0.0005: repeat; 0.004: the last two are 0.0005 and 0.003: repeat
    assert c.update(ent, sig).tolist() == [False, False, True, False, True, True]
    # 0.002 one later: the last two are 0.003 and 0.004, so 0.0005 has left the cooldown: new
    assert c.update(np.array(["a"]), np.array([0.002])).tolist() == [False]
    # ties repeat: an equally significant window is the same incident
    assert c.update(np.array(["a"]), np.array([0.002])).tolist() == [True]
    assert len(c) == 1 and c.update(np.array([], dtype=object), np.zeros(0)).shape == (0,)
    with pytest.raises(ValueError):
        AlertCooldown(0)


def test_incident_gap_hand_computed():
    c = AlertCooldown(0, gap=2, alpha=0.01)
    ent = np.array(["a"] * 7)
    sig = np.array([0.5, 0.001, 0.0001, 0.5, 0.5, 0.005, 0.5])
    # 0.5: first; 0.001: significant, none before: alerts; 0.0001 (worse, 1 after a significant
    # one): repeats all the same (no escalation alert); 0.5, 0.5: 1 and 2 windows after it: inside
    # the gap; 0.005: 3 after the last significant one: a new incident; 0.5: inside its gap
    assert c.update(ent, sig).tolist() == [False, False, True, True, True, False, True]
    # the gap counts windows, significant or not: 0.009 two windows after 0.005 repeats
    assert c.update(ent[:1], np.array([0.009])).tolist() == [True]
    # a significance of exactly alpha does not alert, so it does not open an incident either
    d = AlertCooldown(0, gap=5, alpha=0.01)
    assert d.update(ent[:2], np.array([0.01, 0.002])).tolist() == [False, False]
    # with a cooldown too, a window repeats by either rule: 0.004 is 4 windows after the last
    # significant one (past the gap of 2) but the cooldown of 4 holds the more significant 0.001
    both = AlertCooldown(4, gap=2, alpha=0.01)
    assert both.update(ent[:5], np.array([0.001, 0.5, 0.5, 0.5, 0.004])).tolist() == [False, True, True, True, True]
    for bad in ({"gap": -1}, {"gap": 3}, {"gap": 3, "alpha": 1.0}):  # no alpha: no significance to group on
        with pytest.raises(ValueError):
            AlertCooldown(0, **bad)


def test_incident_gap_keeps_entities_apart_and_batches_do_not_matter():
    rng = np.random.default_rng(4)
    ent = rng.choice(np.array(["a", "b", "c"], dtype=object), size=600)
    sig = rng.uniform(size=600) ** 4
    whole = AlertCooldown(0, gap=6, alpha=0.05).update(ent, sig)
    split = AlertCooldown(0, gap=6, alpha=0.05)
    parts = np.concatenate([split.update(ent[lo:lo + 17], sig[lo:lo + 17]) for lo in range(0, 600, 17)])
    np.testing.assert_array_equal(parts, whole)
    # by the definition, one entity at a time: a repeat iff one of its previous 6 was significant
    for e in "abc":
        s = sig[ent == e]
        expect = [bool((s[max(0, i - 6):i] < 0.05).any()) for i in range(len(s))]
        assert whole[ent == e].tolist() == expect
    alerts = (sig < 0.05) & ~whole
    assert 0 < alerts.sum() < (sig < 0.05).sum()


def test_alert_cooldown_keeps_entities_apart_and_batches_do_not_matter():
    rng = np.random.default_rng(3)
    ent = rng.choice(np.array(["a", "b", "c"], dtype=object), size=500)
    sig = rng.uniform(size=500) ** 3
    whole = AlertCooldown(7).update(ent, sig)
    split = AlertCooldown(7)
    parts = np.concatenate([split.update(ent[lo:lo + 23], sig[lo:lo + 23]) for lo in range(0, 500, 23)])
    np.testing.assert_array_equal(parts, whole)
    # the same, one entity at a time, by the definition: not a repeat iff below its last 7
    for e in "abc":
        s = sig[ent == e]
        expect = [bool(i and s[max(0, i - 7):i].min() <= s[i]) for i in range(len(s))]
        assert whole[ent == e].tolist() == expect
    assert 0 < (~whole).sum() < 500  # some windows open or escalate an incident, others repeat one


def test_entity_groups_steps_and_views_fed_them():
    """A batch grouped once (``EntityGroups``): step r holds each entity's r-th window, in stream
    order; every view gives the same answers fed the groups as fed the keys."""
    from streamer.calibrate import EntityGroups

    ent = np.array(["b", "a", "b", "c", "b", "a"], dtype=object)
    g = EntityGroups(ent)
    assert g.keys == ["a", "b", "c"] and len(g) == 6
    assert [s.tolist() for s in g.steps] == [[0, 1, 3], [2, 5], [4]]
    assert EntityGroups.of(g) is g
    assert len(EntityGroups(np.array([], dtype=object))) == 0 and EntityGroups(np.array([])).steps == []
    rng = np.random.default_rng(4)
    ent = rng.choice(np.array(["x", "y", "z"], dtype=object), size=300)
    t = np.sort(rng.integers(0, 5 * 3_600_000, size=300))
    x = rng.normal(size=(300, 2))
    s = rng.gamma(2.0, 1.0, size=300)
    cal = _stream(rng, 200)
    groups = EntityGroups(ent)
    for make, call in [
        (lambda: EntityBaseline(cal, horizon=50, short=3), lambda v, e: v.update(e, s)),
        (lambda: InputBaseline(np.zeros(2), np.ones(2), horizon=30), lambda v, e: v.update(e, x)),
        (lambda: SeasonalBaseline(np.zeros(2), np.ones(2), period_s=3600, buckets=4, horizon=20),
         lambda v, e: v.update(e, t, x)),
        (lambda: ChangeMemory(2, span_s=3600), lambda v, e: v.excess(e, t, x)),
        (lambda: AlertCooldown(5, gap=3, alpha=0.1), lambda v, e: v.update(e, s / 10)),
    ]:
        np.testing.assert_array_equal(call(make(), groups), call(make(), ent))
