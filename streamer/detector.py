"""The scoring core: normalize -> embed -> kNN + reconstruction score -> p-value -> admission.

One :class:`Detector` holds one model version, its reservoir and its calibration. It is a pure
in-process object: the Kafka runner, the evaluation and the tests all use it the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streamer.artifact import ModelArtifact
from streamer.calibrate import (P_FLOOR, AlertCooldown, Calibrator, ChangeMemory, EntityBaseline, EntityGroups,
                                InputBaseline, RangeView, SeasonalBaseline, TransitionView, join_views,
                                significance)
from streamer.config import DetectorConfig
from streamer.score import Reservoir, combine_scores, recon_error
from streamer.window import change_columns, new_event_columns

__all__ = ["Detector", "Scored"]

# The alert significance of a range break: the floor of every view's tail probabilities.
RANGE_BREAK_SIGNIFICANCE = P_FLOOR


@dataclass(slots=True)
class Scored:
    """Scores of a batch of windows, one row each."""

    score: np.ndarray
    p_value: np.ndarray
    alert: np.ndarray  # bool
    knn: np.ndarray
    recon: np.ndarray
    sq_err: np.ndarray  # (n, F) per-feature squared reconstruction error (scaled, as scored)
    entity_p: np.ndarray | None = None  # tail probability against the entity's own baseline (when on)
    # How significant each window is, the ranking of windows: the p-value, or with an entity
    # baseline and/or an input baseline their combination (see
    # :func:`streamer.calibrate.significance`).
    significance: np.ndarray | None = None
    input_p: np.ndarray | None = None  # tail probability of the inputs against the entity's recent ones (when on)
    # With an alert cooldown or an incident gap: windows repeating an open incident of their entity
    # (never alerts, significant or not; see streamer.calibrate.AlertCooldown).
    repeat: np.ndarray | None = None
    change_p: np.ndarray | None = None  # tail probability of each new event's change (change view, when on)
    range_break: np.ndarray | None = None  # bool: the window's raw values break its entity's range (when on)
    # What the alert was decided on (alert = alert_significance < alpha, unless repeating an
    # incident): ``significance``, or with the change view its join with the change's tail; a
    # range break's, and a new transition's, is RANGE_BREAK_SIGNIFICANCE (with view_incidents
    # "own", only where it does not repeat an earlier one of its entity's: see DetectorConfig).
    alert_significance: np.ndarray | None = None
    new_transition: np.ndarray | None = None  # bool: a step its entity never made (transition view, when on)

    def __post_init__(self) -> None:
        if self.significance is None:
            self.significance = significance(self.p_value, self.entity_p, input_p=self.input_p)
        if self.alert_significance is None:
            self.alert_significance = self.significance


def input_prior(model: ModelArtifact) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the model's raw training windows, where an input baseline starts: from
    ``scoring.json`` (written since the input baseline exists), else from the model card's rounded
    ``feature_mean`` and ``feature_std``."""
    if "input_mean" in model.scoring:
        return np.asarray(model.scoring["input_mean"]), np.asarray(model.scoring["input_var"])
    data = model.card.get("data", {})
    if "feature_mean" not in data or "feature_std" not in data:
        raise ValueError(f"model {model.version} has no training feature statistics: retrain it to use "
                         "detector.input_baseline")
    return np.asarray(data["feature_mean"]), np.asarray(data["feature_std"]) ** 2


