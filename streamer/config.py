"""One typed configuration object.

Precedence, lowest to highest: the defaults below, a YAML file (``--config FILE`` or
``STREAMER_CONFIG``), environment variables ``STREAMER_<SECTION>__<FIELD>`` (for example
``STREAMER_KAFKA__BOOTSTRAP_SERVERS``), then command-line flags (``--set section.field=value`` and
the named flags of each command). Every field carries its documentation in ``metadata["help"]``;
:func:`reference_markdown` renders the table that README.md shows.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from streamer.errors import ConfigError

__all__ = [
    "KafkaConfig",
    "TopicsConfig",
    "SchemaConfig",
    "WindowConfig",
    "ModelConfig",
    "DetectorConfig",
    "RetrainConfig",
    "StreamerConfig",
    "load_config",
    "apply_overrides",
    "reference_markdown",
    "ENV_PREFIX",
]

ENV_PREFIX = "STREAMER_"
# Parts of librdkafka setting names that hold credentials.
_SECRET_WORDS = ("password", "secret", "token", "key.pem", "keystore")
AGGREGATES = ("count", "mean", "std", "min", "max", "sum")


def _f(default: Any, help: str, *, secret: bool = False, **kw: Any) -> Any:
    meta = {"help": help, "secret": secret}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass
class KafkaConfig:
    bootstrap_servers: str = _f("127.0.0.1:9092", "Kafka bootstrap servers (host:port, comma separated).")
    group_id: str = _f("streamer-detector", "Consumer group of the detector.")
    auto_offset_reset: Literal["earliest", "latest"] = _f(
        "earliest", "Where a new consumer group starts reading: `earliest` or `latest`."
    )
    batch_size: int = _f(2000, "Most messages taken from the consumer in one batch.")
    batch_timeout_s: float = _f(
        0.2, "Longest wait for input, in seconds; a batch then takes what has arrived (up to `batch_size`) without waiting to fill."
    )
    connect_timeout_s: float = _f(
        60.0, "How long to retry, with back-off, when the broker is unreachable at start."
    )
    settings: dict[str, str] = _f(
        {},
        "Extra librdkafka settings passed through untouched to consumer and producer "
        "(`security.protocol`, `sasl.*`, `ssl.*`, ...). Env: `STREAMER_KAFKA__SETTINGS__SASL_MECHANISM=PLAIN` "
        "sets `sasl.mechanism` (`__` after SETTINGS, `_` becomes `.`).",
    )


@dataclass
class TopicsConfig:
    input: list[str] = _f(["streamer.events"], "Input topics (comma separated in env and flags).")
    alerts: str = _f("streamer.alerts", "Topic the alerts are written to.")
    dead_letter: str = _f("streamer.deadletter", "Topic bad events are written to, with the reason.")
    scores: str | None = _f(
        None, "Optional topic receiving every window's score (for downstream classifiers); empty: off."
    )
    models: str = _f(
        "streamer.models",
        "Compacted topic of model announcements (key: model name; value: version, path, checksum, validation). "
        "The retrainer and `streamer models promote|rollback` write it; detectors follow it and hot-swap.",
    )


@dataclass
class SchemaConfig:
    entity_field: str = _f("host", "Event field holding the entity key (host, flow key, sensor).")
    time_field: str | None = _f(
        "ts", "Event-time field (epoch number or ISO-8601 string); the Kafka timestamp when absent or empty."
    )
    time_unit: Literal["ms", "s"] = _f("ms", "Unit of a numeric event-time field: `ms` or `s`.")
    numeric_fields: list[str] = _f([], "Numeric feature fields (required in every event).")
    categorical_fields: list[str] = _f(
        [], "Categorical fields, encoded by hashing into `hash_buckets` buckets each (one-hot with one hash function)."
    )
    hash_buckets: int = _f(8, "Buckets per categorical field.")
    hash_functions: int = _f(
        1,
        "Buckets each categorical value sets (of its field's `hash_buckets`), each from its own hash: with 1 two "
        "values share their code whenever their buckets collide; with k > 1 only if all k buckets do.",
    )
    max_event_bytes: int = _f(65536, "Larger events go to the dead-letter topic.")


@dataclass
class WindowConfig:
    kind: Literal["record", "count", "time"] = _f(
        "record",
        "`record`: each event is one sample; `count`: the last `size` events of an entity, sliding by "
        "`slide`; `time`: per-entity windows of `seconds`, hopping by `hop_seconds`, with aggregates.",
    )
    size: int = _f(16, "Count windows: events per window.")
    slide: int = _f(1, "Count windows: events between two windows.")
    seconds: float = _f(10.0, "Time windows: window length in seconds (event time).")
    hop_seconds: float | None = _f(None, "Time windows: hop in seconds; empty means tumbling (= `seconds`).")
    aggregates: list[str] = _f(list(AGGREGATES), "Time windows: per-feature aggregates (count, mean, std, min, max, sum).")
    lateness_s: float = _f(
        0.0, "Time windows: how far behind the newest event time a window may still receive events."
    )
    idle_timeout_s: float = _f(
        3600.0, "Entity state idle this long in event time is closed and evicted (bounded memory)."
    )
    max_entities: int = _f(200_000, "Most entities with open state; the least recently seen are evicted first.")


@dataclass
class ModelConfig:
    dir: str = _f("models", "Directory of model artifacts (`<dir>/<name>/<version>/`).")
    name: str = _f("default", "Model name.")
    version: str | None = _f(None, "Version to load; empty means the newest.")
    hidden: list[int] = _f([64, 32], "Hidden layer widths of the encoder (mirrored by the decoder).")
    latent_dim: int = _f(8, "Width of the latent embedding.")
    members: int = _f(
        1,
        "Autoencoders trained side by side from different initialisations (an ensemble): the latent "
        "embedding is theirs side by side, the reconstruction error their mean. Inference and training "
        "cost grow with it.",
    )
    noise_std: float = _f(0.1, "Denoising: std of Gaussian noise added to inputs while training.")
    dropout: float = _f(0.0, "Dropout rate after each hidden layer while training (0: none; inference never drops).")
    weight_decay: float = _f(0.0, "Decoupled weight decay of the optimizer (AdamW at this rate); 0: plain Adam.")
    loss: Literal["mse", "huber"] = _f(
        "mse",
        "Training loss over the normalized features: `mse` (squared error), or `huber` (squared up to an "
        "error of one normalized unit, linear past it: extreme training windows pull the fit less). "
        "Scores are squared errors either way.",
    )
    epochs: int = _f(60, "Most training epochs (early stopping on the validation split).")
    patience: int = _f(6, "Early stopping patience in epochs.")
    train_batch_size: int = _f(256, "Training batch size.")
    learning_rate: float = _f(1e-3, "Adam learning rate.")
    lr_plateau: int = _f(
        0,
        "Halve the learning rate when the validation loss has not improved by more than 1e-4 for this "
        "many epochs, down to 1/100 of `learning_rate` (0: a constant rate).",
    )
    ema_momentum: float = _f(
        0.0,
        "Keep an exponential moving average of the weights over training steps at this momentum (Polyak "
        "averaging; 0.99 averages over about the last 100 steps): validation, early stopping and the kept "
        "model use the averaged weights. 0: off, the weights of the last step.",
    )
    validation_split: float = _f(0.2, "Share of training windows held out for validation and calibration.")
    scale_std_floor: bool = _f(
        True, "Normalizer: never scale a column tighter than its standard deviation (else the robust IQR scale)."
    )
    feature_error_norm: bool = _f(
        True, "Divide each feature's reconstruction error by its typical value on held-out normal windows."
    )
    seed: int = _f(7, "Random seed of training.")
    follow: bool = _f(
        True,
        "Detectors follow the announcements on `topics.models` and hot-swap to the announced version between "
        "two batches (off when `model.version` pins a version).",
    )
    hmac_key: str | None = _f(
        None,
        "Secret key: announcements are signed with HMAC-SHA256, and detectors refuse an announcement whose "
        "signature does not verify. Never written to artifacts or shown by `config show`; set it from the "
        "environment.",
        secret=True,
    )


@dataclass
class DetectorConfig:
    alpha: float = _f(0.001, "Target false-alarm rate: an alert fires when the p-value is below it.")
    k: int = _f(10, "Neighbours in the latent kNN distance.")
    reservoir_size: int = _f(20_000, "Embeddings of recent normal windows kept for kNN scoring.")
    recon_weight: float = _f(
        0.5, "Weight of the reconstruction error against the latent kNN distance in the score (0..1)."
    )
    recon_top: int = _f(
        0,
        "Features the reconstruction error averages: 0 averages every feature's error; m > 0 the m largest of a "
        "window's per-feature errors, so an anomaly in a few of many features is not diluted by the rest. Fixed "
        "when a model is trained (its scale and calibration depend on it): a model keeps the value it was trained with.",
    )
    knn_density: bool = _f(
        False,
        "Score the latent kNN distance relative to local density: a window's mean distance to its k nearest "
        "reservoir embeddings divided by those neighbours' own mean distance to their k nearest (as the local "
        "outlier factor does), so a window far from a sparse normal mode counts less than one as far from a dense "
        "one. Fixed when a model is trained (its scale and calibration depend on it).",
    )
    admit_p: float = _f(
        0.2, "Only windows with a p-value at least this high enter the reservoir (judged normal)."
    )
    p_tail: bool = _f(
        True,
        "Past the largest calibration score, p-values keep falling exponentially (scale: the mean excess of the "
        "top tenth of calibration scores) instead of stopping at 1/(n+1): far-out scores rank apart, and a "
        "calibration set smaller than 1/alpha can still alert. false: plain empirical p-values.",
    )
    top_features: int = _f(3, "Features named in an alert's explanation.")
    seed: int = _f(7, "Seed of reservoir replacement.")
    entity_baseline: int = _f(
        0,
        "Per-entity adaptive calibration: when > 0, a window's score is also compared with its entity's own recent "
        "scores (exponential average over about this many windows, started from the calibration scores), and that "
        "tail probability tempers the p-value an alert is decided on (`entity_baseline_rule`). 0: off.",
    )
    entity_baseline_rule: Literal["both", "geometric"] = _f(
        "both",
        "How an entity baseline's tail probability q tempers the calibrated p-value p: `both` alerts when "
        "max(p, q) < alpha (a lasting change alerts at its onset only); `geometric` when max(p, sqrt(p*q)) < alpha (a "
        "window far beyond the calibration keeps alerting through a lasting incident: higher recall, and a higher "
        "false-alarm rate on drifting data). Either way alerts are a subset of the calibrated ones.",
    )
    input_baseline: int = _f(
        0,
        "Per-entity input baseline: when > 0, the raw features of the events new to each window (count windows: the "
        "`slide` newest; otherwise all window features) are also compared with their entity's own recent values "
        "(exponential mean and variance over about this many windows, started from the training windows'); the tail "
        "probability of the most extreme one (times their number) joins the alert decision as a geometric mean with "
        "the model's significance. 0: off.",
    )
    seasonal_period_s: float = _f(
        0.0,
        "Seasonal input baseline: when > 0, the same raw features as the input baseline are also compared with "
        "their entity's values at the same phase of this period of event time (86400: time of day; 604800: time of "
        "week): each phase has its own exponential mean over about `seasonal_horizon` windows, the spread around "
        "them is pooled over the entity's phases; both start from the training windows'. Joins the alert decision "
        "like the input baseline (the smaller of the two tail probabilities, doubled, when both are on). 0: off.",
    )
    seasonal_buckets: int = _f(24, "Seasonal baseline: phases the period is cut into (24 over a day: hours).")
    seasonal_horizon: int = _f(
        30, "Seasonal baseline: windows of one phase its means average over (the pooled spread: this many times "
        "`seasonal_buckets`)."
    )
    seasonal_clip: float = _f(
        0.0,
        "Seasonal baseline: when > 0, it learns from deviations clipped at this many spreads, so a spike does not "
        "echo as a false alarm at the same phase one period later; it then also learns a lasting change more slowly "
        "(NAB: far more false alarms, see docs/evaluation-log.md). 0: unclipped.",
    )
    change_horizon: int = _f(
        0,
        "Change view (count windows of at least 2 events): when > 0, the change of each new event's raw features "
        "from the event before it is compared with its entity's recent changes (exponential mean and variance over "
        "about this many windows, started from mean 0 and the training windows' variance of that change), except "
        "in the columns the normalizer log-compresses (bursty counts: their changes are far from normal). It joins "
        "the alert decision only, as a weighted Bonferroni with the input views (`change_share`): a sudden jump, drop "
        "or burst alerts at its onset, while the score, the p-value and the scores topic keep ranking windows as "
        "without it. 0: off.",
    )
    change_memory_s: float = _f(
        0.0,
        "Change view (with `change_horizon` > 0): when > 0, a change counts only by how much it exceeds the largest "
        "change of its entity's same feature in the current and the previous block of this many seconds of event "
        "time (86400: a step that recurs every day, such as a scheduled job, stops alerting after its first day; a "
        "larger one still alerts). Its running variance still learns from the changes themselves. 0: off.",
    )
    change_share: float = _f(
        0.1,
        "Change view: its share of the weighted Bonferroni with the input and seasonal views (their tail "
        "probability divided by 1 - share, the change view's by share; the smaller counts). Alone, it counts whole.",
    )
    range_tolerance: float = _f(
        0.0,
        "Range view: when > 0, each entity keeps the smallest and largest raw value of each input feature it has "
        "shown (started from the training windows' range); a new value beyond that range by more than this share of "
        "its width is a range break and alerts whatever the other views say (alert decision only, still grouped by "
        "`alert_cooldown`; the score and its ranking are unchanged). The range then takes the value in. 0: off.",
    )
    range_warmup: float = _f(
        0.0,
        "Range view: an entity's range breaks alert only once it has shown this many times as many windows as its "
        "model's range was learned from (the training windows); before that they still widen the range. A range "
        "learned from a short training stretch is widened by the stream's ordinary extremes for a while. 0: at once.",
    )
    transition_levels: int = _f(
        0,
        "Transition view: when > 0, each new value and the one before it are cut into this many equal levels of the "
        "training windows' range of their feature (plus one below and one above it), and each entity remembers "
        "every (level before, level now) step it has made; a window making a step its entity never made alerts "
        "whatever the other views say (alert decision only, still grouped by `alert_cooldown`; the score and its "
        "ranking are unchanged). Needs count windows of at least 2 events. 0: off.",
    )
    transition_warmup: float = _f(
        0.0,
        "Transition view: an entity's new steps alert only once it has shown this many times as many windows as its "
        "model was trained on; before that it only learns them (an entity starts knowing no step). 0: at once.",
    )
    alert_cooldown: int = _f(
        0,
        "Incident grouping: when > 0, a window whose entity had an at least as significant window among its "
        "previous this many windows repeats that incident and does not alert; an incident alerts at its onset and "
        "again only when it gets worse. The retrainer still counts those windows as alerts (never as normal "
        "training data). Memory: this many numbers per entity. 0: off (every significant window alerts).",
    )
    incident_gap: int = _f(
        0,
        "Incident grouping by gap: when > 0, a window whose entity had a significant window (significance below "
        "alpha, alerting or not) among its previous this many windows belongs to that incident and does not alert: "
        "an incident alerts at its first window only, with no alert when it gets worse. Works alone or with "
        "`alert_cooldown` (a window repeating by either rule stays silent). Unlike the cooldown it depends on alpha: a "
        "ranking thresholded elsewhere (NAB's optimised threshold) is not grouped the same way. Memory: one number "
        "per entity. 0: off.",
    )
    view_incidents: Literal["shared", "own"] = _f(
        "shared",
        "Incident grouping of the range and transition views' alerts (they alert at the floor significance): "
        "`shared`, one incident per entity as for any alert (a range break or new step then holds the entity's "
        "incident open for `alert_cooldown` windows, and the model's own later alerts in that span repeat it); "
        "`own`, the views' alerts group among themselves, by the same rules (one repeats when its entity had one "
        "among its previous `alert_cooldown` windows), and the cooldown judges every window by its significance "
        "without the views (so does the alert decision of a view's repeat).",
    )
    entity_baseline_short: int = _f(
        3,
        "Windows averaged (exponentially) into the score an entity baseline judges: more smooths single-window "
        "noise, fewer reacts at once to a single odd window.",
    )
    knn_threads: int = _f(
        1,
        "Threads of a nearest-neighbour query on a large reservoir (k-d tree); -1: one per core. One suits a "
        "small machine shared with the broker (see README, Performance).",
    )
    swap_windows: int = _f(
        5000,
        "Raw windows recently admitted to the reservoir, kept so that a hot-swapped model can re-embed them "
        "(its reservoir: its own training seed plus those it judges normal); 0: the seed only.",
    )


@dataclass
class RetrainConfig:
    group_id: str = _f("streamer-retrainer", "Consumer group of the retrainer (separate from the detectors').")
    interval_s: float = _f(86400.0, "Retrain every this many seconds (wall clock); 0: off.")
    every_windows: int = _f(0, "Retrain after this many newly admitted normal windows; 0: off.")
    reservoir_windows: int = _f(
        20000,
        "Most recent raw windows the current model did not alert on, kept as training data: those with "
        "p >= `detector.admit_p` fit the candidate; all of them serve for its calibration and the gate (a "
        "calibration without the upper tail of normal scores would raise the false-alarm rate).",
    )
    min_windows: int = _f(
        500, "Fewest windows in the reservoir before a retrain is attempted (raised to give 1/alpha calibration windows)."
    )
    drift_detector: Literal["adwin", "page_hinkley", "off"] = _f(
        "adwin",
        "Drift detector (River), on the calibrated score stream (1 - p-value) and on the false-alarm indicator "
        "stream (confident alerts left out of both): `adwin`, `page_hinkley` or `off`.",
    )
    drift_delta: float = _f(0.002, "ADWIN confidence `delta` (smaller: fewer, surer detections).")
    drift_threshold: float = _f(20.0, "Page-Hinkley detection threshold.")
    drift_windows: int = _f(
        1000,
        "After a drift detection (and for every new model), the last this many windows decide whether the regime "
        "changed: false-alarm rate above `drift_confirm_ratio` x alpha, calibrated scores high in each third and "
        "not still climbing. Then the retrainer retrains, with the alerts since the change (none confident).",
    )
    drift_confirm_ratio: float = _f(
        2.0, "A change of regime needs a false-alarm rate above this times alpha over the last `drift_windows`."
    )
    confident_factor: float = _f(
        10.0,
        "Confident alerts: windows whose score is at least this times the alert threshold (the margin is on the "
        "score: plain p-values saturate at 1/(calibration size + 1), and the tail's are an extrapolation). The "
        "gate requires candidates to flag them.",
    )
    confident_keep: int = _f(500, "Most recent confident alerts kept for the gate (bounded).")
    gate_share: float = _f(
        0.2, "Share of the reservoir held out from training (every k-th window in time) for the gate."
    )
    gate_far_tolerance: float = _f(
        2.0,
        "Gate: the candidate's false-alarm rate on held-out normal windows must be at most "
        "alpha * (1 + tolerance).",
    )
    gate_min_confident_recall: float = _f(
        0.95, "Gate: the share of kept confident alerts the candidate must still flag (p < alpha)."
    )
    gate_reference: Literal["alpha", "current"] = _f(
        "alpha",
        "Gate bars. `alpha`: fixed, as above. `current`: no stricter than the model in service scored the same "
        "way on the same windows: false-alarm bar max(alpha * (1 + tolerance), its rate), confident-recall bar "
        "min(gate_min_confident_recall, its recall). The gate scores windows out of their stream (no per-entity "
        "baseline, seasonal or change view), so where alerts rest on those views the fixed bars judge a score "
        "the detector does not alert on.",
    )
    warm_start: bool = _f(
        False,
        "Start each candidate from the weights of the model in service (same architecture) instead of a fresh "
        "initialisation: fine-tuning, which early stopping usually ends in far fewer epochs. The candidate's "
        "normalizer, reservoir and calibration are still its own.",
    )
    retry_s: float = _f(600.0, "After a rejected candidate or a failed training, wait this long before retrying.")
    in_eval: bool = _f(
        False,
        "`streamer eval`: learn online by retraining, as a deployment with the retrainer does: the retrainer's "
        "logic (its triggers, training and gate) runs in-process on each evaluated stream and the detector "
        "hot-swaps to every model it passes, with event time as its clock (`interval_s` and `retry_s` count "
        "event-time seconds). false: the model trained on the training split scores the whole stream.",
    )


@dataclass
class StreamerConfig:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    schema: SchemaConfig = field(default_factory=SchemaConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def public_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without secrets (fields marked ``secret``): what artifacts store and
        ``config show`` prints."""
        out = self.to_dict()
        for section, cls in _SECTION_TYPES.items():
            for f in dataclasses.fields(cls):
                if f.metadata.get("secret"):
                    out[section][f.name] = None
        # librdkafka credentials (sasl.password, ssl.key.password, ...client.secret) travel in
        # kafka.settings: an artifact or a printed config must not carry them.
        out["kafka"]["settings"] = {
            k: ("<redacted>" if any(w in k.lower() for w in _SECRET_WORDS) else v)
            for k, v in out["kafka"]["settings"].items()
        }
        return out

    def validate(self) -> StreamerConfig:
        """Check cross-field rules; raise :class:`ConfigError` naming the field."""
        s, w, d, m = self.schema, self.window, self.detector, self.model
        if not s.numeric_fields and not s.categorical_fields:
            raise ConfigError("schema.numeric_fields", "at least one numeric or categorical field")
        if s.hash_buckets < 1:
            raise ConfigError("schema.hash_buckets", "a number of buckets >= 1", s.hash_buckets)
        if not 1 <= s.hash_functions <= s.hash_buckets:
            raise ConfigError("schema.hash_functions", f"1 <= hash_functions <= hash_buckets ({s.hash_buckets})",
                              s.hash_functions)
        if w.kind == "count" and (w.size < 1 or not 1 <= w.slide <= w.size):
            raise ConfigError("window.slide", f"1 <= slide <= size ({w.size})", w.slide)
        if w.kind == "time":
            hop = w.hop_seconds or w.seconds
            if w.seconds <= 0 or hop <= 0 or hop > w.seconds:
                raise ConfigError("window.hop_seconds", "0 < hop_seconds <= seconds", w.hop_seconds)
            bad = [a for a in w.aggregates if a not in AGGREGATES]
            if bad or not w.aggregates:
                raise ConfigError("window.aggregates", f"a non-empty subset of {list(AGGREGATES)}", w.aggregates)
        if not 0.0 < d.alpha < 0.5:
            raise ConfigError("detector.alpha", "a rate in (0, 0.5)", d.alpha)
        if not 0.0 <= d.recon_weight <= 1.0:
            raise ConfigError("detector.recon_weight", "a weight in [0, 1]", d.recon_weight)
        if d.recon_top < 0:
            raise ConfigError("detector.recon_top", "0 (every feature) or a number of features >= 1", d.recon_top)
        if not 0.0 <= d.admit_p <= 1.0:
            raise ConfigError("detector.admit_p", "a p-value in [0, 1]", d.admit_p)
        if d.entity_baseline < 0 or d.entity_baseline == 1:
            raise ConfigError("detector.entity_baseline", "0 (off) or a number of windows >= 2", d.entity_baseline)
        if d.input_baseline < 0 or d.input_baseline == 1:
            raise ConfigError("detector.input_baseline", "0 (off) or a number of windows >= 2", d.input_baseline)
        if d.seasonal_period_s < 0 or not math.isfinite(d.seasonal_period_s):
            raise ConfigError("detector.seasonal_period_s", "0 (off) or a period in seconds", d.seasonal_period_s)
        if not 1 <= d.seasonal_buckets <= 10_000:
            raise ConfigError("detector.seasonal_buckets", "a number of phases from 1 to 10,000", d.seasonal_buckets)
        if d.seasonal_clip < 0 or not math.isfinite(d.seasonal_clip):
            raise ConfigError("detector.seasonal_clip", "0 (unclipped) or a number of spreads", d.seasonal_clip)
        if d.seasonal_horizon < 2:
            raise ConfigError("detector.seasonal_horizon", "a number of windows >= 2", d.seasonal_horizon)
        if d.change_horizon < 0 or d.change_horizon == 1:
            raise ConfigError("detector.change_horizon", "0 (off) or a number of windows >= 2", d.change_horizon)
        if d.transition_levels < 0:
            raise ConfigError("detector.transition_levels", "0 (off) or a number of levels >= 1", d.transition_levels)
        # the change and transition views read a window's two newest events
        for name, value in (("change_horizon", d.change_horizon), ("transition_levels", d.transition_levels)):
            if value and (w.kind != "count" or w.size < 2):
                raise ConfigError(f"detector.{name}",
                                  "0 unless windows are count windows of at least 2 events (window.kind count, "
                                  "window.size >= 2): the view reads a window's two newest events", value)
        if d.change_memory_s < 0 or not math.isfinite(d.change_memory_s):
            raise ConfigError("detector.change_memory_s", "0 (off) or a number of seconds", d.change_memory_s)
        if not 0.0 < d.change_share < 1.0 or not math.isfinite(d.change_share):
            raise ConfigError("detector.change_share", "a share in (0, 1)", d.change_share)
        if d.range_tolerance < 0 or not math.isfinite(d.range_tolerance):
            raise ConfigError("detector.range_tolerance", "0 (off) or a share of the range's width", d.range_tolerance)
        for name, value in (("range_warmup", d.range_warmup), ("transition_warmup", d.transition_warmup)):
            if value < 0 or not math.isfinite(value):
                raise ConfigError(f"detector.{name}", "0 (at once) or a multiple >= 0 of the training windows", value)
        if not 0 <= d.alert_cooldown <= 10_000:
            raise ConfigError("detector.alert_cooldown", "0 (off) or a number of windows up to 10,000", d.alert_cooldown)
        if not 0 <= d.incident_gap <= 10_000:
            raise ConfigError("detector.incident_gap", "0 (off) or a number of windows up to 10,000", d.incident_gap)
        if d.entity_baseline_short < 1:
            raise ConfigError("detector.entity_baseline_short", "a number of windows >= 1", d.entity_baseline_short)
        if d.knn_threads == 0 or d.knn_threads < -1:
            raise ConfigError("detector.knn_threads", "a positive number of threads, or -1 (one per core)", d.knn_threads)
        if d.k < 1 or d.reservoir_size < d.k:
            raise ConfigError("detector.reservoir_size", f"at least k ({d.k})", d.reservoir_size)
        if not 0.0 < m.validation_split < 0.9:
            raise ConfigError("model.validation_split", "a share in (0, 0.9)", m.validation_split)
        if m.latent_dim < 1 or any(h < 1 for h in m.hidden):
            raise ConfigError("model.hidden", "positive layer widths", m.hidden)
        if not 0.0 <= m.dropout < 1.0:
            raise ConfigError("model.dropout", "a rate in [0, 1)", m.dropout)
        if not (m.weight_decay >= 0 and math.isfinite(m.weight_decay)):
            raise ConfigError("model.weight_decay", "a finite rate >= 0", m.weight_decay)
        if not 0.0 <= m.ema_momentum < 1.0:
            raise ConfigError("model.ema_momentum", "a momentum in [0, 1) (0: off)", m.ema_momentum)
        if m.lr_plateau < 0:
            raise ConfigError("model.lr_plateau", "a number of epochs >= 0 (0: off)", m.lr_plateau)
        if not 1 <= m.members <= 16:
            raise ConfigError("model.members", "a number of autoencoders from 1 to 16", m.members)
        if not self.topics.input:
            raise ConfigError("topics.input", "at least one topic")
        r = self.retrain
        if r.interval_s < 0:
            raise ConfigError("retrain.interval_s", "0 (off) or a positive number of seconds", r.interval_s)
        if r.every_windows < 0 or r.drift_windows < 0:
            raise ConfigError("retrain.drift_windows", "a non-negative number of windows", r.drift_windows)
        if r.min_windows < 50 or r.reservoir_windows < r.min_windows:
            raise ConfigError("retrain.reservoir_windows", f"at least min_windows ({r.min_windows}, itself >= 50)",
                              r.reservoir_windows)
        if not 0.0 < r.gate_share < 0.5:
            raise ConfigError("retrain.gate_share", "a share in (0, 0.5)", r.gate_share)
        if not 0.0 <= r.gate_min_confident_recall <= 1.0:
            raise ConfigError("retrain.gate_min_confident_recall", "a share in [0, 1]", r.gate_min_confident_recall)
        if r.gate_far_tolerance < 0:
            raise ConfigError("retrain.gate_far_tolerance", "a non-negative multiple of alpha", r.gate_far_tolerance)
        if r.confident_factor <= 1.0:
            raise ConfigError("retrain.confident_factor", "a factor above 1", r.confident_factor)
        if not 0.0 < r.drift_delta < 1.0:
            raise ConfigError("retrain.drift_delta", "a confidence in (0, 1)", r.drift_delta)
        if d.swap_windows < 0:
            raise ConfigError("detector.swap_windows", "a non-negative number of windows", d.swap_windows)
        return self


