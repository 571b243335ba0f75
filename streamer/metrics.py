"""Point-wise evaluation metrics for anomaly scores and alerts, without point adjustment.

Every function takes labels ``y`` (1 = anomalous row, 0 = normal) and either scores ``s`` (higher
means more anomalous) or boolean alerts. Rows are scored one by one: an alert anywhere in a labeled
range is *not* spread over the whole range (no "point adjustment"), because that inflates F1 to
near 1 for almost any detector. :func:`event_recall` is the one range-level view, and it only
counts whether a range was hit at all.

Conventions
-----------
* Threshold metrics alert when ``s >= threshold``.
* Ratios whose denominator is empty (no alerts, no positives, no negatives) are ``0.0``, not NaN,
  so that summaries of a quiet stream stay finite.
* Ranking metrics (:func:`roc_auc`, :func:`pr_auc`) are undefined when ``y`` holds only one class;
  they return ``nan`` then, rather than raising, so that a per-file loop does not have to special
  case anomaly-free files (``np.nanmean`` skips them).

The arithmetic matches ``sklearn.metrics`` (``roc_auc_score``, ``average_precision_score``,
``roc_curve``, ``precision_recall_curve``) including ties, but only numpy is used here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "best_f1",
    "curves",
    "event_recall",
    "pr_auc",
    "ranges",
    "roc_auc",
    "summarize",
    "threshold_metrics",
]


def _labels(y: Any) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if y.dtype == bool:
        return y.astype(np.int64)
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    return y.astype(np.int64)


def _scores(s: Any, n: int) -> np.ndarray:
    s = np.asarray(s, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"scores must have shape ({n},), got {s.shape}")
    # NaN has no place in an ordering; refuse it rather than let it sort to one end silently.
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return s


def _alerts(alert: Any, n: int) -> np.ndarray:
    a = np.asarray(alert)
    if a.shape != (n,):
        raise ValueError(f"alerts must have shape ({n},), got {a.shape}")
    return a.astype(bool)


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else 0.0


def _sweep(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative TP and FP counts at each distinct threshold, highest threshold first.

    Returns ``(thresholds, tps, fps)`` where ``tps[k]`` / ``fps[k]`` count rows with
    ``s >= thresholds[k]``. Tied scores share one threshold, so ties move TP and FP together (this
    is what makes the curves and AUCs tie-aware).
    """
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    y_sorted = y[order]
    # Last position of each run of equal scores: the state after admitting the whole tie group.
    last = np.flatnonzero(np.diff(s_sorted) != 0)
    last = np.append(last, len(s_sorted) - 1)
    tps = np.cumsum(y_sorted)[last]
    fps = (last + 1) - tps
    return s_sorted[last], tps, fps


def ranges(y: Any) -> list[tuple[int, int]]:
    """Contiguous runs of 1 in ``y`` as half-open index ranges.

    Parameters
    ----------
    y : array_like of 0/1
        Labels.

    Returns
    -------
    list of (start, end_exclusive)
        ``y[start:end_exclusive]`` is all ones and cannot be extended on either side.

    Examples
    --------
    >>> ranges([0, 1, 1, 0, 1])
    [(1, 3), (4, 5)]
    """
    y = _labels(y)
    # Padding with zeros turns every run boundary into a +1 / -1 step of the difference.
    d = np.diff(np.concatenate(([0], y, [0])))
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1)
    return [(int(a), int(b)) for a, b in zip(starts, ends)]


def roc_auc(y: Any, s: Any) -> float:
    """Area under the ROC curve, ties counted as one half.

    Computed as the Mann-Whitney statistic with average ranks, which equals the trapezoidal area
    under the tie-aware ROC curve (``sklearn.metrics.roc_auc_score``).

    Parameters
    ----------
    y : array_like of 0/1
        Labels.
    s : array_like of float
        Scores, higher = more anomalous.

    Returns
    -------
    float
        AUC in [0, 1]; ``nan`` when ``y`` holds only one class (or is empty).
    """
    y = _labels(y)
    s = _scores(s, len(y))
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    # Average rank (1-based) of each tie group: mean of the first and last rank in the group.
    bounds = np.flatnonzero(np.concatenate(([True], np.diff(s_sorted) != 0, [True])))
    first, stop = bounds[:-1], bounds[1:]
    group_rank = (first + 1 + stop) / 2.0
    ranks = np.empty(len(s), dtype=np.float64)
    ranks[order] = np.repeat(group_rank, stop - first)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def pr_auc(y: Any, s: Any) -> float:
    """Average precision: ``sum_k (R_k - R_{k-1}) * P_k`` over distinct thresholds.

    This is the step-wise (not interpolated) area under the precision-recall curve, equal to
    ``sklearn.metrics.average_precision_score``.

    Parameters
    ----------
    y : array_like of 0/1
        Labels.
    s : array_like of float
        Scores, higher = more anomalous.

    Returns
    -------
    float
        Average precision in [0, 1]; ``nan`` when ``y`` holds only one class (or is empty). With
        only positives it would trivially be 1, and with none it is undefined; both are reported
        as ``nan`` so that ranking metrics are consistently "not applicable" on one-class data.
    """
    y = _labels(y)
    s = _scores(s, len(y))
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        return float("nan")
    _, tps, fps = _sweep(y, s)
    precision = tps / (tps + fps)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.concatenate(([0.0], recall))) * precision))