def range_prior(model: ModelArtifact, option: str = "detector.range_tolerance"
                ) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Smallest and largest value of each raw feature over the model's training windows, where a
    range view starts (and the transition view's levels lie), and how many windows that range was
    learned from (None for a model written before it was recorded): from ``scoring.json`` (written
    since the range view exists). ``option``: the setting named in the error without it."""
    if "input_min" not in model.scoring:
        raise ValueError(f"model {model.version} has no training range of its features: retrain it to use {option}")
    n = model.scoring.get("input_range_n")
    return (np.asarray(model.scoring["input_min"]), np.asarray(model.scoring["input_max"]),
            None if n is None else int(n))


def change_prior(model: ModelArtifact, new: np.ndarray) -> np.ndarray:
    """Variance of each new event's change over the model's training windows (the pairs of
    :func:`streamer.window.change_columns`), where a change view starts: from ``scoring.json``
    (written since the change view exists)."""
    var = model.scoring.get("change_var")
    if var is None or len(var) != len(new):
        raise ValueError(f"model {model.version} has no training variance of its events' changes: retrain it to "
                         "use detector.change_horizon")
    return np.asarray(var, dtype=np.float64)


def step_columns(model: ModelArtifact, option: str) -> tuple[np.ndarray, np.ndarray]:
    """The column pairs (each new event's field, the same field one event earlier) of the model's
    windows (:func:`streamer.window.change_columns`), which the change and transition views judge;
    a clear error naming ``option`` when its windows have none (not count windows of 2 or more)."""
    new, prev = change_columns(model.normalizer.names, model.config.window)
    if not len(new):
        raise ValueError(f"{option} needs count windows of at least 2 events; model {model.version} has "
                         f"{model.config.window.kind} windows of {model.config.window.size}")
    return new, prev


def _either(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """Element-wise or of two optional boolean arrays (None where both are)."""
    if a is None:
        return b
    return a if b is None else a | b


class Detector:
    def __init__(self, model: ModelArtifact, cfg: DetectorConfig) -> None:
        self.model = model
        self.cfg = cfg
        self.k = int(model.scoring["k"])
        self.recon_weight = float(model.scoring["recon_weight"])
        # (models trained before the option existed averaged every feature)
        self.recon_top = int(model.scoring.get("recon_top", 0))
        self.knn_scale = float(model.scoring["knn_scale"])
        self.recon_scale = float(model.scoring["recon_scale"])
        scale = model.scoring.get("feature_error_scale")
        self.err_scale = None if scale is None else np.asarray(scale, dtype=np.float64)
        # (models trained before the option existed scored plain distances)
        density_k = self.k if model.scoring.get("knn_density") else 0
        self.reservoir = Reservoir(cfg.reservoir_size, model.embedder.latent_dim, seed=cfg.seed,
                                   workers=cfg.knn_threads, density_k=density_k)
        seed = model.reservoir_seed[-cfg.reservoir_size:]
        self.reservoir.add(seed)
        self.calibrator = Calibrator(model.calibration, cfg.alpha, tail=cfg.p_tail)
        self.baseline = (EntityBaseline(model.calibration, horizon=cfg.entity_baseline,
                                        short=cfg.entity_baseline_short)
                         if cfg.entity_baseline else None)
        self.input_baseline = self.seasonal = self.range = None
        # each event's raw features once, for the views that judge them: the columns of the events
        # new to each window
        self.input_cols = (new_event_columns(model.normalizer.names, model.config.window)
                           if cfg.input_baseline or cfg.seasonal_period_s or cfg.range_tolerance else None)
        if cfg.range_tolerance:
            lo, hi, n = range_prior(model)
            if cfg.range_warmup and n is None:
                raise ValueError(f"model {model.version} has no count of the windows its range was learned from: "
                                 "retrain it to use detector.range_warmup")
            self.range = RangeView(lo[self.input_cols], hi[self.input_cols], tolerance=cfg.range_tolerance,
                                   warmup=math.ceil(cfg.range_warmup * (n or 0)))
        if cfg.input_baseline or cfg.seasonal_period_s:
            mean, var = input_prior(model)
            mean, var = mean[self.input_cols], var[self.input_cols]
            if cfg.input_baseline:
                self.input_baseline = InputBaseline(mean, var, horizon=cfg.input_baseline)
            if cfg.seasonal_period_s:
                self.seasonal = SeasonalBaseline(mean, var, period_s=cfg.seasonal_period_s,
                                                 buckets=cfg.seasonal_buckets, horizon=cfg.seasonal_horizon,
                                                 clip=cfg.seasonal_clip)
        self.change = self.change_memory = None
        if cfg.change_horizon:
            new, prev = step_columns(model, "detector.change_horizon")
            # Not on the columns the normalizer log-compresses (bursty counts): their changes are far
            # from the normal tail the view judges them by (the NAB-like bursty validation lost).
            smooth = ~np.asarray(model.normalizer.log, dtype=bool)[new]
            self.change_new, self.change_prev = new[smooth], prev[smooth]
            if smooth.any():
                n = len(self.change_new)
                self.change = InputBaseline(np.zeros(n), change_prior(model, new)[smooth], horizon=cfg.change_horizon)
                if cfg.change_memory_s:
                    self.change_memory = ChangeMemory(n, span_s=cfg.change_memory_s)
        self.transition = None
        if cfg.transition_levels:
            new, prev = step_columns(model, "detector.transition_levels")
            lo, hi, n = range_prior(model, "detector.transition_levels")
            if cfg.transition_warmup and n is None:
                raise ValueError(f"model {model.version} has no count of the windows it was trained on: "
                                 "retrain it to use detector.transition_warmup")
            self.transition_new, self.transition_prev = new, prev
            # the levels are those of each new value's own feature (the previous one shares its field)
            self.transition = TransitionView(lo[new], hi[new], levels=cfg.transition_levels,
                                             warmup=math.ceil(cfg.transition_warmup * (n or 0)))
        self.cooldown = (AlertCooldown(cfg.alert_cooldown, gap=cfg.incident_gap, alpha=cfg.alpha)
                         if cfg.alert_cooldown or cfg.incident_gap else None)
        # With view_incidents "own": the range and transition views' floor alerts are grouped among
        # themselves, by the same rules, and do not hold the cooldown's incidents open.
        self.view_cooldown = (AlertCooldown(cfg.alert_cooldown, gap=cfg.incident_gap, alpha=cfg.alpha)
                              if self.cooldown is not None and cfg.view_incidents == "own"
                              and (self.range is not None or self.transition is not None) else None)
        # (the views define __len__: test them for None, not truthiness)
        self._per_entity = any(v is not None for v in (self.baseline, self.input_baseline, self.seasonal,
                                                        self.change, self.range, self.transition, self.cooldown))

    @property
    def version(self) -> str:
        return self.model.version

    def carry_over(self, old: Detector) -> None:
        """Keep what ``old`` (the detector this one replaces in a hot swap) learned that does not
        depend on its model: the input, seasonal, change, range and transition views (they judge raw
        values, and a seasonal one needs days of a stream to learn its phases; the transition view
        keeps the levels of the model it started with, which its learned steps are in) and the alert
        cooldown's open incidents (significances are comparable across models). The entity baseline
        judges the model's own score and restarts from the new calibration. Both detectors build the same
        windows (:meth:`Pipeline.swap_model` refuses other ones), so their input columns agree."""
        if self.input_baseline is not None and old.input_baseline is not None:
            self.input_baseline = old.input_baseline
        if self.seasonal is not None and old.seasonal is not None:
            self.seasonal = old.seasonal
        if self.change is not None and old.change is not None:
            self.change = old.change
        if self.change_memory is not None and old.change_memory is not None:
            self.change_memory = old.change_memory
        if self.range is not None and old.range is not None:
            self.range = old.range
        if self.transition is not None and old.transition is not None:
            self.transition = old.transition
        if self.cooldown is not None and old.cooldown is not None:
            self.cooldown = old.cooldown
        if self.view_cooldown is not None and old.view_cooldown is not None:
            self.view_cooldown = old.view_cooldown

    def score(self, x_raw: np.ndarray, *, admit: bool = True, entity: np.ndarray | None = None,
              t_ms: np.ndarray | None = None) -> Scored:
        """Score raw window features; admit the windows judged normal into the reservoir. With an
        entity baseline (input baseline) configured and ``entity`` given (one key per window, in
        stream order), each window's score (raw features) is also judged against its entity's
        recent ones, and with a seasonal baseline and ``t_ms`` (each window's newest event time)
        against its entity's at the same phase of the period; with the change view, each new
        event's change from the one before it (with a change memory, its excess over the entity's
        largest recent change) against its entity's recent changes (the alert decision only:
        ``Scored.alert_significance``); with the range view, a window whose raw values break its
        entity's range alerts whatever the rest says, and so, with the transition view, does a
        window making a step between levels of its range its entity never made; with an alert
        cooldown, windows repeating an open incident of their entity do not alert."""
        xn = self.model.normalizer.transform(x_raw)
        z, sq = self.model.embedder.embed(xn)
        knn = self.reservoir.knn(z, self.k)
        if self.err_scale is not None:
            sq = sq / self.err_scale  # per-feature errors in units of their normal size
        recon = recon_error(sq, top=self.recon_top)
        s = combine_scores(knn, recon, knn_scale=self.knn_scale, recon_scale=self.recon_scale,
                           recon_weight=self.recon_weight)
        p = self.calibrator.p_values(s)
        if admit:
            normal = (p >= self.cfg.admit_p) & np.isfinite(z).all(axis=1)
            self.reservoir.add(z[normal])
        # the batch's windows grouped by entity once, for every per-entity view below
        groups = EntityGroups.of(entity) if entity is not None and self._per_entity else None
        q = self.baseline.update(groups, s) if self.baseline is not None and groups is not None else None
        q_in = None
        # the raw features the input, seasonal and range views judge, taken once
        x_in = x_raw[:, self.input_cols] if groups is not None and self.input_cols is not None else None
        # (the baselines define __len__: test them for None, not truthiness)
        if x_in is not None and (self.input_baseline is not None or self.seasonal is not None):
            if self.input_baseline is not None:
                q_in = self.input_baseline.update(groups, x_in)
            if self.seasonal is not None and t_ms is not None:
                q_se = self.seasonal.update(groups, t_ms, x_in)
                # two views of the inputs: the more surprised one decides, at twice its tail (Bonferroni)
                q_in = join_views(q_in, q_se)
        sig = significance(p, q, self.cfg.entity_baseline_rule, input_p=q_in)
        q_ch = None
        sig_alert = sig
        if self.change is not None and groups is not None:
            d = x_raw[:, self.change_new] - x_raw[:, self.change_prev]
            # with a memory, a change is judged by its excess over its entity's largest recent one
            judge = (self.change_memory.excess(groups, t_ms, d)
                     if self.change_memory is not None and t_ms is not None else None)
            q_ch = self.change.update(groups, d, judge)
            # The change view decides alerts only: the ranking (sig) stays as without it.
            sig_alert = significance(p, q, self.cfg.entity_baseline_rule,
                                     input_p=join_views(q_in, q_ch, self.cfg.change_share))
        sig_views_off = sig_alert  # what alerts are decided on without the floor views
        brk = None
        if self.range is not None and x_in is not None:
            # a range break alerts whatever the other views say (at the floor, as significant as any
            # window can be); the ranking (sig) stays as without it
            brk = self.range.update(groups, x_in)
            sig_alert = np.where(brk, RANGE_BREAK_SIGNIFICANCE, sig_alert)
        novel = None
        if self.transition is not None and groups is not None:
            # a step the entity never made alerts as a range break does; the ranking stays as without it
            novel = self.transition.update(groups, x_raw[:, self.transition_new], x_raw[:, self.transition_prev])
            sig_alert = np.where(novel, RANGE_BREAK_SIGNIFICANCE, sig_alert)
        repeat = None
        if self.cooldown is not None and groups is not None:
            floor = _either(brk, novel)
            if self.view_cooldown is not None and floor is not None:
                # The views' alerts repeat only one another, and every window enters the cooldown
                # with its significance without them; a view's repeat is judged as any other window.
                model_repeat = self.cooldown.update(groups, sig_views_off)
                view_repeat = self.view_cooldown.update(groups, np.where(floor, RANGE_BREAK_SIGNIFICANCE, 1.0))
                view_alert = floor & ~view_repeat
                sig_alert = np.where(view_alert, RANGE_BREAK_SIGNIFICANCE, sig_views_off)
                repeat = model_repeat & ~view_alert
            else:
                repeat = self.cooldown.update(groups, sig_alert)
        alert = self.calibrator.is_alert(sig_alert)
        if repeat is not None:
            alert &= ~repeat
        return Scored(s, p, alert, knn, recon, sq, q, sig, q_in, repeat, q_ch, brk, sig_alert, novel)
