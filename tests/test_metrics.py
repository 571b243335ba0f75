"""Tests for streamer.metrics: hand-computed cases, agreement with scikit-learn, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamer import metrics as m

skm = pytest.importorskip("sklearn.metrics")

# The running example: two negatives, two positives, one positive (0.35) ranked below a negative.
Y = [0, 0, 1, 1]
S = [0.1, 0.4, 0.35, 0.8]


# ---------------------------------------------------------------------------------------- ranges


def test_ranges_hand():
    assert m.ranges([0, 1, 1, 0, 1]) == [(1, 3), (4, 5)]
    assert m.ranges([1, 1, 0, 0, 1, 1, 1]) == [(0, 2), (4, 7)]
    assert m.ranges([0, 0, 0]) == []
    assert m.ranges([]) == []
    assert m.ranges(np.array([True, False, True])) == [(0, 1), (2, 3)]


# --------------------------------------------------------------------------------------- roc_auc


def test_roc_auc_hand():
    # Pairs (positive, negative): 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4 -> 3 of 4 ordered right.
    assert m.roc_auc(Y, S) == pytest.approx(0.75, abs=1e-12)


def test_roc_auc_hand_ties_count_half():
    # Positives 0.5 and 0.9, negatives 0.5 and 0.2: pairs 0.5~0.5 (1/2), 0.5>0.2, 0.9>0.5, 0.9>0.2
    # -> 3.5 / 4.
    assert m.roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875, abs=1e-12)
    # All scores equal: no information, exactly one half.
    assert m.roc_auc([0, 1, 0, 1], [0.3] * 4) == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = 500
    y = (rng.random(n) < 0.2).astype(int)
    # Rounding to one decimal makes many ties, within and across classes.
    s = np.round(rng.random(n) + 0.3 * y, 1)
    assert m.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    s2 = rng.normal(size=n) + y
    assert m.roc_auc(y, s2) == pytest.approx(skm.roc_auc_score(y, s2), abs=1e-12)


# ---------------------------------------------------------------------------------------- pr_auc


def test_pr_auc_hand():
    # Thresholds high to low: 0.8 (P 1, R 1/2), 0.4 (P 1/2, R 1/2), 0.35 (P 2/3, R 1),
    # 0.1 (P 1/2, R 1). AP = 1/2 * 1 + 0 * 1/2 + 1/2 * 2/3 + 0 = 5/6.
    assert m.pr_auc(Y, S) == pytest.approx(5 / 6, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_pr_auc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(100 + seed)
    n = 400
    y = (rng.random(n) < 0.1).astype(int)
    s = np.round(rng.random(n) + 0.4 * y, 2)
    assert m.pr_auc(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)


# ---------------------------------------------------------------------------------------- curves


@pytest.mark.parametrize("seed", range(3))
def test_curves_match_sklearn(seed):
    rng = np.random.default_rng(200 + seed)
    n = 300
    y = (rng.random(n) < 0.3).astype(int)
    s = np.round(rng.random(n) + 0.2 * y, 1)
    fpr, tpr, precision, recall = m.curves(y, s)
    sk_fpr, sk_tpr, _ = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, sk_tpr, atol=1e-12)
    sk_p, sk_r, _ = skm.precision_recall_curve(y, s)
    np.testing.assert_allclose(precision, sk_p[::-1], atol=1e-12)
    np.testing.assert_allclose(recall, sk_r[::-1], atol=1e-12)
    # The trapezoidal area under our ROC points is the AUC.
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(m.roc_auc(y, s), abs=1e-12)


def test_curves_hand():
    fpr, tpr, precision, recall = m.curves(Y, S)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(precision, [1, 1, 0.5, 2 / 3, 0.5])
    np.testing.assert_allclose(recall, [0, 0.5, 0.5, 1, 1])


# --------------------------------------------------------------------------------------- best_f1


def test_best_f1_hand():
    # Threshold 0.8: TP 1 FP 0 FN 1 -> 2/3; 0.4: TP 1 FP 1 FN 1 -> 1/2;
    # 0.35: TP 2 FP 1 FN 0 -> 4/5; 0.1: TP 2 FP 2 -> 2/3. Best 0.8 at threshold 0.35.
    f1, thr = m.best_f1(Y, S)
    assert f1 == pytest.approx(0.8, abs=1e-12)
    assert thr == 0.35


def test_best_f1_ties_pick_highest_threshold():
    # Threshold 0.9: TP 1 FP 0 FN 1 -> 2/3; 0.5: TP 2 FP 2 FN 0 -> 2/3; 0.1: TP 2 FP 3 -> 4/7.
    f1, thr = m.best_f1([1, 0, 1, 0, 0], [0.9, 0.5, 0.5, 0.5, 0.1])
    assert f1 == pytest.approx(2 / 3, abs=1e-12)
    assert thr == 0.9


@pytest.mark.parametrize("seed", range(4))
def test_best_f1_matches_brute_force(seed):
    rng = np.random.default_rng(300 + seed)
    n = 200
    y = (rng.random(n) < 0.15).astype(int)
    s = np.round(rng.random(n) + 0.3 * y, 2)
    brute = max(skm.f1_score(y, s >= t) for t in np.unique(s))
    f1, thr = m.best_f1(y, s)
    assert f1 == pytest.approx(brute, abs=1e-12)
    assert skm.f1_score(y, s >= thr) == pytest.approx(f1, abs=1e-12)


def test_best_f1_without_positives_and_empty():
    assert m.best_f1([0, 0, 0], [0.2, 0.7, 0.1]) == (0.0, 0.7)
    assert m.best_f1([1, 1], [0.2, 0.7]) == (1.0, 0.2)
    with pytest.raises(ValueError):
        m.best_f1([], [])


# ---------------------------------------------------------------------------- threshold_metrics


def test_threshold_metrics_hand():
    # TP 1 (row 2), FP 1 (row 0), FN 2 (rows 3, 4), TN 2; negatives 3.
    out = m.threshold_metrics([0, 0, 1, 1, 1, 0], [1, 0, 1, 0, 0, 0])
    assert out["precision"] == pytest.approx(0.5)
    assert out["recall"] == pytest.approx(1 / 3)
    assert out["f1"] == pytest.approx(2 / (2 + 1 + 2))
    assert out["false_alarm_rate"] == pytest.approx(1 / 3)


def test_threshold_metrics_matches_sklearn():
    rng = np.random.default_rng(7)
    y = (rng.random(300) < 0.2).astype(int)
    a = rng.random(300) < 0.25
    out = m.threshold_metrics(y, a)
    assert out["precision"] == pytest.approx(skm.precision_score(y, a))
    assert out["recall"] == pytest.approx(skm.recall_score(y, a))
    assert out["f1"] == pytest.approx(skm.f1_score(y, a))
    tn, fp, fn, tp = skm.confusion_matrix(y, a).ravel()
    assert out["false_alarm_rate"] == pytest.approx(fp / (fp + tn))


def test_threshold_metrics_empty_denominators_are_zero():
    no_alert = m.threshold_metrics([0, 1, 0], [0, 0, 0])
    assert no_alert == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "false_alarm_rate": 0.0}
    no_pos = m.threshold_metrics([0, 0], [1, 0])
    assert no_pos["recall"] == 0.0 and no_pos["f1"] == 0.0 and no_pos["false_alarm_rate"] == 0.5
    all_pos = m.threshold_metrics([1, 1], [1, 0])
    assert all_pos["false_alarm_rate"] == 0.0 and all_pos["precision"] == 1.0
    assert not any(math.isnan(v) for v in (*no_alert.values(), *no_pos.values(), *all_pos.values()))


# ---------------------------------------------------------------------------------- event_recall


def test_event_recall_hand():
    y = [0, 1, 1, 0, 0, 1, 0, 1, 1, 1]
    a = [0, 0, 1, 0, 1, 0, 0, 0, 0, 1]
    # Ranges [1,3) hit at 2, [5,6) missed (the alert at 4 is outside), [7,10) hit at 9 -> 2/3.
    assert m.event_recall(y, a) == pytest.approx(2 / 3)
    assert m.event_recall(y, np.zeros(10, bool)) == 0.0
    assert m.event_recall(y, np.ones(10, bool)) == 1.0
    assert m.event_recall([0, 0, 0], [1, 1, 1]) == 0.0  # no anomaly range: 0.0 by convention


# ------------------------------------------------------------------------------- single class


def test_single_class_gives_nan_aucs():
    s = [0.1, 0.5, 0.9]
    for y in ([0, 0, 0], [1, 1, 1]):
        assert math.isnan(m.roc_auc(y, s))
        assert math.isnan(m.pr_auc(y, s))
    fpr, tpr, precision, recall = m.curves([0, 0, 0], s)
    assert np.isnan(tpr).all() and np.isnan(recall).all()
    np.testing.assert_allclose(fpr, [0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(precision, [1, 0, 0, 0])
    fpr, tpr, _, _ = m.curves([1, 1, 1], s)
    assert np.isnan(fpr).all()
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 1])
    assert math.isnan(m.roc_auc([], []))


# ------------------------------------------------------------------------------------ summarize


def test_summarize_hand():
    alert = [False, True, False, True]
    out = m.summarize(Y, S, alert, alpha=0.01)
    assert set(out) == {"roc_auc", "pr_auc", "best_f1", "f1", "precision", "recall",
                        "false_alarm_rate", "alpha", "event_recall", "n", "n_anomalies"}
    assert out["roc_auc"] == pytest.approx(0.75)
    assert out["pr_auc"] == pytest.approx(5 / 6)
    assert out["best_f1"] == pytest.approx(0.8)
    # Alerts on rows 1 (negative) and 3 (positive): TP 1 FP 1 FN 1.
    assert out["precision"] == pytest.approx(0.5)
    assert out["recall"] == pytest.approx(0.5)
    assert out["f1"] == pytest.approx(0.5)
    assert out["false_alarm_rate"] == pytest.approx(0.5)
    assert out["event_recall"] == pytest.approx(1.0)  # one range [2, 4), hit at 3
    assert out["alpha"] == 0.01 and out["n"] == 4 and out["n_anomalies"] == 2
    assert isinstance(out["n"], int) and isinstance(out["n_anomalies"], int)


def test_summarize_single_class():
    out = m.summarize([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4], [0, 0, 0, 1], alpha=0.05)
    assert math.isnan(out["roc_auc"]) and math.isnan(out["pr_auc"])
    assert out["best_f1"] == 0.0 and out["recall"] == 0.0 and out["event_recall"] == 0.0
    assert out["false_alarm_rate"] == pytest.approx(0.25)
    assert out["n_anomalies"] == 0


# ------------------------------------------------------------------------------------ validation


def test_invalid_inputs():
    with pytest.raises(ValueError):
        m.roc_auc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError):
        m.roc_auc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError):
        m.pr_auc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError):
        m.threshold_metrics([0, 1], [True])
    with pytest.raises(ValueError):
        m.ranges([[0, 1]])
