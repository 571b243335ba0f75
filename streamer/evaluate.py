"""``streamer eval``: our detector and its peers, side by side, on labelled data, in-process.

For every series of a dataset:
1. train our model on the training records with ``streamer train``'s code (its own time-ordered
   validation split calibrates it; test labels are never seen);
2. stream the test records through the very :class:`~streamer.pipeline.Pipeline` the Kafka detector
   runs, in small batches, in order (the reservoir learns online from windows judged normal; with
   ``retrain.in_eval`` the retrainer's logic also judges each batch, retrains when its triggers
   fire, and the pipeline hot-swaps to each model that passes its gate);
3. give the peers the same windows (same decode, windows and normalization), fitted on the same
   training windows; their alert threshold is the ``1 - alpha`` quantile of their scores on the
   same held-out validation windows ours is calibrated on;
4. map window scores back to test rows and compute the metrics (no point adjustment).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamer import metrics
from streamer.config import StreamerConfig
from streamer.datasets import Dataset, Series
from streamer.decode import Decoder
from streamer.peers import PEERS, make_peer
from streamer.progress import Progress
from streamer.train import validation_split, windows_from_records

if TYPE_CHECKING:
    from streamer.pipeline import StepResult

__all__ = ["DETECTORS", "SeriesScores", "evaluate_series", "evaluate_dataset", "DatasetResult", "row_owner"]

log = logging.getLogger(__name__)

DETECTORS = ("streamer",) + PEERS
# Test records per pipeline call: small enough that the reservoir learns online between calls,
# large enough that the model call is not dominated by its fixed overhead.
EVAL_BATCH = 128
# Weight of the raw score in the ranking of a detector with an entity baseline: it only orders
# windows of equal significance.
TIE_BREAK = 1e-6


@dataclass
class SeriesScores:
    """Per test row: each detector's score, alert flag and NAB-style score in [0, 1]."""

    name: str
    labels: np.ndarray
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    alerts: dict[str, np.ndarray] = field(default_factory=dict)
    unit_scores: dict[str, np.ndarray] = field(default_factory=dict)
    # What a threshold on it detects, when that is not the unit score: with an alert cooldown, the
    # unit score with the windows repeating an open incident at 0 (NAB scores detections).
    detection_scores: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    # With ``retrain.in_eval``: each retraining (reason, training windows, passed the gate, test row).
    retrains: list[dict[str, Any]] = field(default_factory=list)
    unscored_rows: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)  # test records per dead-letter reason
    category: str = ""
    timestamps: list[str] | None = None
    values: np.ndarray | None = None


