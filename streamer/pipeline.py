"""The whole detection pipeline in-process: records in, alerts and dead letters out.

``decode -> window -> (normalize -> embed -> score -> calibrate, in Detector) -> alert``. The Kafka
runner feeds it consumer batches; the demo, the evaluation and the tests feed it lists of records.
The schema and window spec come from the model's own config, so a detector always builds exactly
the windows its model was trained on.

:meth:`Pipeline.swap_model` replaces the model between two batches (hot swap): the window state is
kept (a swap to a model with another schema or window is refused), the new model's detector starts
from its own reservoir seed and calibration, and re-scores the raw windows the old one recently
admitted (``detector.swap_windows`` of them), admitting those it judges normal itself. The input
and seasonal baselines and the alert cooldown carry over (:meth:`Detector.carry_over`); the entity
baseline, which judges the model's own score, restarts from the new calibration.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamer.alert import build_alerts, feature_groups
from streamer.artifact import ModelArtifact
from streamer.config import DetectorConfig
from streamer.decode import Decoder
from streamer.detector import Detector, Scored
from streamer.errors import ArtifactError
from streamer.recent import RecentWindows
from streamer.records import DeadLetter, Record, WindowBatch
from streamer.window import Partition, make_windower

__all__ = ["Pipeline", "StepResult", "ModelSwapError"]

log = logging.getLogger(__name__)


@dataclass
class StepResult:
    """What one batch produced."""

    alerts: list[dict[str, Any]]
    dead: list[DeadLetter]
    windows: WindowBatch
    scored: Scored | None
    n_records: int = 0
    n_events: int = 0
    model_version: str = ""


class ModelSwapError(ArtifactError):
    """A model that cannot replace the running one (other schema, window or features)."""


@dataclass
class Counters:
    records: int = 0
    events: int = 0
    windows: int = 0
    alerts: int = 0
    dead: Counter[str] = field(default_factory=Counter)


class Pipeline:
    def __init__(self, model: ModelArtifact, detector_cfg: DetectorConfig) -> None:
        self.detector_cfg = detector_cfg
        schema, window = model.config.schema, model.config.window
        self.decoder = Decoder(schema)
        self.windower = make_windower(self.decoder.feature_names, window)
        if self.windower.feature_names != model.normalizer.names:
            raise ValueError("the model was trained on other window features than this config builds")
        self.schema, self.window = schema, window
        self.detector = Detector(model, detector_cfg)
        self.groups = feature_groups(self.windower.feature_names)
        self.counters = Counters()
        # Raw windows recently admitted to the reservoir, for a hot-swapped model to re-embed.
        self.recent = RecentWindows(detector_cfg.swap_windows, len(self.windower.feature_names))

    @property
    def model_version(self) -> str:
        return self.detector.version

    def process(self, records: list[Record]) -> StepResult:
        """Decode, window and score one batch of records."""
        events, dead, kept = self.decoder.decode(records)
        windows, late = self.windower.push(events)
        for i in late:
            dead.append(DeadLetter("late_event", "the event's time window had already closed", records[kept[i]]))
        result = self._score(windows)
        result.dead = dead
        result.n_records, result.n_events = len(records), len(events) - len(late)
        self._count(result)
        return result

    def flush(self) -> StepResult:
        """Close and score every open window (end of stream)."""
        result = self._score(self.windower.flush())
        self._count(result)
        return result

    def held_offsets(self) -> dict[Partition, int]:
        return self.windower.held_offsets()

    def swap_model(self, model: ModelArtifact) -> int:
        """Replace the model (call between two batches). Raises :class:`ModelSwapError`, keeping the
        current model, when the new one builds other windows. Returns how many of the recently
        admitted raw windows the new model admitted into its reservoir."""
        if (model.config.schema, model.config.window) != (self.schema, self.window):
            diff = [n for n, a, b in (("schema", model.config.schema, self.schema),
                                      ("window", model.config.window, self.window)) if a != b]
            raise ModelSwapError(f"model {model.name}/{model.version} was trained on another {' and '.join(diff)} "
                                 f"than the running model {self.model_version}: a swap would change the windows")
        if model.normalizer.names != self.windower.feature_names:
            raise ModelSwapError(f"model {model.name}/{model.version} expects other window features")
        detector = Detector(model, self.detector_cfg)
        before = detector.reservoir.admitted
        if len(self.recent):
            detector.score(self.recent.x, admit=True)  # the new model judges what the old one admitted
        detector.carry_over(self.detector)
        self.detector = detector
        return detector.reservoir.admitted - before

    def drop_partitions(self, partitions: set[Partition]) -> None:
        self.windower.drop_partitions(partitions)

    def _score(self, windows: WindowBatch) -> StepResult:
        if len(windows) == 0:
            return StepResult([], [], windows, None, model_version=self.model_version)
        if not np.isfinite(windows.x).all():  # defensive: decode rejects non-finite input
            bad = ~np.isfinite(windows.x).all(axis=1)
            log.warning("dropping %d windows with non-finite aggregates", int(bad.sum()))
            windows = windows.take(np.nonzero(~bad)[0])
        scored = self.detector.score(windows.x, entity=windows.entity, t_ms=windows.end_ms)
        if self.recent.capacity:
            keep = (scored.p_value >= self.detector_cfg.admit_p) & np.isfinite(scored.knn)
            if keep.any():
                self.recent.add(windows.x[keep], windows.end_ms[keep], windows.entity[keep])
        cal = self.detector.calibrator
        alerts = build_alerts(
            windows, scored, groups=self.groups, model_version=self.model_version, threshold=cal.threshold,
            alpha=cal.alpha, top_features=self.detector_cfg.top_features,
        )
        return StepResult(alerts, [], windows, scored, model_version=self.model_version)

    def _count(self, r: StepResult) -> None:
        c = self.counters
        c.records += r.n_records
        c.events += r.n_events
        c.windows += len(r.windows)
        c.alerts += len(r.alerts)
        c.dead.update(d.reason for d in r.dead)