_SECTION_TYPES = {
    "kafka": KafkaConfig,
    "topics": TopicsConfig,
    "schema": SchemaConfig,
    "window": WindowConfig,
    "model": ModelConfig,
    "detector": DetectorConfig,
    "retrain": RetrainConfig,
}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(path: str, tp: Any, value: Any) -> Any:
    """Turn ``value`` (from YAML, env or a flag) into type ``tp`` or raise a ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(path, inner[0], value)
    if origin is Literal:
        if value not in args:
            raise ConfigError(path, "one of " + ", ".join(map(str, args)), value)
        return value
    if origin is list:
        (item,) = args
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, "a list", value)
        return [_coerce(path, item, v) for v in value]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(path, "a mapping", value)
        return {str(k): str(v) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(path, "true or false", value)
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(path, "an integer", value)
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(path, "an integer", value) from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(path, "a number", value)
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise ConfigError(path, "a number", value) from None
        if out != out or out in (float("inf"), float("-inf")):
            raise ConfigError(path, "a finite number", value)
        return out
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(path, "a string", value)
        return str(value)
    raise ConfigError(path, f"a value of type {tp}", value)  # pragma: no cover - all fields typed


def _set(cfg: StreamerConfig, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if parts[0] not in _SECTION_TYPES:
        raise ConfigError(dotted, "a field section: " + ", ".join(_SECTION_TYPES))
    section = getattr(cfg, parts[0])
    hints = _hints(type(section))
    if len(parts) < 2 or parts[1] not in hints:
        raise ConfigError(dotted, f"a field of {parts[0]}: " + ", ".join(hints))
    name = parts[1]
    if len(parts) > 2:
        if name != "settings":
            raise ConfigError(dotted, f"{parts[0]}.{name} has no sub-fields")
        getattr(section, name)[".".join(parts[2:])] = str(value)
        return
    setattr(section, name, _coerce(dotted, hints[name], value))


def apply_overrides(cfg: StreamerConfig, overrides: Mapping[str, Any]) -> StreamerConfig:
    """Apply ``{"section.field": value}`` overrides in place and return ``cfg``."""
    for key, value in overrides.items():
        _set(cfg, key, value)
    return cfg


def _from_mapping(data: Mapping[str, Any], origin: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, body in data.items():
        if section not in _SECTION_TYPES:
            raise ConfigError(f"{origin}: {section}", "a section: " + ", ".join(_SECTION_TYPES))
        if not isinstance(body, Mapping):
            raise ConfigError(f"{origin}: {section}", "a mapping of fields", body)
        for name, value in body.items():
            flat[f"{section}.{name}"] = value
    return flat


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``STREAMER_SECTION__FIELD`` variables as dotted overrides (``STREAMER_CONFIG`` excluded)."""
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key:
            continue
        parts = key[len(ENV_PREFIX):].lower().split("__")
        if parts[0] not in _SECTION_TYPES:
            continue
        if len(parts) == 3 and parts[1] == "settings":
            out[f"{parts[0]}.settings.{parts[2].replace('_', '.')}"] = value
        elif len(parts) == 2:
            out[f"{parts[0]}.{parts[1]}"] = value
    return out


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    validate: bool = True,
    base: Mapping[str, Any] | None = None,
) -> StreamerConfig:
    """Build the config: defaults, then ``base`` (defaults of a context, such as an evaluation
    dataset's settings), then YAML ``path``, then env, then ``overrides``."""
    environ = os.environ if environ is None else environ
    cfg = StreamerConfig()
    apply_overrides(cfg, base or {})
    path = path or environ.get(ENV_PREFIX + "CONFIG") or None
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError("--config", "an existing YAML file", str(p))
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"--config {p}", f"valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"--config {p}", "a mapping of sections at the top")
        apply_overrides(cfg, _from_mapping(data, str(p)))
    apply_overrides(cfg, env_overrides(environ))
    apply_overrides(cfg, overrides or {})
    return cfg.validate() if validate else cfg


def config_from_dict(data: Mapping[str, Any]) -> StreamerConfig:
    """Rebuild a config saved with :meth:`StreamerConfig.to_dict` (as in a model artifact)."""
    cfg = StreamerConfig()
    return apply_overrides(cfg, _from_mapping(data, "saved config"))


def reference_markdown() -> str:
    """The configuration reference table (every field, its default, its env variable)."""
    rows = ["| field | default | env | meaning |", "|---|---|---|---|"]
    cfg = StreamerConfig()
    for section, cls in _SECTION_TYPES.items():
        for f in dataclasses.fields(cls):
            default = getattr(getattr(cfg, section), f.name)
            shown = ",".join(map(str, default)) if isinstance(default, list) else default
            shown = "" if shown is None else shown
            env = f"{ENV_PREFIX}{section.upper()}__{f.name.upper()}"
            rows.append(f"| `{section}.{f.name}` | `{shown}` | `{env}` | {f.metadata['help']} |")
    return "\n".join(rows)
