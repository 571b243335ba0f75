"""Training: records -> windows -> normalizer + autoencoder + reservoir seed + calibration -> artifact.

Steps, in order:
1. decode and window the records exactly as the detector will (same modules, same config);
2. split the windows in time order: the newest ``validation_split`` share is held out;
3. fit the normalizer and the autoencoder on the older part, early-stopping on the held-out part;
4. embed the training windows: they seed the reservoir;
5. score the held-out windows against that reservoir: the medians of the kNN distance and the
   reconstruction error become the score scales, and the combined scores the calibration set;
6. measure the false-alarm rate honestly: calibrate on one half of the held-out scores, count
   alerts on the other half;
7. write a versioned artifact with its model card.
"""

from __future__ import annotations

import logging
import platform
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamer.calibrate import Calibrator
from streamer.config import StreamerConfig
from streamer.decode import Decoder
from streamer.errors import StreamerError
from streamer.normalize import Normalizer
from streamer.progress import Progress
from streamer.records import Record, WindowBatch
from streamer.score import Reservoir, combine_scores, knn_distance, recon_error
from streamer.window import change_columns, make_windower

__all__ = ["windows_from_records", "validation_split", "train_model", "train_on_windows", "fit_on_windows",
           "Candidate", "TrainingError", "MIN_WINDOWS"]

log = logging.getLogger(__name__)

# Fewer windows than this cannot give both a training set and a calibration set worth the name.
MIN_WINDOWS = 50


class TrainingError(StreamerError):
    """Training data unusable (too few windows, everything dead-lettered, ...)."""


def windows_from_records(cfg: StreamerConfig, records: list[Record]) -> tuple[WindowBatch, list[str], Counter[str]]:
    """Decode and window records with the detector's own stages; returns windows, feature names and
    the dead-letter reasons counted."""
    decoder = Decoder(cfg.schema)
    windower = make_windower(decoder.feature_names, cfg.window)
    dead: Counter[str] = Counter()
    parts = []
    step = 50_000
    for lo in range(0, len(records), step):
        events, bad, _ = decoder.decode(records[lo:lo + step])
        dead.update(d.reason for d in bad)
        wb, late = windower.push(events)
        dead["late_event"] += len(late)
        parts.append(wb)
    parts.append(windower.flush())
    if not dead["late_event"]:
        del dead["late_event"]
    return WindowBatch.concat(parts, len(windower.feature_names)), windower.feature_names, dead