def curves(y: Any, s: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ROC and precision-recall curves for plotting.

    Parameters
    ----------
    y : array_like of 0/1
        Labels.
    s : array_like of float
        Scores, higher = more anomalous.

    Returns
    -------
    fpr, tpr : ndarray
        ROC points, starting at (0, 0) (no alert) and then one point per distinct score from the
        highest down, ending at (1, 1). Same points as ``sklearn.metrics.roc_curve`` with
        ``drop_intermediate=False``.
    precision, recall : ndarray
        PR points, one per distinct score from the highest down (recall non-decreasing), with the
        conventional (precision 1, recall 0) point prepended. Same points as
        ``sklearn.metrics.precision_recall_curve`` (default arguments), in reverse order.

    Notes
    -----
    With no positives ``tpr`` and ``recall`` are ``nan``; with no negatives ``fpr`` is ``nan``
    (a rate over an empty class). ``precision`` is always defined since each point has at least
    one alert.
    """
    y = _labels(y)
    s = _scores(s, len(y))
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if len(y) == 0:
        empty = np.zeros(0)
        return empty, empty, empty, empty
    _, tps, fps = _sweep(y, s)
    tps0 = np.concatenate(([0], tps)).astype(np.float64)
    fps0 = np.concatenate(([0], fps)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        fpr = fps0 / n_neg if n_neg else np.full(len(fps0), np.nan)
        tpr = tps0 / n_pos if n_pos else np.full(len(tps0), np.nan)
        precision = np.concatenate(([1.0], tps / (tps + fps)))
        recall = tpr.copy()
    return fpr, tpr, precision, recall


def best_f1(y: Any, s: Any) -> tuple[float, float]:
    """Best point-wise F1 over all distinct score thresholds (alert when ``s >= threshold``).

    Parameters
    ----------
    y : array_like of 0/1
        Labels.
    s : array_like of float
        Scores, higher = more anomalous.

    Returns
    -------
    f1 : float
        The largest F1 reached.
    threshold : float
        The score value that reaches it. Among equally good thresholds the highest one (fewest
        alerts) is returned. With no positives every threshold gives F1 0.0 and the highest score
        is returned.

    Raises
    ------
    ValueError
        On empty input (no threshold exists).
    """
    y = _labels(y)
    s = _scores(s, len(y))
    if len(y) == 0:
        raise ValueError("best_f1 needs at least one row")
    n_pos = int(y.sum())
    thresholds, tps, fps = _sweep(y, s)
    # F1 = 2 TP / (2 TP + FP + FN); the denominator is >= 1 because every threshold alerts once.
    f1 = 2.0 * tps / (2.0 * tps + fps + (n_pos - tps))
    k = int(np.argmax(f1))  # first maximum = highest threshold, as thresholds run downwards
    return float(f1[k]), float(thresholds[k])


def threshold_metrics(y: Any, alert: Any) -> dict[str, float]:
    """Precision, recall, F1 and false-alarm rate of a fixed set of alerts.

    Parameters
    ----------
    y : array_like of 0/1
        Labels.
    alert : array_like of bool
        True where an alert fired.

    Returns
    -------
    dict
        ``precision`` (TP / alerts), ``recall`` (TP / positives), ``f1``, ``false_alarm_rate``
        (FP / negatives). Each is 0.0 when its denominator is empty.
    """
    y = _labels(y)
    a = _alerts(alert, len(y))
    pos = y == 1
    tp = int(np.count_nonzero(a & pos))
    fp = int(np.count_nonzero(a & ~pos))
    fn = int(np.count_nonzero(~a & pos))
    n_neg = len(y) - int(pos.sum())
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "false_alarm_rate": _ratio(fp, n_neg),
    }


def event_recall(y: Any, alert: Any) -> float:
    """Share of labeled anomaly ranges (runs of 1 in ``y``) with at least one alert inside.

    Parameters
    ----------
    y : array_like of 0/1
        Labels.
    alert : array_like of bool
        True where an alert fired.

    Returns
    -------
    float
        Hit ranges / all ranges; 0.0 when ``y`` has no anomaly range (like ``recall`` in
        :func:`threshold_metrics`).
    """
    y = _labels(y)
    a = _alerts(alert, len(y))
    rs = ranges(y)
    if not rs:
        return 0.0
    starts = np.array([r[0] for r in rs])
    ends = np.array([r[1] for r in rs])
    # Alerts inside [start, end) = difference of a prefix count; no Python loop over rows.
    csum = np.concatenate(([0], np.cumsum(a)))
    hit = (csum[ends] - csum[starts]) > 0
    return float(hit.mean())


def summarize(y: Any, s: Any, alert: Any, alpha: float) -> dict[str, float | int]:
    """All metrics of one scored and alerted series in one flat dict.

    Parameters
    ----------
    y : array_like of 0/1
        Labels.
    s : array_like of float
        Scores, higher = more anomalous.
    alert : array_like of bool
        The alerts actually raised (e.g. ``p < alpha``).
    alpha : float
        The alert level that produced ``alert``; reported as given, for the record.

    Returns
    -------
    dict
        ``roc_auc``, ``pr_auc`` (``nan`` on one-class data), ``best_f1``, ``f1``, ``precision``,
        ``recall``, ``false_alarm_rate``, ``alpha``, ``event_recall``, ``n`` (rows) and
        ``n_anomalies`` (rows labeled 1).
    """
    y = _labels(y)
    s = _scores(s, len(y))
    a = _alerts(alert, len(y))
    tm = threshold_metrics(y, a)
    return {
        "roc_auc": roc_auc(y, s),
        "pr_auc": pr_auc(y, s),
        "best_f1": best_f1(y, s)[0] if len(y) else 0.0,
        "f1": tm["f1"],
        "precision": tm["precision"],
        "recall": tm["recall"],
        "false_alarm_rate": tm["false_alarm_rate"],
        "alpha": float(alpha),
        "event_recall": event_recall(y, a),
        "n": int(len(y)),
        "n_anomalies": int(y.sum()),
    }
