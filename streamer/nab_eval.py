"""NAB figures for ``streamer eval --dataset nab``: the corpus score of every detector under NAB's
three profiles, and optionally the per-row scores in NAB's results layout."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from streamer import nab
from streamer.datasets import Dataset
from streamer.evaluate import DatasetResult

__all__ = ["nab_figures"]

log = logging.getLogger(__name__)

_KEYS = {"standard": "nab_standard", "reward_low_FP_rate": "nab_low_fp", "reward_low_FN_rate": "nab_low_fn"}


def nab_figures(ds: Dataset, result: DatasetResult, detectors: Sequence[str], *, results_dir: str | None = None) -> None:
    """Add ``nab_standard``, ``nab_low_fp`` and ``nab_low_fn`` (each with its ``_threshold``) to each
    detector's figures, and where the standard profile's score comes from: at its corpus threshold,
    the windows detected (``nab_windows_detected`` of ``nab_windows``: each scorable labelled window
    with at least one detection) and the detections outside every window (``nab_false_positives``),
    in total and per file (under ``per_entity``)."""
    windows = ds.extra["windows"]
    for det in detectors:
        files = []
        for s in result.series:
            ts = np.asarray(s.timestamps, dtype="datetime64[s]")
            ranges = nab.window_index_ranges(ts, windows.get(s.name, []))
            # NAB thresholds the score into detections: an alert cooldown's grouping applies
            detected = np.clip(s.detection_scores.get(det, s.unit_scores[det]), 0.0, 1.0)
            files.append(nab.FileScores(s.name, ts, detected, ranges))
            if results_dir:
                nab.write_results(results_dir, det, s.category, s.name.split("/", 1)[1], s.timestamps, s.values,
                                  detected, nab.labels_from_windows(len(ts), ranges))
        scores = nab.score_all_profiles(files)
        figs = result.figures[det]
        for profile, key in _KEYS.items():
            figs[key] = float(scores[profile]["score_normalized"])
            figs[key + "_threshold"] = float(scores[profile]["threshold"])
        std = scores["standard"]
        figs["nab_windows_detected"] = int(std["windows_detected"])
        figs["nab_windows"] = int(std["scorable_windows"])
        figs["nab_false_positives"] = int(std["fp"])
        for f in files:  # each file at the corpus threshold
            one = nab.score_at_threshold([f], nab.NAB_PROFILES["standard"], std["threshold"])
            figs["per_entity"].setdefault(f.name, {}).update(
                nab_windows_detected=int(one["windows_detected"]), nab_windows=int(one["scorable_windows"]),
                nab_false_positives=int(one["fp"]))
    if results_dir:
        log.info("NAB results layout written under %s", Path(results_dir))
