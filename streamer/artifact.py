"""Model artifacts: one versioned directory per trained model, verified before use.

Layout of ``<models_dir>/<name>/<version>/``::

    model.keras        Keras native format, loaded in safe mode
    normalizer.json    feature statistics (streamer.normalize)
    reservoir.npy      seed embeddings of normal training windows (np.save, no pickle)
    calibration.npy    scores of held-out normal validation windows
    scoring.json       how scores are combined (k, weights, scales) and the window feature names
    config.json        the full configuration the model was trained with (schema, window, ...)
    card.json          the model card: data summary, training curve, validation figures
    MANIFEST.json      sha256 of every file above

A version directory is written under a temporary name and renamed into place, so a crash never
leaves a half-written version visible. Loading verifies every checksum; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamer.config import StreamerConfig, config_from_dict
from streamer.errors import ArtifactError
from streamer.normalize import Normalizer

__all__ = ["ModelArtifact", "save_artifact", "load_artifact", "list_versions", "new_version", "verify_artifact_dir",
           "checksum"]

FORMAT = 1
_FILES = ("model.keras", "normalizer.json", "reservoir.npy", "calibration.npy", "scoring.json", "config.json",
          "card.json")
_VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]*$")


@dataclass
class ModelArtifact:
    """Everything a detector needs from training, loaded and verified."""

    name: str
    version: str
    path: Path
    embedder: Any  # streamer.embed.Embedder (imported lazily: Keras start-up is slow)
    normalizer: Normalizer
    reservoir_seed: np.ndarray
    calibration: np.ndarray
    scoring: dict[str, Any]
    config: StreamerConfig
    card: dict[str, Any]


def new_version() -> str:
    """A version string that sorts in time order: UTC timestamp to the millisecond."""
    t = time.time()
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(t)) + f"{int(t * 1000) % 1000:03d}Z"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")


def save_artifact(
    models_dir: str | Path,
    name: str,
    *,
    embedder: Any,
    normalizer: Normalizer,
    reservoir_seed: np.ndarray,
    calibration: np.ndarray,
    scoring: dict[str, Any],
    config: StreamerConfig,
    card: dict[str, Any],
    version: str | None = None,
    root: str | Path | None = None,
) -> Path:
    """Write a new version (temporary directory, then an atomic rename) and return its path.

    ``root`` is the directory the version is created in, ``<models_dir>/<name>`` by default (the
    retrainer writes rejected candidates under ``<models_dir>/<name>/rejected/``)."""
    version = version or new_version()
    if not _VERSION_RE.match(version) or not _VERSION_RE.match(name):
        raise ArtifactError(f"bad model name or version: {name!r}/{version!r}")
    root = Path(models_dir) / name if root is None else Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / version
    if final.exists():
        raise ArtifactError(f"model version already exists: {final}")
    tmp = root / f".{version}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        embedder.save(tmp / "model.keras")
        _write_json(tmp / "normalizer.json", normalizer.to_dict())
        np.save(tmp / "reservoir.npy", np.asarray(reservoir_seed, dtype=np.float32), allow_pickle=False)
        np.save(tmp / "calibration.npy", np.asarray(calibration, dtype=np.float64), allow_pickle=False)
        _write_json(tmp / "scoring.json", scoring)
        _write_json(tmp / "config.json", config.public_dict())  # secrets (model.hmac_key) left out
        _write_json(tmp / "card.json", {**card, "name": name, "version": version})
        manifest = {"format": FORMAT, "name": name, "version": version,
                    "files": {f: _sha256(tmp / f) for f in _FILES}}
        _write_json(tmp / "MANIFEST.json", manifest)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def list_versions(models_dir: str | Path, name: str) -> list[str]:
    """Complete versions of a model, oldest first (temporary directories are ignored)."""
    root = Path(models_dir) / name
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and (p / "MANIFEST.json").is_file())


def checksum(path: str | Path) -> str:
    """The checksum that identifies a version: sha256 of its MANIFEST.json."""
    return _sha256(Path(path) / "MANIFEST.json")


def load_artifact(models_dir: str | Path, name: str, version: str | None = None) -> ModelArtifact:
    """Load and verify a version (the newest when ``version`` is None)."""
    if version is None:
        versions = list_versions(models_dir, name)
        if not versions:
            raise ArtifactError(
                f"no trained model {name!r} under {models_dir}/: run `streamer train` first"
            )
        version = versions[-1]
    path = Path(models_dir) / name / version
    return load_artifact_dir(path)


def verify_artifact_dir(path: str | Path) -> dict[str, Any]:
    """Check a version directory against its manifest (every file present, every sha256 right)
    without loading the model; returns the manifest. Raises :class:`ArtifactError`."""
    path = Path(path)
    mpath = path / "MANIFEST.json"
    if not mpath.is_file():
        raise ArtifactError(f"not a model artifact (no MANIFEST.json): {path}")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"unreadable manifest {mpath}: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"unsupported artifact format {manifest.get('format')!r} in {path}")
    files = manifest.get("files", {})
    for f in _FILES:
        p = path / f
        if f not in files:
            raise ArtifactError(f"{path}: the manifest does not list {f}")
        if not p.is_file():
            raise ArtifactError(f"{path}: {f} is missing")
        if _sha256(p) != files[f]:
            raise ArtifactError(f"{path}: checksum mismatch for {f} (corrupted or modified)")
    return manifest


def load_artifact_dir(path: str | Path) -> ModelArtifact:
    path = Path(path)
    manifest = verify_artifact_dir(path)
    from streamer.embed import Embedder  # Keras is slow to import; only loaded when needed

    try:
        embedder = Embedder.load(path / "model.keras")
        normalizer = Normalizer.from_dict(json.loads((path / "normalizer.json").read_text("utf-8")))
        reservoir = np.load(path / "reservoir.npy", allow_pickle=False)
        calibration = np.load(path / "calibration.npy", allow_pickle=False)
        scoring = json.loads((path / "scoring.json").read_text("utf-8"))
        config = config_from_dict(json.loads((path / "config.json").read_text("utf-8")))
        card = json.loads((path / "card.json").read_text("utf-8"))
    except ArtifactError:
        raise
    except Exception as exc:  # any parse failure of a verified file is still an artifact problem
        raise ArtifactError(f"{path}: cannot load: {exc}") from exc
    return ModelArtifact(
        name=manifest["name"], version=manifest["version"], path=path, embedder=embedder,
        normalizer=normalizer, reservoir_seed=reservoir, calibration=calibration, scoring=scoring,
        config=config, card=card,
    )
