"""Normalize window features with statistics fitted at training time and stored with the model.

Heavy-tailed non-negative columns (bytes, packets, counts with bursts) are log-compressed first;
then each column is centred on its median and scaled by its robust spread, and clipped so that one
extreme value cannot overflow the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Normalizer", "log_compressed"]

# A column is log-compressed when it is non-negative and its sample skewness exceeds this: a
# log-normal with sigma ~0.8 has skewness ~3, the point where linear scaling wastes the model's range.
SKEW_FOR_LOG = 3.0
# Normalized values are clipped here: far outside anything seen in training, still finite in float32.
CLIP = 100.0


def log_compressed(x: np.ndarray) -> np.ndarray:
    """Which columns of ``x`` (rows of training windows) a normalizer fitted on them log-compresses,
    binary columns aside: non-negative ones whose sample skewness exceeds ``SKEW_FOR_LOG``."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    skew = np.where(std > 0, ((x - mean) ** 3).mean(axis=0) / np.maximum(std, 1e-12) ** 3, 0.0)
    return (x.min(axis=0) >= 0) & (skew > SKEW_FOR_LOG)


@dataclass
class Normalizer:
    """Per-column ``log1p`` flag, centre and scale; a pure function of the training windows."""

    names: list[str]
    log: np.ndarray  # bool, (F,)
    center: np.ndarray  # float64, (F,)
    scale: np.ndarray  # float64, (F,)
    clip: float = CLIP

    @classmethod
    def fit(cls, x: np.ndarray, names: list[str], *, std_floor: bool = True) -> Normalizer:
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"need at least 2 training windows to fit a normalizer, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("training windows contain NaN or infinity")
        log = log_compressed(x)
        t = np.where(log, np.log1p(np.maximum(x, 0)), x)
        center = np.median(t, axis=0)
        q75, q25 = np.percentile(t, [75, 25], axis=0)
        robust = (q75 - q25) / 1.349  # IQR of a normal distribution is 1.349 sigma
        # Never tighter than the standard deviation: a column whose middle half barely moves (an
        # IQR near 0) but whose normal values still spread would otherwise turn every ordinary
        # excursion into dozens of sigmas and drown the other columns' reconstruction error.
        # (``std_floor=False``: the robust scale alone, the std only where the IQR is 0.)
        scale = np.maximum(robust, t.std(axis=0)) if std_floor else np.where(robust > 1e-9, robust, t.std(axis=0))
        scale = np.where(scale > 1e-9, scale, 1.0)
        # Binary columns (one-hot categorical buckets, 0/1 flags) keep their 0/1 scale: dividing a
        # rare bucket by its tiny std would make every rare-but-normal category look extreme.
        binary = ((x == 0) | (x == 1)).all(axis=0)
        log &= ~binary
        center = np.where(binary, 0.0, center)
        scale = np.where(binary, 1.0, scale)
        return cls(list(names), log, center, scale)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Normalized float32 copy of ``x``; non-finite inputs become the column centre."""
        x = np.asarray(x, dtype=np.float64)
        t = np.where(self.log, np.log1p(np.maximum(x, 0)), x)
        z = (t - self.center) / self.scale
        z = np.nan_to_num(z, nan=0.0, posinf=self.clip, neginf=-self.clip)
        return np.clip(z, -self.clip, self.clip).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": self.names,
            "log": self.log.astype(bool).tolist(),
            "center": self.center.tolist(),
            "scale": self.scale.tolist(),
            "clip": self.clip,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        n = len(d["names"])
        arrays = [np.asarray(d[k], dtype=np.float64) for k in ("center", "scale")]
        if any(a.shape != (n,) for a in arrays) or len(d["log"]) != n:
            raise ValueError("normalizer: arrays do not match the feature names")
        return cls(list(d["names"]), np.asarray(d["log"], dtype=bool), arrays[0], arrays[1], float(d["clip"]))
