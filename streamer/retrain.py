"""``streamer retrain``: the retrainer, with drift detection and a validation gate.

A service with its own consumer group (``retrain.group_id``) on the input topics. It runs the
detector's own :class:`~streamer.pipeline.Pipeline` with the announced model and sorts every closed
window, in event-time order across partitions, by that model's verdict:

* not alerted on (``p >= alpha``): the **reservoir**, the newest ``retrain.reservoir_windows`` raw
  windows (first in first out): the training data;
* alerted on, below the confident level: the **quarantine**, trained on only after a confirmed
  change of regime;
* alerted on with a score at least ``retrain.confident_factor`` times the alert threshold: the
  **confident set** (``retrain.confident_keep``), never trained on; candidates must keep flagging it.

A River drift detector (ADWIN or Page-Hinkley) watches the calibrated score stream ``1 - p`` and the
false-alarm stream (confident alerts left out). After a detection, and for every new model, the last
``retrain.drift_windows`` windows decide whether the regime changed (:meth:`_Watch.verdict`:
false-alarm rate above ``retrain.drift_confirm_ratio`` x alpha, scores high in each third, and not
still climbing). A confirmed change is dated (:func:`change_point`) and retrained on at once, with
the quarantined alerts since it began. The retrainer also retrains every ``retrain.interval_s``
seconds and every ``retrain.every_windows`` new normal windows.

A retrain holds out every k-th window in time (``retrain.gate_share``) and trains on the others with
:func:`streamer.train.fit_on_windows` (early stopping on the newest share, one log line per epoch;
with ``retrain.warm_start`` from the weights of the model in service).
The **gate** (:func:`evaluate_gate`): the candidate's false-alarm rate at alpha on the held-out
windows is at most ``alpha * (1 + retrain.gate_far_tolerance)``, and it still flags at least
``retrain.gate_min_confident_recall`` of the confident alerts from before the change (so a slow ramp
of poisoned traffic cannot lower the bar). The gate scores the windows out of their stream (the
model's calibrated score alone); with ``retrain.gate_reference`` ``current`` its bars are no
stricter than what the model in service achieves, scored the same way on the same windows. A
passing candidate is written to the store and announced on ``topics.models`` (detectors hot-swap
to it); a failing one is written under
``<model.dir>/<name>/rejected/`` with its gate figures in its card, logged, not announced, and the
retrainer tries again after ``retrain.retry_s``. Artifacts are written to a temporary directory and
renamed into place: a crash mid-training leaves nothing half-written visible.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamer.artifact import ModelArtifact, load_artifact_dir, new_version
from streamer.config import StreamerConfig
from streamer.detector import Detector
from streamer.errors import StreamerError
from streamer.pipeline import Pipeline, StepResult
from streamer.recent import RecentWindows
from streamer.records import WindowBatch

__all__ = ["Retrainer", "evaluate_gate", "RetrainStats", "make_drift_detector", "confident_mask", "change_point"]

log = logging.getLogger(__name__)

STATS_EVERY_S = 30.0


def confident_mask(score: np.ndarray, threshold: float, factor: float, significant: np.ndarray) -> np.ndarray:
    """Significant windows (alerted, or grouped into an open incident by an alert cooldown) with a
    score at least ``factor`` times the alert threshold: the windows a candidate must keep
    flagging."""
    if not np.isfinite(threshold):
        return np.zeros(len(score), dtype=bool)
    return np.asarray(significant, dtype=bool) & (score >= factor * max(threshold, 1e-12))


def evaluate_gate(candidate: ModelArtifact, cfg: StreamerConfig, normal_x: np.ndarray, confident_x: np.ndarray,
                  *, current: Detector | None = None, changed_x: np.ndarray | None = None) -> dict[str, Any]:
    """The validation gate. ``normal_x``: held-out recent normal raw windows; ``confident_x``: the
    raw windows the current model alerted on with high confidence, which the candidate must still
    flag; ``changed_x``: confident alerts since a confirmed change of regime began (reported, not
    required). Returns the figures, with ``passed`` and the ``reasons`` it failed."""
    alpha = cfg.detector.alpha
    r = cfg.retrain
    det = Detector(candidate, cfg.detector)
    far_max = alpha * (1.0 + r.gate_far_tolerance)
    min_recall = r.gate_min_confident_recall
    relative = r.gate_reference == "current" and current is not None
    out: dict[str, Any] = {"alpha": alpha, "far_max": far_max, "normal_n": int(len(normal_x)),
                           "confident_n": int(len(confident_x)), "min_confident_recall": min_recall,
                           "reference": "current" if relative else "alpha"}
    reasons = []
    if len(normal_x):
        far = float(det.score(normal_x, admit=False).alert.mean())
        out["false_alarm_rate"] = far
        bar, why = far_max, f"alpha {alpha:g} x (1 + {r.gate_far_tolerance:g})"
        if current is not None:
            cur = float(current.score(normal_x, admit=False).alert.mean())
            out["current_false_alarm_rate"] = cur
            if relative and cur > bar:
                bar, why = cur, "the current model's rate on them"
        out["far_max"] = bar
        if far > bar:
            reasons.append(f"false-alarm rate {far:.4f} on {len(normal_x)} held-out normal windows exceeds "
                           f"{bar:.4f} ({why})")
    else:
        out["false_alarm_rate"] = None
        reasons.append("no held-out normal windows")
    if len(confident_x):
        flagged = det.score(confident_x, admit=False).alert
        recall = float(flagged.mean())
        out["confident_flagged"] = int(flagged.sum())
        out["confident_recall"] = recall
        bar, why = min_recall, f"{min_recall:g}"
        if relative:
            cur = float(current.score(confident_x, admit=False).alert.mean())
            out["current_confident_recall"] = cur
            if cur < bar:
                bar, why = cur, f"the current model's {cur:.2f} scored the same way"
        out["min_confident_recall"] = bar
        if recall < bar:
            reasons.append(f"flags only {int(flagged.sum())} of the {len(confident_x)} windows the current model "
                           f"alerted on with high confidence ({recall:.2f} < {why})")
    else:
        out["confident_flagged"] = 0
        out["confident_recall"] = None
    if changed_x is not None and len(changed_x):
        out["changed_regime_confident_n"] = int(len(changed_x))
        out["changed_regime_confident_flagged"] = int(det.score(changed_x, admit=False).alert.sum())
    out["passed"] = not reasons
    out["reasons"] = reasons
    return out


def change_point(end_ms: np.ndarray, level: np.ndarray) -> int:
    """Where the mean of ``level`` (in event-time order) most likely stepped up: the end time of the
    first window after the minimum of the cumulative sum of deviations from the mean (CUSUM)."""
    if len(level) < 2:
        return int(end_ms[0]) if len(end_ms) else 0
    order = np.argsort(end_ms, kind="stable")
    x = np.asarray(level, dtype=np.float64)[order]
    k = int(np.argmin(np.cumsum(x - x.mean())))
    return int(np.asarray(end_ms)[order][min(k + 1, len(x) - 1)])


class _Upward:
    """A River drift detector (ADWIN or Page-Hinkley) that reports upward changes of the mean only."""

    def __init__(self, kind: str, delta: float, threshold: float) -> None:
        from river import drift

        self.kind = kind
        if kind == "adwin":
            self._d: Any = drift.ADWIN(delta=delta, clock=16)
        else:
            self._d = drift.PageHinkley(threshold=threshold, mode="up", min_instances=50)

    def update(self, xs: np.ndarray) -> bool:
        hit = False
        for x in xs.tolist():
            before = getattr(self._d, "estimation", 0.0)
            self._d.update(float(x))
            if self._d.drift_detected and (self.kind != "adwin" or self._d.estimation > before):
                hit = True
        return hit


class _Drift:
    """Two upward-change detectors: on the calibrated score stream (``1 - p``, uniform on normal
    data exchangeable with the calibration set; reacts to a shift of the whole distribution) and on
    the false-alarm indicator stream (reacts to more alerts). Confident alerts are left out of both:
    a burst of attacks is not a new normal."""

    def __init__(self, kind: str, delta: float, threshold: float) -> None:
        self.kind = kind
        self.score = _Upward(kind, delta, threshold)
        self.alarm = _Upward(kind, delta, threshold)

    def update(self, p_value: np.ndarray, false_alarm: np.ndarray) -> str | None:
        """Feed one batch (windows that are not confident alerts); the stream that drifted, if any."""
        s = self.score.update(1.0 - np.asarray(p_value, dtype=np.float64))
        a = self.alarm.update(np.asarray(false_alarm, dtype=np.float64))
        return "score" if s else "false-alarm" if a else None


def make_drift_detector(cfg: StreamerConfig) -> _Drift | None:
    r = cfg.retrain
    if r.drift_detector == "off":
        return None
    return _Drift(r.drift_detector, r.drift_delta, r.drift_threshold)


@dataclass
class RetrainStats:
    records: int = 0
    windows: int = 0
    admitted: int = 0  # windows into the reservoir (not alerted on)
    quarantined: int = 0  # alerts that were not confident alerts
    confident: int = 0
    drifts: int = 0
    trainings: int = 0
    published: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    failed: int = 0
    outcomes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Watch:
    """A check in progress of whether the regime changed: after a drift detection, and for every
    new model. Per window (confident alerts left out), in event-time order: its end, whether it was
    a false alarm, and its calibrated score ``1 - p`` (uniform on data like the calibration set)."""

    why: str  # "drift" or "false alarms"
    _end: list[np.ndarray] = field(default_factory=list)
    _alarms: list[np.ndarray] = field(default_factory=list)
    _level: list[np.ndarray] = field(default_factory=list)
    seen: int = 0
    start_ms: int | None = None  # end of the first window watched

    def add(self, end_ms: np.ndarray, alarm: np.ndarray, level: np.ndarray) -> None:
        if not len(end_ms):
            return
        if self.start_ms is None:
            self.start_ms = int(np.min(end_ms))
        self._end.append(np.asarray(end_ms, dtype=np.int64))
        self._alarms.append(np.asarray(alarm, dtype=bool))
        self._level.append(np.asarray(level, dtype=np.float64))
        self.seen += len(end_ms)

    def trailing(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The last ``n`` windows: ends, false-alarm flags and calibrated scores."""
        if not self._end:
            return np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0)
        e, a, lv = (np.concatenate(x)[-n:] for x in (self._end, self._alarms, self._level))
        self._end, self._alarms, self._level = [e], [a], [lv]  # keep no more than needed
        return e, a, lv

    def verdict(self, n: int, bar: float, parts: int = 3, z: float = 2.0) -> tuple[bool, str, int | None]:
        """Did the regime change, and settle, over the last ``n`` windows? Yes when their
        false-alarm rate is above ``bar``; in each of ``parts`` consecutive stretches their mean
        calibrated score is above that of data like the calibration set (1/2) by ``z`` standard
        errors (a change that lasts, not a burst); and the last stretch is not above the first by
        ``z`` standard errors (a level that holds, not a ramp that keeps climbing). Also returns
        the end of the first window considered."""
        e, a, lv = self.trailing(n)
        rate = float(a.mean()) if len(a) else 0.0
        chunks = np.array_split(lv, parts)
        se = [0.2887 / np.sqrt(len(c)) if len(c) else 1.0 for c in chunks]
        means = [float(c.mean()) if len(c) else 0.0 for c in chunks]
        lasting = all(m > 0.5 + z * s for m, s in zip(means, se))
        settled = means[-1] - means[0] < z * float(np.hypot(se[0], se[-1]))
        ok = rate > bar and lasting and settled
        text = (f"false-alarm rate {rate:.4f} over {len(a)} windows (needs > {bar:g}); mean calibrated score "
                + "/".join(f"{m:.3f}" for m in means) + " (each needs > "
                + "/".join(f"{0.5 + z * s:.3f}" for s in se) + (", and no climb" if lasting else "") + ")"
                + ("" if settled or not lasting else ": still climbing"))
        return ok, text, int(e[0]) if len(e) else None