def _unit(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Scores in [0, 1), comparable across series: divided by the 99th percentile of the detector's
    scores on held-out normal windows, then ``x / (1 + x)``."""
    q = float(np.quantile(reference, 0.99)) if len(reference) else 1.0
    lo = float(np.min(reference)) if len(reference) else 0.0
    x = np.maximum(scores - lo, 0.0) / max(q - lo, 1e-12)
    return x / (1.0 + x)


def _surprise(significance: np.ndarray, alpha: float) -> np.ndarray:
    """Significance (a tail probability) as a score in [0, 1): ``L / (1 + L)`` with ``L =
    log(1 / significance) / log(1 / alpha)``, so 0.5 is the alert threshold. Unlike ``1 - p`` it
    keeps far tails apart (``1 - p`` rounds to 1.0 for every ``p`` below about 1e-16)."""
    sig = np.clip(np.asarray(significance, dtype=np.float64), 1e-300, 1.0)
    big = np.log(sig) / math.log(alpha)
    return big / (1.0 + big)


def _threshold(val_scores: np.ndarray, alpha: float) -> float:
    """Alert threshold of a peer: alerts when a score exceeds the (1 - alpha) quantile of its
    validation scores (the same rule our calibrator applies)."""
    return float(np.quantile(val_scores, 1.0 - alpha, method="higher"))


def _last_time_s(records: Sequence[Any], cfg: StreamerConfig) -> float:
    """Event time (seconds) of the newest decodable training record: the retrainer's clock starts
    there (0 when none decodes)."""
    events, _, _ = Decoder(cfg.schema).decode(list(records[-1000:]))
    return float(events.time_ms.max()) / 1000.0 if len(events) else 0.0


def row_owner(n: int, hi: np.ndarray, lo: np.ndarray, entity: np.ndarray,
              row_entities: Callable[[], np.ndarray], dead: np.ndarray | None = None) -> np.ndarray:
    """For each of ``n`` test rows, the window (index into ``hi``, ``lo``, ``entity``: each window's
    newest and oldest row and its entity, in the order scored) whose score the row takes, or -1.

    A row that is the newest of some window takes the newest such window's (with count windows
    sliding by one, each row its own arrival's window). A row that is no window's newest (tumbling
    time windows, a slide above one) takes the first window of its own entity that holds it; only
    then are the rows' entities needed (``row_entities``, called at most once). Rows in no window
    stay -1: the ``dead`` ones (dead letters: a window around them does not hold them) and those of
    windows never closed."""
    owner = np.full(n, -1, dtype=np.int64)
    idx = np.arange(len(hi))
    inside = (hi >= 0) & (hi < n)
    owner[hi[inside]] = idx[inside]  # on repeated rows the last (newest) window wins
    free = owner < 0
    if dead is not None and len(dead):
        dead = np.asarray(dead, dtype=np.int64)
        free[dead[(dead >= 0) & (dead < n)]] = False
    missing = np.flatnonzero(free)
    if not len(missing) or not len(hi):
        return owner
    row_ent = np.asarray(row_entities()).astype(str)[missing]
    _, codes = np.unique(np.concatenate([np.asarray(entity).astype(str), row_ent]), return_inverse=True)
    w_code, r_code = codes[:len(hi)], codes[len(hi):]
    # One search for all entities: windows sorted by (entity, newest row), keyed entity-major.
    order = np.lexsort((hi, w_code))
    low = min(int(hi.min()), 0)
    span = max(int(hi.max()), n) - low + 1
    w_key = w_code[order] * span + (hi[order] - low)
    j = np.searchsorted(w_key, r_code * span + (missing - low), side="left")  # first window ending at or after the row
    cand = order[np.minimum(j, len(order) - 1)]
    ok = (j < len(order)) & (w_code[cand] == r_code) & (lo[cand] <= missing)
    owner[missing[ok]] = cand[ok]
    return owner


def _row_entities(decoder: Decoder, records: Sequence[Any]) -> np.ndarray:
    """Each record's entity as the decoder groups it; "" for a dead letter."""
    events, _, idx = decoder.decode(records)
    out = np.full(len(records), "", dtype=object)
    out[idx] = events.entity
    return out


def evaluate_series(
    series: Series,
    cfg: StreamerConfig,
    detectors: Sequence[str],
    *,
    workdir: Path,
    batch: int = EVAL_BATCH,
) -> SeriesScores:
    from streamer.artifact import load_artifact_dir
    from streamer.pipeline import Pipeline
    from streamer.train import train_model

    n = len(series.test)
    out = SeriesScores(series.name, series.labels, category=series.category, timestamps=series.timestamps,
                       values=series.values)
    alpha = cfg.detector.alpha
    t0 = time.monotonic()
    path = train_model(cfg, series.train, source=f"eval:{series.name}", show_progress=False)
    model = load_artifact_dir(path)
    retrainer = None
    if cfg.retrain.in_eval:
        from streamer.retrain import Retrainer

        # the retrainer's logic on this stream, its clock the newest event time seen so far
        now = [_last_time_s(series.train, cfg)]
        retrainer = Retrainer(cfg, model, announce=False, clock=lambda: now[0])
        pipe = retrainer.pipeline
    else:
        pipe = Pipeline(model, cfg.detector)
    if cfg.window.kind == "count" and cfg.window.size > 1 and not series.test_starts_with_train:
        # Warm up with the end of the training data, so the first test rows have full windows.
        # Not when the test stream starts with the training data (NAB): its first rows come first,
        # and a window joining the training's last rows to them would be no window of the stream.
        events, _, _ = pipe.decoder.decode(series.train[-(cfg.window.size - 1):])
        pipe.windower.push(events)
    base = series.test[0].offset
    rows_l, lo_l, ent_l, x_l, s_l, p_l, pa_l, a_l, rep_l = [], [], [], [], [], [], [], [], []
    dead_rows: list[int] = []

    def stream() -> Iterator[StepResult]:
        for lo in range(0, n, batch):
            r = pipe.process(series.test[lo:lo + batch])
            yield r
            if retrainer is not None:
                # after the batch is scored: the retrainer judges it, and a model it passes scores
                # the batches after it (as a detector swaps between two batches)
                if len(r.windows):
                    now[0] = max(now[0], float(r.windows.end_ms.max()) / 1000.0)
                retrainer.observe(r)
                outcome = retrainer.retrain_if_due()
                if outcome is not None:
                    out.retrains.append({k: outcome.get(k) for k in ("reason", "windows", "passed")}
                                        | {"at_row": min(lo + batch, n)})
        yield pipe.flush()

    for r in stream():
        for d in r.dead:
            out.dead_letters[d.reason] = out.dead_letters.get(d.reason, 0) + 1
            dead_rows.append(d.record.offset - base)
        if r.scored is not None:
            rows_l.append(r.windows.offset_hi - base)
            lo_l.append(r.windows.offset_lo - base)
            ent_l.append(r.windows.entity)
            x_l.append(r.windows.x)
            s_l.append(r.scored.score)
            p_l.append(r.scored.significance)
            pa_l.append(r.scored.alert_significance)
            a_l.append(r.scored.alert)
            rep_l.append(r.scored.repeat if r.scored.repeat is not None else np.zeros(len(r.scored.score), bool))
    rows = np.concatenate(rows_l) if rows_l else np.empty(0, dtype=np.int64)
    x_test = np.concatenate(x_l) if x_l else np.empty((0, len(pipe.windower.feature_names)))
    ours = np.concatenate(s_l) if s_l else np.empty(0)
    p = np.concatenate(p_l) if p_l else np.empty(0)
    p_alert = np.concatenate(pa_l) if pa_l else np.empty(0)
    alert = np.concatenate(a_l) if a_l else np.empty(0, dtype=bool)
    repeat = np.concatenate(rep_l) if rep_l else np.empty(0, dtype=bool)
    owner = row_owner(n, rows, np.concatenate(lo_l) if lo_l else np.empty(0, dtype=np.int64),
                      np.concatenate(ent_l) if ent_l else np.empty(0, dtype=object),
                      lambda: _row_entities(Decoder(cfg.schema), series.test), dead=np.asarray(dead_rows))
    scored_rows = np.flatnonzero(owner >= 0)
    out.unscored_rows = int(n - len(scored_rows))

    def to_rows(values: np.ndarray, fill: float) -> np.ndarray:
        full = np.full(n, fill, dtype=np.float64)
        full[scored_rows] = values[owner[scored_rows]]
        return full

    floor = float(ours.min()) - 1.0 if len(ours) else 0.0

    def ranked(sig: np.ndarray) -> np.ndarray:
        """A significance as a score in [0, 1) (see _surprise), its ties broken by the raw score."""
        return _surprise(sig, alpha) * (1.0 - TIE_BREAK) + TIE_BREAK * _unit(ours, model.calibration)

    if "streamer" in detectors:
        out.alerts["streamer"] = to_rows(alert.astype(float), 0.0).astype(bool)
        if (pipe.detector.baseline is not None or pipe.detector.input_baseline is not None
                or pipe.detector.seasonal is not None or retrainer is not None):
            # With an entity or input baseline the detector decides on the p-value combined with
            # their tail probabilities (Scored.significance); that is its ranking too, as a
            # surprise in [0, 1) that does not saturate in floating point (see _surprise). With
            # retraining, too: raw scores of successive models are on different scales, their
            # p-values are not.
            # Inside the calibration set the p-value is discrete (steps of 1/(n+1)), so windows
            # may tie; the raw score breaks those ties (it moves the ranking by less than 1e-6).
            out.scores["streamer"] = to_rows(ranked(p), 0.0)
            out.unit_scores["streamer"] = out.scores["streamer"]
        else:
            out.scores["streamer"] = to_rows(ours, floor)
            out.unit_scores["streamer"] = to_rows(_unit(ours, model.calibration), 0.0)
        own_alerts = not np.array_equal(p_alert, p, equal_nan=True)
        if repeat.any() or own_alerts:
            # With an alert cooldown the score still ranks every window (ROC-AUC, PR-AUC: what the
            # scores topic carries), while detections skip the windows repeating an open incident
            # (they never alert): any threshold on this groups incidents as the detector's
            # cooldown does (an incident gap groups at alpha only: see AlertCooldown). With the
            # change view, detections are thresholds on what alerts are decided on
            # (Scored.alert_significance), the ranking stays the score's.
            detected = to_rows(ranked(p_alert), 0.0) if own_alerts else out.unit_scores["streamer"]
            rep = to_rows(repeat.astype(float), 0.0).astype(bool)
            out.detection_scores["streamer"] = np.where(rep, 0.0, detected)
        out.seconds["streamer"] = time.monotonic() - t0

    peers = [d for d in detectors if d != "streamer"]
    if peers:
        windows, _, _ = windows_from_records(cfg, series.train)
        tr, va = validation_split(windows, cfg.model.validation_split)
        norm = model.normalizer
        x_tr, x_va, x_te = norm.transform(windows.x[tr]), norm.transform(windows.x[va]), norm.transform(x_test)
        for name in peers:
            t1 = time.monotonic()
            peer = make_peer(name, seed=cfg.model.seed)
            peer.fit(x_tr)
            val = peer.score(x_va)
            s = peer.score(x_te) if len(x_te) else np.empty(0)
            fl = float(min(s.min(), val.min())) - 1.0 if len(s) else 0.0
            out.scores[name] = to_rows(s, fl)
            out.alerts[name] = to_rows((s > _threshold(val, alpha)).astype(float), 0.0).astype(bool)
            out.unit_scores[name] = to_rows(_unit(s, val), 0.0)
            out.seconds[name] = time.monotonic() - t1
    return out


@dataclass
class DatasetResult:
    name: str
    figures: dict[str, dict[str, Any]]  # detector -> metrics (+ per_entity)
    series: list[SeriesScores]


def _mean(dicts: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in dicts[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    out: dict[str, Any] = {}
    for k in keys:
        vals = np.asarray([d[k] for d in dicts], dtype=np.float64)
        out[k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    return out


def evaluate_dataset(
    dataset: Dataset,
    cfg: StreamerConfig,
    detectors: Sequence[str],
    *,
    show_progress: bool = True,
    keep_scores: bool = True,
) -> DatasetResult:
    """Evaluate every series of ``dataset`` with ``cfg`` (which already carries the dataset's
    overrides); returns the figures per detector (mean over series for several series, each
    series under ``per_entity``)."""
    cfg.validate()
    Decoder(cfg.schema)  # fail early on a bad schema
    per: dict[str, dict[str, dict[str, Any]]] = {d: {} for d in detectors}
    kept: list[SeriesScores] = []
    bar = Progress(f"eval {dataset.name}", dataset.n_series, unit="series", enabled=show_progress, every_s=0.0)
    with tempfile.TemporaryDirectory(prefix="streamer-eval-") as tmp:
        cfg.model.dir = tmp
        for series in dataset.series:
            res = evaluate_series(series, cfg, detectors, workdir=Path(tmp))
            if res.unscored_rows:
                why = ", ".join(f"{k} {v}" for k, v in sorted(res.dead_letters.items())) or "none"
                log.warning("%s: %d of %d test rows are in no scored window (dead letters: %s); each detector's "
                            "figures count them at its lowest score", series.name, res.unscored_rows,
                            len(res.labels), why)
            # A stream that starts with the training data (NAB) is judged after it (NAB's scorer
            # skips its probationary period too).
            skip = series.judged_from
            for d in detectors:
                fig = metrics.summarize(res.labels[skip:], res.scores[d][skip:], res.alerts[d][skip:],
                                        cfg.detector.alpha)
                fig["seconds"] = round(res.seconds.get(d, 0.0), 2)
                if d == "streamer" and cfg.retrain.in_eval:
                    fig["retrains"] = len(res.retrains)
                    fig["retrains_passed"] = sum(bool(o["passed"]) for o in res.retrains)
                per[d][series.name] = fig
            if keep_scores:
                kept.append(res)
            bar.update(1, extra=series.name)
    bar.close()
    figures: dict[str, dict[str, Any]] = {}
    for d in detectors:
        rows = list(per[d].values())
        figures[d] = {**(rows[0] if len(rows) == 1 else _mean(rows)), "per_entity": per[d]}
    return DatasetResult(dataset.name, figures, kept)
