"""Numenta Anomaly Benchmark (NAB) scoring, re-implemented with numpy.

This reproduces the arithmetic of NAB's scorer (``nab/sweeper.py``, ``nab/optimizer.py`` and the
normalisation in ``nab/runner.py`` of github.com/numenta/NAB) so that a detector's anomaly scores
can be scored here, in seconds, exactly as NAB would score them. :func:`write_results` also writes
NAB's results layout, so the same scores can be cross-checked with NAB's own tools.

The rules, per data file of ``n`` rows:

* **Probationary period.** The first ``min(floor(0.15 * n), 0.15 * 5000)`` rows (at most 750) are
  not scored at all: detections there are neither true nor false positives. They still advance the
  "preceding window" used for false positives below. A window lying wholly inside the period has no
  scorable row, so it costs no false negative either.
* **Windows.** Each labelled window is a range of rows. A detection at row ``i`` of a window with
  rows ``[left, right]`` and width ``w = right - left + 1`` is at relative position
  ``p = -(right - i + 1) / w`` (``-1`` at the left edge, ``-1/w`` at the right edge) and is worth
  ``tpWeight * S(p) / S(-1)`` with the scaled sigmoid ``S(x) = 2 * sigmoid(-5 x) - 1`` (and
  ``S(x) = -1`` for ``x > 3``). ``S`` falls with ``p``, so earlier is better, and a detection at the
  left edge earns exactly ``tpWeight``. Only the best, i.e. first, detection of a window counts;
  a window without detection costs ``-fnWeight``.
* **False positives.** A detection outside every window, after the probationary period, costs
  ``fpWeight * S(|right_prev - i| / (w_prev - 1))`` where ``right_prev`` and ``w_prev`` belong to
  the closest window that ended before row ``i``: just after a window the penalty is close to 0,
  and it tends to ``-fpWeight`` further away. A false positive before any window costs
  ``-fpWeight``.
* **Threshold.** A row is a detection when ``anomaly_score >= threshold``. For each profile one
  threshold is chosen for the whole corpus: the raw score is evaluated at "no detection" (threshold
  1.1, as in NAB) and at every distinct anomaly score of a scorable row, and the best one wins. Like
  NAB (a stable sort of that list by score) equal raw scores resolve to the highest threshold.
  All candidates are evaluated, none skipped: like NAB's sweeper, the score is updated
  incrementally as the threshold comes down, here as one sort and one prefix sum over the corpus
  (about 0.1 s per profile for NAB's 365,558 rows).
* **Normalisation.** ``100 * (raw - null) / (perfect - null)``, where ``perfect = tpWeight * number
  of windows`` (NAB counts the windows of the label file, those of the probationary period
  included) and ``null`` is the raw score of NAB's null detector (a constant anomaly score, so
  either no detection or a detection on every row, whichever scores better after the same
  threshold optimisation; on the NAB corpus "no detection", i.e. ``-fnWeight`` per scorable
  window).

Where NAB itself is undefined we pick a documented value: a window one row wide makes NAB's false
positive position divide by zero; here it gives position ``+inf``, i.e. ``S = -1`` (full
false-positive cost). A corpus without windows has ``perfect == null`` and its normalised score is
``nan``.

Raw scores agree with NAB's to floating-point rounding (the sums are formed in another order).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_PROBATION_PERCENT",
    "NAB_PROFILES",
    "NO_DETECTION_THRESHOLD",
    "FileScores",
    "NABSeries",
    "cost_matrix",
    "labels_from_windows",
    "load_corpus",
    "load_profiles",
    "load_windows",
    "probation_rows",
    "read_series",
    "row_weights",
    "scaled_sigmoid",
    "score_all_profiles",
    "score_at_threshold",
    "score_corpus",
    "sweep",
    "window_index_ranges",
    "write_results",
]

#: Share of each file NAB treats as probationary (``Runner.probationaryPercent``).
DEFAULT_PROBATION_PERCENT = 0.15

#: NAB's starting threshold of the sweep: above every score in [0, 1], i.e. "no detection".
NO_DETECTION_THRESHOLD = 1.1

#: NAB's application profiles (``config/profiles.json``); tnWeight is unused by the scorer.
NAB_PROFILES: dict[str, dict[str, dict[str, float]]] = {
    "standard": {
        "CostMatrix": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11, "tnWeight": 1.0}
    },
    "reward_low_FP_rate": {
        "CostMatrix": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.22, "tnWeight": 1.0}
    },
    "reward_low_FN_rate": {
        "CostMatrix": {"tpWeight": 1.0, "fnWeight": 2.0, "fpWeight": 0.11, "tnWeight": 1.0}
    },
}

# Per-row window marks returned by row_weights (window ids are >= 0).
_OUTSIDE = -1
_PROBATION = -2


@dataclass(frozen=True)
class FileScores:
    """One data file's anomaly scores and labelled windows, ready to score.

    Parameters
    ----------
    name : str
        Identifier, e.g. ``"realKnownCause/nyc_taxi.csv"``; used in error messages only.
    timestamps : ndarray
        Row times (``datetime64`` or integer seconds). Scoring works on row positions, so only the
        length matters; they are kept so that results can be written back out.
    anomaly_score : ndarray of float
        One score in [0, 1] per row.
    windows : sequence of (start, end_exclusive)
        Labelled windows as half-open row ranges, in time order and not overlapping (see
        :func:`window_index_ranges`).
    """

    name: str
    timestamps: np.ndarray
    anomaly_score: np.ndarray
    windows: Sequence[tuple[int, int]]

    def __post_init__(self) -> None:
        scores = np.asarray(self.anomaly_score, dtype=np.float64)
        if scores.ndim != 1:
            raise ValueError(f"{self.name}: anomaly_score must be 1-D")
        if len(np.asarray(self.timestamps)) != len(scores):
            raise ValueError(
                f"{self.name}: {len(self.timestamps)} timestamps, {len(scores)} scores"
            )
        # NAB's "no detection" threshold is 1.1, so scores must stay in [0, 1] for it to mean that.
        if not np.isfinite(scores).all() or (scores < 0).any() or (scores > 1).any():
            raise ValueError(f"{self.name}: anomaly scores must be finite and in [0, 1]")
        wins = [(int(a), int(b)) for a, b in self.windows]
        prev_end = 0
        for a, b in wins:
            if not (0 <= a < b <= len(scores)) or a < prev_end:
                raise ValueError(
                    f"{self.name}: windows must be non-empty, in range, ordered and disjoint: "
                    f"{wins}"
                )
            prev_end = b
        object.__setattr__(self, "anomaly_score", scores)
        object.__setattr__(self, "windows", wins)


@dataclass(frozen=True)
class NABSeries:
    """One NAB data file: ``name`` is ``"<category>/<file>.csv"``, ``windows`` are row ranges."""

    name: str
    timestamps: np.ndarray
    values: np.ndarray
    windows: list[tuple[int, int]]


def cost_matrix(profile: Mapping[str, Any]) -> dict[str, float]:
    """The ``tpWeight``/``fpWeight``/``fnWeight`` of a profile.

    Parameters
    ----------
    profile : mapping
        Either a NAB profile (``{"CostMatrix": {...}}``) or the cost matrix itself.
    """
    cm = profile.get("CostMatrix", profile)
    return {k: float(cm[k]) for k in ("tpWeight", "fpWeight", "fnWeight")}


def probation_rows(n: int, probation_percent: float = DEFAULT_PROBATION_PERCENT) -> int:
    """Number of leading rows of an ``n``-row file that NAB does not score.

    NAB's probationary length is ``min(floor(p * n), p * 5000)`` (``getProbationPeriod`` in
    ``nab/util.py``, ``Sweeper._getProbationaryLength``), so with ``p = 0.15`` it is capped at 750
    rows for files longer than 5000 rows. Row ``i`` is scored when ``i >= length``; the length may
    be fractional for other ``p``, hence the ceiling.
    """
    length = min(math.floor(probation_percent * n), probation_percent * 5000)
    return max(0, math.ceil(length))


def scaled_sigmoid(x: np.ndarray | float) -> np.ndarray:
    """NAB's scaled sigmoid ``2 * sigmoid(-5 x) - 1``, and exactly ``-1`` for ``x > 3``.

    Equal to ``-tanh(2.5 x)`` up to rounding; the sigmoid form is kept to follow NAB's rounding.
    """
    x = np.asarray(x, dtype=np.float64)
    # Clip before exp so that far-away positions (replaced by -1 anyway) cannot overflow.
    xc = np.minimum(x, 4.0)
    val = 2.0 * (1.0 / (1.0 + np.exp(5.0 * xc))) - 1.0
    return np.where(x > 3.0, -1.0, val)


_MAX_TP = float(scaled_sigmoid(-1.0))


def row_weights(
    n: int,
    windows: Sequence[tuple[int, int]],
    profile: Mapping[str, Any],
    probation_percent: float = DEFAULT_PROBATION_PERCENT,
) -> tuple[np.ndarray, np.ndarray]:
    """What a detection on each row would be worth, and which window the row belongs to.

    Parameters
    ----------
    n : int
        Rows in the file.
    windows : sequence of (start, end_exclusive)
        Ordered, disjoint row ranges.
    profile : mapping
        Profile or cost matrix (see :func:`cost_matrix`).
    probation_percent : float
        See :func:`probation_rows`.

    Returns
    -------
    weight : ndarray of float
        True-positive value for rows in a window, false-positive cost (negative) for rows outside.
    window : ndarray of int
        Index into ``windows`` for rows in a window, ``-1`` outside, ``-2`` in the probationary
        period (whatever the row's window; those rows are not scored).
    """
    cm = cost_matrix(profile)
    idx = np.arange(n)
    window = np.full(n, _OUTSIDE, dtype=np.int64)
    weight = np.empty(n, dtype=np.float64)
    if windows:
        starts = np.array([w[0] for w in windows], dtype=np.int64)
        ends = np.array([w[1] for w in windows], dtype=np.int64)
    else:
        starts = ends = np.zeros(0, dtype=np.int64)
    right = ends - 1
    width = (ends - starts).astype(np.float64)

    # Candidate window of each row: the last one starting at or before it.
    k = np.searchsorted(starts, idx, side="right") - 1
    inside = np.zeros(n, dtype=bool)
    if len(ends):
        inside = (k >= 0) & (idx < ends[np.maximum(k, 0)])
    window[inside] = k[inside]
    ki = k[inside]
    pos_in = -(right[ki] - idx[inside] + 1) / width[ki]
    # Same operation order as NAB (S * tpWeight / S(-1)); with tpWeight 1 the left edge gives 1.0.
    weight[inside] = scaled_sigmoid(pos_in) * cm["tpWeight"] / _MAX_TP

    # Preceding window of each outside row: the last one that ended at or before it.
    out = ~inside
    kp = np.searchsorted(ends, idx[out], side="right") - 1
    has_prev = kp >= 0
    unweighted = np.full(len(kp), -1.0)  # no preceding window: as if infinitely far from one
    kpp = kp[has_prev]
    with np.errstate(divide="ignore"):
        # A one-row window makes NAB divide by zero; inf here means "full false-positive cost".
        pos_out = np.abs(right[kpp] - idx[out][has_prev]) / (width[kpp] - 1.0)
    unweighted[has_prev] = scaled_sigmoid(pos_out)
    weight[out] = unweighted * cm["fpWeight"]

    window[: min(n, probation_rows(n, probation_percent))] = _PROBATION
    return weight, window


@dataclass(frozen=True)
class _Prepared:
    """Scorable rows of a corpus for one profile, concatenated over files."""

    score: np.ndarray  # anomaly score per scorable row
    weight: np.ndarray  # row_weights() per scorable row
    window: np.ndarray  # corpus-wide window id, -1 outside any window
    delta: np.ndarray  # change of the raw score when the threshold comes down to this row
    n_scorable_windows: int
    n_windows: int
    fn_weight: float
    tp_weight: float


def _prepare(
    files: Sequence[FileScores], profile: Mapping[str, Any], probation_percent: float
) -> _Prepared:
    cm = cost_matrix(profile)
    scores, weights, wins = [], [], []
    offset = 0
    n_windows = 0
    for f in files:
        w, win = row_weights(len(f.anomaly_score), f.windows, cm, probation_percent)
        keep = win != _PROBATION
        win = win[keep]
        # Window ids must be unique over the corpus (NAB names them "<file>|<start>").
        scores.append(f.anomaly_score[keep])
        weights.append(w[keep])
        wins.append(np.where(win >= 0, win + offset, _OUTSIDE))
        offset += len(f.windows)
        n_windows += len(f.windows)
    score = np.concatenate(scores) if scores else np.zeros(0)
    weight = np.concatenate(weights) if weights else np.zeros(0)
    window = np.concatenate(wins) if wins else np.zeros(0, dtype=np.int64)

    # As the threshold comes down, a row outside windows adds its (negative) weight, and a row in a
    # window raises that window's value from max(-fnWeight, best so far) to its own weight if
    # higher. Ordering each window's rows by descending score, a running maximum gives exactly
    # those increments, so the raw score at any threshold is a prefix sum over all rows.
    delta = np.where(window == _OUTSIDE, weight, 0.0)
    in_win = np.flatnonzero(window >= 0)
    order = in_win[np.lexsort((-score[in_win], window[in_win]))]
    wo, vo = window[order], weight[order]
    starts = np.flatnonzero(np.concatenate(([True], wo[1:] != wo[:-1]))) if len(wo) else wo
    bounds = np.append(starts, len(wo))
    for a, b in zip(bounds[:-1], bounds[1:]):
        best = np.maximum.accumulate(np.concatenate(([-cm["fnWeight"]], vo[a:b])))
        delta[order[a:b]] = np.diff(best)
    return _Prepared(
        score=score,
        weight=weight,
        window=window,
        delta=delta,
        n_scorable_windows=int(len(np.unique(window[window >= 0]))),
        n_windows=n_windows,
        fn_weight=cm["fnWeight"],
        tp_weight=cm["tpWeight"],
    )


def _sweep_prepared(p: _Prepared) -> tuple[np.ndarray, np.ndarray]:
    base = 0.0 - p.fn_weight * p.n_scorable_windows
    order = np.argsort(-p.score, kind="stable")
    s_sorted = p.score[order]
    total = base + np.cumsum(p.delta[order])
    # The raw score at threshold t includes every row with score >= t: read the prefix sum at the
    # end of each group of equal scores.
    last = np.append(np.flatnonzero(np.diff(s_sorted) != 0), len(s_sorted) - 1)
    if not len(order):
        last = order
    thresholds = np.concatenate(([NO_DETECTION_THRESHOLD], s_sorted[last]))
    raw = np.concatenate(([base], total[last]))
    return thresholds, raw


def _evaluate(p: _Prepared, threshold: float) -> dict[str, float | int]:
    det = p.score >= threshold
    in_win = p.window >= 0
    fp_rows = det & ~in_win
    raw = 0.0 - p.fn_weight * p.n_scorable_windows + float(p.weight[fp_rows].sum())
    hit = det & in_win
    if hit.any():
        # Best detection per window; rows run in time order and weights fall with time, so this is
        # the first detection of each window, the only one NAB counts.
        _, first = np.unique(p.window[hit], return_index=True)
        raw += float(np.sum(p.weight[hit][first] + p.fn_weight))
    return {
        "raw": raw,
        "windows_detected": int(len(np.unique(p.window[hit]))),
        "scorable_windows": p.n_scorable_windows,
        "tp": int(np.count_nonzero(hit)),
        "fp": int(np.count_nonzero(fp_rows)),
        "fn": int(np.count_nonzero(~det & in_win)),
        "tn": int(np.count_nonzero(~det & ~in_win)),
    }


def _null_raw(p: _Prepared) -> float:
    # NAB's null detector gives every row the same score, so its threshold sweep has two states:
    # nothing detected, or every scorable row detected. The first wins ties (higher threshold).
    nothing = 0.0 - p.fn_weight * p.n_scorable_windows
    everything = nothing + float(p.delta.sum())
    return max(nothing, everything)


def _normalize(raw: float, null: float, perfect: float) -> float:
    return 100.0 * (raw - null) / (perfect - null) if perfect != null else float("nan")


def sweep(
    files: Sequence[FileScores],
    profile: Mapping[str, Any],
    probation_percent: float = DEFAULT_PROBATION_PERCENT,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw corpus score at every candidate threshold, as NAB's threshold sweep lists them.

    Parameters
    ----------
    files : sequence of FileScores
        The corpus.
    profile : mapping
        Profile or cost matrix.
    probation_percent : float
        See :func:`probation_rows`.

    Returns
    -------
    thresholds : ndarray
        ``1.1`` (no detection) followed by each distinct score of a scorable row, descending.
    raw : ndarray
        Raw score of the corpus when rows with ``score >= threshold`` are detections.
    """
    return _sweep_prepared(_prepare(files, profile, probation_percent))


def score_at_threshold(
    files: Sequence[FileScores],
    profile: Mapping[str, Any],
    threshold: float,
    probation_percent: float = DEFAULT_PROBATION_PERCENT,
) -> dict[str, float | int]:
    """Score a corpus at a given threshold (no optimisation), e.g. one tuned on other data.

    Returns the same keys as :func:`score_corpus`.
    """
    p = _prepare(files, profile, probation_percent)
    res = _evaluate(p, float(threshold))
    null = _null_raw(p)
    perfect = p.tp_weight * p.n_windows
    return {
        "score_normalized": _normalize(float(res["raw"]), null, perfect),
        "threshold": float(threshold),
        "null": null,
        "perfect": perfect,
        **res,
    }


def score_corpus(
    files: Sequence[FileScores],
    profile: Mapping[str, Any],
    probation_percent: float = DEFAULT_PROBATION_PERCENT,
) -> dict[str, float | int]:
    """NAB score of a corpus under one profile, with the threshold optimised over the corpus.

    Parameters
    ----------
    files : sequence of FileScores
        The corpus (e.g. all 58 NAB files).
    profile : mapping
        Profile or cost matrix, e.g. ``NAB_PROFILES["standard"]``.
    probation_percent : float
        See :func:`probation_rows`.

    Returns
    -------
    dict
        ``score_normalized`` (null detector 0, perfect 100), ``threshold`` (the optimised one; 1.1
        means no detection), ``raw``, ``null`` and ``perfect`` raw scores, ``windows_detected``
        (windows with at least one detection, of the ``scorable_windows`` outside the probationary
        periods), and row counts ``tp``, ``fp``, ``fn``, ``tn`` over scorable rows at that
        threshold (NAB's counts: every detected row in a window is a ``tp``, every missed one an
        ``fn``; every ``fp`` row costs the profile's false-positive weight).
    """
    p = _prepare(files, profile, probation_percent)
    thresholds, raw = _sweep_prepared(p)
    # First maximum: NAB sorts its (threshold-descending) list stably by score.
    best = float(thresholds[int(np.argmax(raw))])
    # Re-evaluate at the chosen threshold, summing like NAB's final scoring pass does.
    res = _evaluate(p, best)
    null = _null_raw(p)
    perfect = p.tp_weight * p.n_windows
    return {
        "score_normalized": _normalize(float(res["raw"]), null, perfect),
        "threshold": best,
        "null": null,
        "perfect": perfect,
        **res,
    }


def score_all_profiles(
    files: Sequence[FileScores],
    profiles: Mapping[str, Mapping[str, Any]] | None = None,
    probation_percent: float = DEFAULT_PROBATION_PERCENT,
) -> dict[str, dict[str, float | int]]:
    """:func:`score_corpus` for each profile (default: NAB's three), keyed by profile name."""
    profiles = NAB_PROFILES if profiles is None else profiles
    return {name: score_corpus(files, prof, probation_percent) for name, prof in profiles.items()}


def labels_from_windows(n: int, windows: Sequence[tuple[int, int]]) -> np.ndarray:
    """0/1 row labels, 1 inside a window (NAB's ``label`` column)."""
    y = np.zeros(n, dtype=np.int64)
    for a, b in windows:
        y[a:b] = 1
    return y


# --------------------------------------------------------------------------------------------
# I/O: reading NAB's files and writing its results layout.


def _to_datetime64(t: Any) -> np.ndarray:
    a = np.asarray(t)
    if np.issubdtype(a.dtype, np.integer):
        return a.astype("datetime64[s]").astype("datetime64[us]")
    # NAB writes label times with microseconds ("2014-04-10 07:15:00.000000"); compare at [us].
    return a.astype("datetime64[us]")


def window_index_ranges(
    timestamps: Any, windows: Sequence[tuple[Any, Any]]
) -> list[tuple[int, int]]:
    """Convert timestamp windows to half-open row ranges.

    Parameters
    ----------
    timestamps : array_like
        Row times: ``datetime64``, ISO strings, or integer epoch seconds.
    windows : sequence of (start, end)
        Inclusive window limits, as strings (``"2014-04-10 07:15:00.000000"``), ``datetime64`` or
        epoch seconds.

    Returns
    -------
    list of (start, end_exclusive)
        Row ``start`` has time ``start`` and row ``end_exclusive - 1`` has time ``end``.

    Raises
    ------
    ValueError
        If a limit is not exactly the time of a row (NAB's label loader refuses that too) or the
        windows are out of order or overlap.
    """
    ts = _to_datetime64(timestamps)
    out: list[tuple[int, int]] = []
    for t1, t2 in windows:
        ends = []
        for t in (t1, t2):
            hits = np.flatnonzero(ts == _to_datetime64(t))
            if len(hits) == 0:
                raise ValueError(f"window limit {t} is not the timestamp of any row")
            ends.append(int(hits[0]))
        a, b = ends[0], ends[1] + 1
        if b <= a or (out and a < out[-1][1]):
            raise ValueError(f"window ({t1}, {t2}) is empty, out of order or overlaps another")
        out.append((a, b))
    return out


def load_profiles(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Read NAB's ``config/profiles.json`` (I/O)."""
    with open(path, encoding="utf-8") as f:
        return dict(json.load(f))


def load_windows(path: str | os.PathLike[str]) -> dict[str, list[tuple[str, str]]]:
    """Read NAB's ``labels/combined_windows.json`` (I/O): ``{"<category>/<file>.csv": [(start,
    end), ...]}`` with timestamp strings."""
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    return {name: [(str(a), str(b)) for a, b in wins] for name, wins in raw.items()}


def read_series(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read a NAB data file (I/O): header ``timestamp,value``; returns ``datetime64[s]`` times and
    float values."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        if header[:2] != ["timestamp", "value"]:
            raise ValueError(f"{path}: expected header timestamp,value, got {header}")
        rows = list(reader)
    ts = np.array([r[0] for r in rows]).astype("datetime64[s]")
    values = np.array([r[1] for r in rows], dtype=np.float64)
    return ts, values


def load_corpus(
    root: str | os.PathLike[str], windows_path: str | os.PathLike[str] | None = None
) -> list[NABSeries]:
    """Read every file of a NAB checkout (I/O), with its windows as row ranges.

    Parameters
    ----------
    root : path
        Directory holding ``data/<category>/<file>.csv`` and ``labels/combined_windows.json``.
    windows_path : path, optional
        Another windows file.

    Returns
    -------
    list of NABSeries
        Sorted by name; files missing from the windows file get no windows.
    """
    root = Path(root)
    windows = load_windows(windows_path or root / "labels" / "combined_windows.json")
    out = []
    for path in sorted((root / "data").glob("*/*.csv")):
        name = f"{path.parent.name}/{path.name}"
        ts, values = read_series(path)
        out.append(NABSeries(name, ts, values, window_index_ranges(ts, windows.get(name, []))))
    return out


def write_results(
    directory: str | os.PathLike[str],
    detector: str,
    category: str,
    file: str,
    timestamps: Any,
    values: Any,
    scores: Any,
    labels: Any,
) -> Path:
    """Write one file of NAB's results layout (I/O).

    The file is ``<directory>/<detector>/<category>/<detector>_<file>`` with columns
    ``timestamp,value,anomaly_score,label``, which NAB's optimiser and scorer read.

    Parameters
    ----------
    directory : path
        NAB's ``results`` directory.
    detector : str
        Detector name (no underscore, as NAB splits result names on it).
    category, file : str
        Data file location, e.g. ``"realKnownCause"`` and ``"nyc_taxi.csv"`` (``.csv`` is added
        when missing).
    timestamps, values, scores, labels : array_like
        One entry per row; labels are 0/1 (1 inside a window, see :func:`labels_from_windows`).

    Returns
    -------
    Path
        The file written.
    """
    if "_" in detector:
        raise ValueError("NAB splits result file names on '_': a detector name cannot contain one")
    if not file.endswith(".csv"):
        file += ".csv"
    ts = np.datetime_as_string(_to_datetime64(timestamps).astype("datetime64[s]"), unit="s")
    values = np.asarray(values, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64)
    if not (len(ts) == len(values) == len(scores) == len(labels)):
        raise ValueError("timestamps, values, scores and labels must have the same length")
    out = Path(directory) / detector / category / f"{detector}_{file}"
    out.parent.mkdir(parents=True, exist_ok=True)
    # repr() keeps every bit of the scores, so NAB sees the same ties and thresholds as we do.
    lines = [
        f"{t.replace('T', ' ')},{v!r},{s!r},{lab}"
        for t, v, s, lab in zip(ts.tolist(), values.tolist(), scores.tolist(), labels.tolist())
    ]
    with open(out, "w", encoding="utf-8", newline="") as f:
        f.write("timestamp,value,anomaly_score,label\n")
        f.write("\n".join(lines))
        f.write("\n")
    return out