@dataclass
class _Judged:
    """Windows with the verdict of the model that scored them."""

    x: np.ndarray
    end_ms: np.ndarray
    entity: np.ndarray
    p: np.ndarray
    kind: np.ndarray  # 0 normal (not alerted on), 1 alert, 2 confident alert, 3 unusable

    def take(self, idx: np.ndarray) -> _Judged:
        return _Judged(self.x[idx], self.end_ms[idx], self.entity[idx], self.p[idx], self.kind[idx])

    @staticmethod
    def concat(parts: list[_Judged]) -> _Judged:
        return _Judged(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("x", "end_ms", "entity", "p", "kind")))


class _EventTimeMerge:
    """Releases windows from several partitions in event-time order: a window waits until every
    partition still being read has closed windows up to its end. A consumer catching up on a
    backlog reads partition after partition; the drift detectors and the reservoir should see one
    stream in time order, as they would live."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, int], list[_Judged]] = {}
        self._progress: dict[tuple[str, int], int] = {}

    def push(self, j: _Judged | None, topic: np.ndarray | None = None, partition: np.ndarray | None = None) -> None:
        if j is None or not len(j.end_ms):
            return
        keys = list(zip(topic.tolist(), partition.tolist())) if topic is not None else [("", 0)] * len(j.end_ms)
        uniq: dict[tuple[str, int], list[int]] = {}
        for i, k in enumerate(keys):
            uniq.setdefault(k, []).append(i)
        for k, idx in uniq.items():
            part = j.take(np.asarray(idx))
            self._pending.setdefault(k, []).append(part)
            self._progress[k] = max(self._progress.get(k, part.end_ms.min()), int(part.end_ms.max()))

    @property
    def waiting(self) -> int:
        return sum(len(p.end_ms) for parts in self._pending.values() for p in parts)

    def release(self, assigned: set[tuple[str, int]] | None = None, done: set[tuple[str, int]] | None = None, *,
                everything: bool = False) -> _Judged | None:
        """Windows every partition still being read has passed: ``assigned`` partitions that are not
        ``done`` (read to their end) hold windows back, a partition not read yet holds all of them;
        with ``everything``, all that wait."""
        reading = set(assigned) if assigned else set(self._progress)  # a revoked partition holds nobody back
        blocking = [self._progress.get(k, -(2**62)) for k in reading - set(done or ())]
        horizon = None if everything or not blocking else min(blocking)
        out = []
        for k, chunks in list(self._pending.items()):
            if not chunks:
                continue
            j = _Judged.concat(chunks)
            ready = np.ones(len(j.end_ms), bool) if horizon is None else j.end_ms <= horizon
            if ready.any():
                out.append(j.take(np.nonzero(ready)[0]))
            rest = j.take(np.nonzero(~ready)[0])
            self._pending[k] = [rest] if len(rest.end_ms) else []
        return _Judged.concat(out) if out else None


class Retrainer:
    """The retrainer's logic (:meth:`observe`, :meth:`due`, :meth:`retrain`) and its Kafka loop
    (:meth:`run`). The logic works on pipeline results alone, so tests can drive it in-process."""

    # A change is confirmed when the scores stay high in each of this many stretches of the last
    # ``retrain.drift_windows`` windows (a burst of attacks is not a new normal); a watch still not
    # confirmed after (this many + 1) x ``drift_windows`` windows is dropped.
    CONFIRM_PARTS = 3

    def __init__(
        self,
        cfg: StreamerConfig,
        model: ModelArtifact,
        *,
        announce: bool = True,
        clock: Callable[[], float] = time.monotonic,
        stop_at_end: bool = False,
        max_publications: int | None = None,
    ) -> None:
        self.cfg = copy.deepcopy(cfg)
        # A retrained model must build exactly the windows of the running one.
        self.cfg.schema, self.cfg.window = copy.deepcopy(model.config.schema), copy.deepcopy(model.config.window)
        self.cfg.model.name = model.name
        self.pipeline = Pipeline(model, self.cfg.detector)
        self.names = list(self.pipeline.windower.feature_names)
        r = self.cfg.retrain
        self.reservoir = RecentWindows(r.reservoir_windows, len(self.names))
        self.quarantine = RecentWindows(r.reservoir_windows, len(self.names))
        self.confident = RecentWindows(r.confident_keep, len(self.names))
        self.drift = make_drift_detector(self.cfg)
        self.announce = announce
        self.clock = clock
        self.stop_at_end = stop_at_end
        self.max_publications = max_publications
        self.stats = RetrainStats()
        self.announced: Any = None  # the newest Announcement known
        self._last_train_t = clock()
        self._admitted_at_train = 0
        self._next_attempt_t = 0.0
        # Is the running model's false-alarm rate where it should be? Checked from the start, after
        # every new model, and after every drift detection.
        self._watch: _Watch | None = _Watch("false alarms")
        self._change_ms: int | None = None  # where the confirmed change began (event time)
        # Recent calibrated scores, to date a confirmed change (it began before it was detected).
        self._history = RecentWindows(4 * max(r.drift_windows, 1), 0)
        self._stop = threading.Event()

    @property
    def model_version(self) -> str:
        return self.pipeline.model_version

    @property
    def min_windows(self) -> int:
        """``retrain.min_windows``, raised so that the candidate's calibration set (the newest
        ``model.validation_split`` of the windows it trains on) holds at least 1/alpha windows: with
        fewer, no p-value can fall below alpha and the new model could never alert."""
        share = self.cfg.model.validation_split * (1.0 - self.cfg.retrain.gate_share)
        return max(self.cfg.retrain.min_windows, math.ceil(1.0 / self.cfg.detector.alpha / share) + 1)

    def stop(self) -> None:
        self._stop.set()

    # -- the logic ---------------------------------------------------------------------------------
    def observe(self, result: StepResult) -> None:
        """Take one pipeline result (its windows in event-time order): sort its windows into the
        reservoir (not alerted on), the quarantine (alerted on, not confidently) and the confident
        alerts; feed the drift detectors."""
        self._take(self._classify(result))

    def _classify(self, result: StepResult) -> _Judged | None:
        """The current model's verdict on a result's windows (kept with them while they wait)."""
        if result.scored is None or len(result.windows) == 0:
            return None
        w, sc = result.windows, result.scored
        calibrator = self.pipeline.detector.calibrator
        threshold = calibrator.threshold
        # significant windows, alerted or grouped into an open incident (alert cooldown): neither
        # is normal training data
        alert = calibrator.is_alert(sc.alert_significance)
        finite = np.isfinite(sc.knn)
        confident = confident_mask(sc.score, threshold, self.cfg.retrain.confident_factor, alert)
        kind = np.where(confident, 2, np.where(alert, 1, 0)).astype(np.int8)  # 0 normal, 1 moderate, 2 confident
        kind[~finite & (kind < 2)] = 3  # non-finite: nowhere
        return _Judged(w.x, w.end_ms, w.entity, np.asarray(sc.p_value, dtype=np.float64), kind)

    def _take(self, j: _Judged | None) -> None:
        if j is None or not len(j.end_ms):
            return
        order = np.argsort(j.end_ms, kind="stable")  # event-time order
        j = j.take(order)
        r, s = self.cfg.retrain, self.stats
        normal, moderate, confident = j.kind == 0, j.kind == 1, j.kind == 2
        for store, mask in ((self.reservoir, normal), (self.quarantine, moderate), (self.confident, confident)):
            if mask.any():
                store.add(j.x[mask], j.end_ms[mask], j.entity[mask], j.p[mask])
        s.windows += len(j.end_ms)
        s.admitted += int(normal.sum())
        s.quarantined += int(moderate.sum())
        s.confident += int(confident.sum())
        judged = normal | moderate  # confident alerts are left out of the change statistics
        if self._watch is not None and judged.any():
            self._watch.add(j.end_ms[judged], moderate[judged], 1.0 - j.p[judged])
        if judged.any():
            self._history.add(np.zeros((int(judged.sum()), 0)), j.end_ms[judged], j.entity[judged], 1.0 - j.p[judged])
        if self.drift is None:
            return
        stream = self.drift.update(j.p[judged], moderate[judged])
        if stream is not None and (self._watch is None or self._watch.why != "drift"):
            s.drifts += 1
            self._watch = _Watch("drift")
            log.info("drift detected (%s on the %s stream) after %d windows; the last %d windows will tell whether "
                     "the regime changed (false-alarm rate above %g, scores high and settled)", self.drift.kind, stream,
                     s.windows, r.drift_windows, r.drift_confirm_ratio * self.cfg.detector.alpha)

    def due(self) -> str | None:
        """Why a retrain is due now (``drift``, ``false alarms``, ``windows``, ``schedule``), or None."""
        r, s = self.cfg.retrain, self.stats
        if len(self.reservoir) < self.min_windows or self.clock() < self._next_attempt_t:
            return None
        watch = self._watch
        if watch is not None and watch.seen >= r.drift_windows:
            changed, text, first_ms = watch.verdict(r.drift_windows, r.drift_confirm_ratio * self.cfg.detector.alpha,
                                                    self.CONFIRM_PARTS)
            if changed:
                # A drift began before it was detected: date it on the recent scores. For a model
                # whose false-alarm rate stays high, the change is the stretch just judged.
                self._change_ms = first_ms
                if watch.why == "drift":
                    self._change_ms = min(watch.start_ms or first_ms, change_point(self._history.end_ms,
                                                                                   self._history.p_value))
                log.info("the regime changed (%s): %s", "drift" if watch.why == "drift" else "this model", text)
                return watch.why
            if watch.seen >= (self.CONFIRM_PARTS + 1) * r.drift_windows:
                if watch.why == "drift":
                    log.info("drift not confirmed over %d windows since the detection; no retrain (last: %s)",
                             watch.seen, text)
                self._watch = None
        if r.every_windows and s.admitted - self._admitted_at_train >= r.every_windows:
            return "windows"
        if r.interval_s and self.clock() - self._last_train_t >= r.interval_s:
            return "schedule"
        return None

    def retrain_if_due(self) -> dict[str, Any] | None:
        """Retrain when :meth:`due` says so; the outcome of :meth:`retrain`, or None."""
        reason = self.due()
        return self.retrain(reason) if reason is not None else None

    def training_windows(self, reason: str) -> tuple[WindowBatch, np.ndarray, int]:
        """The candidate's training windows and the held-out gate windows (every k-th in time), and
        how many quarantined windows joined: after a confirmed change of regime, the alerts that
        were not confident alerts since it began are its new normal (their upper tail included)."""
        res, q = self.reservoir, self.quarantine
        x, end, ent = res.x, res.end_ms, res.entity
        released = 0
        since = self._change_ms if reason in ("drift", "false alarms") else None
        if since is not None and len(q):
            take = q.end_ms >= since
            released = int(take.sum())
            if released:
                x = np.concatenate([x, q.x[take]])
                end = np.concatenate([end, q.end_ms[take]])
                ent = np.concatenate([ent, q.entity[take]])
        order = np.argsort(end, kind="stable")
        x, end, ent = x[order], end[order], ent[order]
        k = max(2, int(round(1.0 / self.cfg.retrain.gate_share)))
        gate = np.zeros(len(x), dtype=bool)
        gate[k - 1::k] = True
        keep = ~gate
        n = int(keep.sum())
        zeros = np.zeros(n, dtype=np.int64)
        wb = WindowBatch(entity=ent[keep], start_ms=end[keep], end_ms=end[keep], x=x[keep],
                         topic=np.full(n, "", dtype=object), partition=zeros, offset_lo=zeros.copy(),
                         offset_hi=zeros.copy(), n_events=zeros.copy())
        return wb, x[gate], released

    def retrain(self, reason: str) -> dict[str, Any]:
        """Train a candidate, gate it, and publish or reject it. Returns the outcome."""
        from streamer.modelstore import rejected_dir
        from streamer.train import fit_on_windows

        s, r = self.stats, self.cfg.retrain
        s.trainings += 1
        self._last_train_t = self.clock()
        self._admitted_at_train = s.admitted
        version = new_version()
        train_wb, gate_x, released = self.training_windows(reason)
        # The bar that must hold: confident alerts from before a released change of regime (those
        # since its start may be extremes of the new normal: reported, not required).
        confident_x, changed_x = self.confident.x, None
        if released and self._change_ms is not None and len(self.confident):
            before = self.confident.end_ms < self._change_ms
            confident_x, changed_x = confident_x[before], confident_x[~before]
        self._watch, self._change_ms = None, None
        log.info("retraining (%s): candidate %s on %d recent windows (%d of them alerts of a changed regime, none "
                 "confident); %d held out for the gate; %d confident alerts to keep flagging", reason, version,
                 len(train_wb), released, len(gate_x), len(confident_x))
        t0 = time.monotonic()
        epochs = self.cfg.model.epochs

        def on_epoch(e: int, logs: dict[str, float]) -> None:
            log.info("training %s: epoch %d/%d loss=%.5f val_loss=%.5f", version, e, epochs,
                     logs.get("loss", float("nan")), logs.get("val_loss", float("nan")))

        outcome: dict[str, Any] = {"version": version, "reason": reason, "windows": len(train_wb),
                                   "released": released}
        try:
            init = self.pipeline.detector.model.embedder.autoencoder.get_weights() if r.warm_start else None
            cand = fit_on_windows(
                self.cfg, train_wb, self.names, show_progress=False, on_epoch=on_epoch, init_weights=init,
                source=f"retrainer ({reason}): {len(train_wb)} recent windows of {','.join(self.cfg.topics.input)}",
            )
            gate = evaluate_gate(cand.artifact(version), self.cfg, gate_x, confident_x, current=self.pipeline.detector,
                                 changed_x=changed_x)
            cand.card["gate"] = gate
            cand.card["retrain"] = {"reason": reason, "previous_version": self.model_version,
                                    "reservoir_windows": len(self.reservoir), "released_alerts": released,
                                    "gate_windows": len(gate_x)}
            outcome["gate"] = gate
            if not gate["passed"]:
                path = cand.save(version=version, root=rejected_dir(self.cfg))
                s.rejected.append(version)
                self._next_attempt_t = self.clock() + r.retry_s
                log.error("candidate %s rejected by the gate, not published (kept for inspection at %s): %s",
                          version, path, "; ".join(gate["reasons"]))
                outcome.update(passed=False, path=str(path))
            else:
                path = cand.save(version=version)
                outcome.update(passed=True, path=str(path))
                log.info("candidate %s passed the gate in %.1fs (false-alarm rate %.4f on %d held-out windows, "
                         "%s of %d confident alerts flagged)", version, time.monotonic() - t0,
                         gate["false_alarm_rate"], gate["normal_n"], gate["confident_flagged"], gate["confident_n"])
                self._adopt_published(path)
                s.published.append(version)
        except Exception as exc:  # noqa: BLE001 - a failed attempt is reported, and retried later
            s.failed += 1
            self._next_attempt_t = self.clock() + r.retry_s
            log.error("retraining failed (%s: %s); retrying in %.0fs", type(exc).__name__, exc, r.retry_s)
            outcome.update(passed=False, error=f"{type(exc).__name__}: {exc}")
        s.outcomes.append(outcome)
        return outcome

    def _adopt_published(self, path: Any) -> None:
        from streamer.modelstore import announcement_for, publish

        model = load_artifact_dir(path)  # verify what was written before anyone is told
        if self.announce:
            history = self.announced.history if self.announced is not None else [self.model_version]
            self.announced = publish(self.cfg, announcement_for(self.cfg, path, action="publish", history=history,
                                                                by="retrainer"))
        self.adopt(model)

    def adopt(self, model: ModelArtifact) -> None:
        """Run ``model`` from now on (a version published here, promoted or rolled back by hand)."""
        if model.version == self.model_version:
            return
        self.pipeline.swap_model(model)
        # A new model has a new calibration: the drift baseline starts again, and so does the check
        # of its false-alarm rate.
        self.drift = make_drift_detector(self.cfg)
        self._watch = _Watch("false alarms")
        log.info("retrainer now runs model %s", model.version)

    # -- the Kafka loop ----------------------------------------------------------------------------
    def _follow(self, ann: Any) -> None:
        from streamer.modelstore import resolve_artifact

        if ann is None:
            return
        if ann.version == self.model_version:
            self.announced = ann
            return
        try:
            self.adopt(resolve_artifact(self.cfg, ann))
        except Exception as exc:  # noqa: BLE001 - a bad announcement never stops the retrainer
            log.error("model announcement %s refused, keeping %s: %s", ann.describe(), self.model_version, exc)
            return
        self.announced = ann

    def run(self) -> RetrainStats:
        from confluent_kafka import Consumer, TopicPartition

        from streamer.kafka_io import consume_batch, consumer_config, split_messages, wait_for_broker
        from streamer.modelstore import ModelFollower, announcement_for, publish

        cfg = self.cfg
        wait_for_broker(cfg.kafka)
        follower = ModelFollower(cfg) if self.announce else None
        if follower is not None:
            latest = follower.catch_up()
            if latest is None:  # nothing announced yet: the running model becomes the first announcement
                path = self.pipeline.detector.model.path
                self.announced = publish(cfg, announcement_for(cfg, path, action="publish", history=[],
                                                               by="retrainer"))
            else:
                self._follow(latest)
        # Training blocks the loop for a while: allow it (max.poll.interval.ms).
        # End-of-partition events tell which partitions are read up to their end (the event-time
        # merge does not wait for those).
        consumer = Consumer({**consumer_config(cfg.kafka, group_id=cfg.retrain.group_id),
                             "max.poll.interval.ms": 1_800_000, "enable.partition.eof": True,
                             **cfg.kafka.settings})
        consumer.subscribe(cfg.topics.input)
        nxt: dict[tuple[str, int], int] = {}
        merge = _EventTimeMerge()
        done: set[tuple[str, int]] = set()  # partitions read to their end (until a new message)
        last_stats = time.monotonic()
        try:
            while not self._stop.is_set():
                if follower is not None:
                    self._follow(follower.poll())
                records, ended = split_messages(
                    consume_batch(consumer, cfg.kafka.batch_size, cfg.kafka.batch_timeout_s))
                seen = records.next_offsets()
                nxt.update(seen)
                done -= seen.keys()
                done |= ended
                if records:
                    self.stats.records += len(records)
                    result = self.pipeline.process(records)
                    merge.push(self._classify(result), result.windows.topic, result.windows.partition)
                    consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in nxt.items()],
                                    asynchronous=True)
                assigned = {(tp.topic, tp.partition) for tp in consumer.assignment()}
                done &= assigned
                self._take(merge.release(assigned, done, everything=bool(assigned) and done >= assigned))
                if (self.retrain_if_due() is not None and self.max_publications is not None
                        and len(self.stats.published) >= self.max_publications):
                    break
                if self.stop_at_end and not records and _at_end(consumer, nxt):
                    self._take(merge.release(everything=True))
                    self.retrain_if_due()
                    break
                if time.monotonic() - last_stats > STATS_EVERY_S:
                    last_stats = time.monotonic()
                    s = self.stats
                    log.info("%d records, %d windows: %d normal (reservoir %d), %d alerts quarantined, %d confident; "
                             "%d drifts, %d published, %d rejected; model %s", s.records, s.windows, s.admitted,
                             len(self.reservoir), s.quarantined, s.confident, s.drifts, len(s.published),
                             len(s.rejected), self.model_version)
        finally:
            try:
                if nxt:
                    consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in nxt.items()],
                                    asynchronous=False)
            except Exception as exc:  # noqa: BLE001 - the retrainer's offsets are only a convenience
                log.warning("final commit failed: %s", exc)
            consumer.close()
            if follower is not None:
                follower.close()
        return self.stats


def _at_end(consumer: Any, nxt: dict[tuple[str, int], int]) -> bool:
    assigned = consumer.assignment()
    if not assigned:
        return False
    for tp in assigned:
        lo, hi = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
        pos = nxt.get((tp.topic, tp.partition))
        if pos is None:
            got = consumer.committed([tp], timeout=10)[0].offset
            pos = got if got >= 0 else lo
        if pos < hi:
            return False
    return True


def retrainer_from_config(cfg: StreamerConfig, **kw: Any) -> Retrainer:
    """A retrainer starting from the announced model, else the configured or newest local version."""
    from streamer.artifact import load_artifact
    from streamer.modelstore import latest_announcement, resolve_artifact

    model = None
    if kw.get("announce", True):
        ann = latest_announcement(cfg)
        if ann is not None:
            try:
                model = resolve_artifact(cfg, ann)
            except StreamerError as exc:
                log.error("announced model %s unusable (%s); starting from the local store", ann.describe(), exc)
    if model is None:
        model = load_artifact(cfg.model.dir, cfg.model.name, cfg.model.version)
    return Retrainer(cfg, model, **kw)