def validation_split(windows: WindowBatch, share: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and the held-out windows: the newest ``share`` is held out."""
    order = np.argsort(windows.end_ms, kind="stable")
    n_val = max(int(round(len(order) * share)), MIN_WINDOWS // 2)
    return order[:-n_val], order[-n_val:]


@dataclass
class Candidate:
    """A trained model in memory, not yet written: what :func:`save` turns into an artifact
    version (the retrainer validates a candidate before deciding where it goes)."""

    cfg: StreamerConfig
    embedder: Any
    normalizer: Normalizer
    reservoir_seed: np.ndarray
    calibration: np.ndarray
    scoring: dict[str, Any]
    card: dict[str, Any]

    def artifact(self, version: str = "candidate") -> Any:
        """The candidate as an in-memory :class:`~streamer.artifact.ModelArtifact` (path ``<memory>``)."""
        from streamer.artifact import ModelArtifact

        return ModelArtifact(name=self.cfg.model.name, version=version, path=Path("<memory>"),
                             embedder=self.embedder, normalizer=self.normalizer, reservoir_seed=self.reservoir_seed,
                             calibration=self.calibration, scoring=self.scoring, config=self.cfg, card=self.card)

    def save(self, *, version: str | None = None, root: str | Path | None = None) -> Path:
        """Write the artifact (temporary directory, then an atomic rename); returns its directory.
        ``root``: the directory to create the version in (default ``<model.dir>/<model.name>``)."""
        from streamer.artifact import save_artifact

        return save_artifact(
            self.cfg.model.dir, self.cfg.model.name, embedder=self.embedder, normalizer=self.normalizer,
            reservoir_seed=self.reservoir_seed, calibration=self.calibration, scoring=self.scoring,
            config=self.cfg, card=self.card, version=version, root=root,
        )


def train_model(
    cfg: StreamerConfig,
    records: list[Record],
    *,
    source: str,
    version: str | None = None,
    show_progress: bool = True,
) -> Path:
    """Train on ``records`` and write a new artifact version; returns its directory."""
    windows, names, dead = windows_from_records(cfg, records)
    if dead:
        log.warning("training data: %d records unusable: %s", sum(dead.values()), dict(dead))
    return train_on_windows(cfg, windows, names, source=source, version=version, show_progress=show_progress,
                            n_records=len(records), dead=dead)


def train_on_windows(
    cfg: StreamerConfig,
    windows: WindowBatch,
    names: list[str],
    *,
    source: str,
    version: str | None = None,
    show_progress: bool = True,
    n_records: int | None = None,
    dead: Counter[str] | None = None,
) -> Path:
    """Train on precomputed raw windows (as :func:`windows_from_records` builds them) and write a new
    artifact version; returns its directory."""
    t0 = time.monotonic()
    cand = fit_on_windows(cfg, windows, names, source=source, show_progress=show_progress, n_records=n_records,
                          dead=dead)
    path = cand.save(version=version)
    v = cand.card["validation"]
    log.info("trained %s on %d windows in %.1fs; held-out false-alarm rate %.4f at alpha %g",
             path, cand.card["data"]["train_windows"], time.monotonic() - t0, v["false_alarm_rate_heldout"],
             v["alpha"])
    return path


def fit_on_windows(
    cfg: StreamerConfig,
    windows: WindowBatch,
    names: list[str],
    *,
    source: str,
    show_progress: bool = True,
    n_records: int | None = None,
    dead: Counter[str] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    init_weights: list[np.ndarray] | None = None,
) -> Candidate:
    """Steps 2-6 on precomputed raw windows: a :class:`Candidate`, nothing written.
    ``on_epoch(epoch, logs)`` is called after every epoch (progress in a service's logs).
    ``init_weights``: the autoencoder starts from these weights (a model of the same architecture,
    as ``keras.Model.get_weights`` gives them) instead of a fresh initialisation; weights of another
    shape are reported in the log and the training starts fresh."""
    from streamer.embed import Embedder, build_autoencoder, train_autoencoder

    t0 = time.monotonic()
    m = cfg.model
    dead = Counter() if dead is None else dead
    n_records = len(windows) if n_records is None else n_records
    if len(windows) < MIN_WINDOWS:
        raise TrainingError(
            f"training needs at least {MIN_WINDOWS} windows, the data gave {len(windows)} "
            f"({n_records} records, {sum(dead.values())} unusable)"
        )
    tr, va = validation_split(windows, m.validation_split)
    x_tr, x_va = windows.x[tr], windows.x[va]
    normalizer = Normalizer.fit(x_tr, names, std_floor=m.scale_std_floor)
    xn_tr, xn_va = normalizer.transform(x_tr), normalizer.transform(x_va)

    # 3. the autoencoder
    def build() -> Any:
        return build_autoencoder(len(names), hidden=m.hidden, latent_dim=m.latent_dim, noise_std=m.noise_std,
                                 seed=m.seed, members=m.members, dropout=m.dropout)

    model, warm = build(), False
    if init_weights is not None:
        try:
            model.set_weights(init_weights)
            warm = True
        except ValueError as exc:
            log.warning("cannot start from the given weights (%s); training from a fresh initialisation", exc)
            model = build()  # nothing half-assigned
    bar = Progress("training", m.epochs, unit="epochs", enabled=show_progress)

    def epoch_done(e: int, logs: dict[str, float]) -> None:
        bar.update(1, extra=f"loss={logs.get('loss', 0):.4f} val={logs.get('val_loss', 0):.4f}")
        if on_epoch is not None:
            on_epoch(e, logs)

    history = train_autoencoder(
        model, xn_tr, xn_va, epochs=m.epochs, patience=m.patience, batch_size=m.train_batch_size,
        learning_rate=m.learning_rate, weight_decay=m.weight_decay, loss=m.loss,
        lr_plateau=m.lr_plateau, ema_momentum=m.ema_momentum, on_epoch=epoch_done,
    )
    bar.close()
    embedder = Embedder(model)

    # 4. reservoir seed
    z_tr, _ = embedder.embed(xn_tr)
    rng = np.random.default_rng(m.seed)
    cap = cfg.detector.reservoir_size
    seed = z_tr if len(z_tr) <= cap else z_tr[np.sort(rng.choice(len(z_tr), cap, replace=False))]

    # 5. scales and calibration
    k = cfg.detector.k
    z_va, sq_va = embedder.embed(xn_va)
    if cfg.detector.knn_density:
        # as the detector will score: its reservoir, seeded with the same embeddings
        store = Reservoir(cap, embedder.latent_dim, density_k=k)
        store.add(seed)
        knn_va = store.knn(z_va, k)
    else:
        knn_va = knn_distance(z_va, seed, k)
    # Per-feature error scale: the mean squared error of each feature on held-out normal windows
    # (floored at 1% of the average so a perfectly reconstructed feature cannot explode).
    err_scale = None
    if m.feature_error_norm:
        per_feature = sq_va.astype(np.float64).mean(axis=0)
        err_scale = np.maximum(per_feature, 0.01 * per_feature.mean() + 1e-12)
    recon_top = cfg.detector.recon_top
    rec_va = recon_error(sq_va, err_scale, recon_top)
    knn_scale = float(np.median(knn_va)) or 1.0
    recon_scale = float(np.median(rec_va)) or 1.0
    w = cfg.detector.recon_weight
    s_va = combine_scores(knn_va, rec_va, knn_scale=knn_scale, recon_scale=recon_scale, recon_weight=w)

    # 6. honest false-alarm rate: calibrate on even-indexed, test on odd-indexed held-out windows
    alpha = cfg.detector.alpha
    half_a, half_b = s_va[0::2], s_va[1::2]
    half_cal = Calibrator(half_a, alpha, tail=cfg.detector.p_tail)
    far = float(half_cal.is_alert(half_cal.p_values(half_b)).mean())
    if Calibrator(s_va, alpha, tail=cfg.detector.p_tail).min_p >= alpha:
        log.warning("only %d calibration windows: p-values cannot go below alpha=%g; no alert will fire "
                    "(train on more data, raise detector.alpha or turn detector.p_tail on)", len(s_va), alpha)
    elif 1.0 / (len(s_va) + 1) >= alpha:
        log.warning("only %d calibration windows: alerts at alpha=%g rest on the extrapolated tail of the "
                    "calibration scores (detector.p_tail)", len(s_va), alpha)

    card: dict[str, Any] = {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": source,
        "data": {
            "records": n_records,
            "unusable_records": dict(dead),
            "windows": len(windows),
            "train_windows": len(tr),
            "validation_windows": len(va),
            "window": cfg.window.kind,
            "entities": int(len(np.unique(windows.entity.astype(str)))),
            "features": names,
            "feature_mean": np.round(x_tr.mean(axis=0), 6).tolist(),
            "feature_std": np.round(x_tr.std(axis=0), 6).tolist(),
        },
        "training": {
            "epochs_run": len(history.get("loss", [])),
            "warm_start": warm,
            "loss": history.get("loss", []),
            "val_loss": history.get("val_loss", []),
            "best_val_loss": float(min(history.get("val_loss", [float("nan")]))),
            "seconds": round(time.monotonic() - t0, 2),
            "hidden": m.hidden,
            "latent_dim": m.latent_dim,
            "members": m.members,
            "noise_std": m.noise_std,
            "dropout": m.dropout,
            "weight_decay": m.weight_decay,
            "loss_function": m.loss,
            "lr_plateau": m.lr_plateau,
            "ema_momentum": m.ema_momentum,
        },
        "validation": {
            "alpha": alpha,
            "false_alarm_rate_heldout": far,
            "false_alarm_rate_heldout_n": len(half_b),
            "score_quantiles": {q: float(np.quantile(s_va, float(q))) for q in ("0.5", "0.9", "0.99", "0.999")},
            "knn_scale": knn_scale,
            "recon_scale": recon_scale,
        },
        "environment": {"python": platform.python_version(), "keras_backend": _backend()},
    }
    scoring = {"k": k, "knn_density": cfg.detector.knn_density, "recon_weight": w, "recon_top": recon_top,
               "knn_scale": knn_scale, "recon_scale": recon_scale,
               "feature_error_scale": None if err_scale is None else err_scale.tolist(),
               "feature_names": names,
               # where a per-entity input baseline starts (detector.input_baseline)
               "input_mean": x_tr.mean(axis=0).tolist(), "input_var": x_tr.var(axis=0).tolist(),
               # where a per-entity range view starts (detector.range_tolerance): every training window
               "input_min": windows.x.min(axis=0).tolist(), "input_max": windows.x.max(axis=0).tolist(),
               "input_range_n": len(windows.x),
               # where a per-entity change view starts (detector.change_horizon): the variance of each
               # new event's change from the event before it
               "change_var": _change_var(x_tr, names, cfg).tolist()}
    return Candidate(cfg=cfg, embedder=embedder, normalizer=normalizer, reservoir_seed=seed, calibration=s_va,
                     scoring=scoring, card=card)


def _change_var(x: np.ndarray, names: list[str], cfg: StreamerConfig) -> np.ndarray:
    """Variance over training windows ``x`` of each new event's change from the event before it
    (:func:`streamer.window.change_columns`; empty unless count windows of at least 2 events)."""
    new, prev = change_columns(names, cfg.window)
    return (x[:, new] - x[:, prev]).var(axis=0) if len(new) else np.empty(0)


def _backend() -> str:
    import keras

    return str(keras.backend.backend())
