"""streamer.artifact: versioned, checksummed model directories."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
from conftest import make_config

from streamer.artifact import (
    checksum,
    list_versions,
    load_artifact,
    load_artifact_dir,
    new_version,
    save_artifact,
)
from streamer.errors import ArtifactError
from streamer.normalize import Normalizer

N_IN = 4


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    from streamer.embed import Embedder, build_autoencoder

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, N_IN))
    cfg = make_config(tmp_path_factory.mktemp("cfg"), **{"schema.numeric_fields": ["a", "b", "c", "d"],
                                                          "schema.categorical_fields": []})
    return {
        "embedder": Embedder(build_autoencoder(N_IN, hidden=[3], latent_dim=2, noise_std=0.0, seed=1)),
        "normalizer": Normalizer.fit(x, ["a", "b", "c", "d"]),
        "reservoir_seed": rng.normal(size=(20, 2)).astype(np.float32),
        "calibration": rng.exponential(size=30),
        "scoring": {"k": 5, "recon_weight": 0.5, "knn_scale": 1.5, "recon_scale": 0.25,
                    "feature_names": ["a", "b", "c", "d"]},
        "config": cfg,
        "card": {"source": "unit test", "data": {"windows": 50}},
        "x": x,
    }


def save(root, parts, version, name="m"):
    kw = {k: v for k, v in parts.items() if k != "x"}
    return save_artifact(root, name, version=version, **kw)


def test_new_version_format_and_order():
    v = new_version()
    assert re.fullmatch(r"\d{8}T\d{9}Z", v)
    assert new_version() >= v


def test_save_load_round_trip(tmp_path, parts):
    path = save(tmp_path, parts, "v1")
    assert path == tmp_path / "m" / "v1"
    names = sorted(p.name for p in path.iterdir())
    assert names == sorted(["MANIFEST.json", "model.keras", "normalizer.json", "reservoir.npy", "calibration.npy",
                            "scoring.json", "config.json", "card.json"])
    art = load_artifact(tmp_path, "m", "v1")
    assert (art.name, art.version, art.path) == ("m", "v1", path)
    np.testing.assert_array_equal(art.reservoir_seed, parts["reservoir_seed"])
    assert art.reservoir_seed.dtype == np.float32
    np.testing.assert_array_equal(art.calibration, parts["calibration"])
    assert art.scoring == parts["scoring"]
    assert art.config.to_dict() == parts["config"].to_dict()
    assert art.card == {**parts["card"], "name": "m", "version": "v1"}
    assert art.normalizer.to_dict() == parts["normalizer"].to_dict()
    xn = parts["normalizer"].transform(parts["x"])
    z1, sq1 = parts["embedder"].embed(xn)
    z2, sq2 = art.embedder.embed(xn)
    np.testing.assert_allclose(z2, z1, atol=1e-6)
    np.testing.assert_allclose(sq2, sq1, atol=1e-6)
    manifest = json.loads((path / "MANIFEST.json").read_text())
    assert manifest["format"] == 1 and manifest["name"] == "m" and manifest["version"] == "v1"
    assert len(checksum(path)) == 64


def test_list_versions_and_load_newest(tmp_path, parts):
    assert list_versions(tmp_path, "m") == []
    save(tmp_path, parts, "20260101T000000000Z")
    save(tmp_path, parts, "20260102T000000000Z")
    root = tmp_path / "m"
    (root / ".20260103T000000000Z.tmp-123").mkdir()  # a crashed save
    (root / ".20260103T000000000Z.tmp-123" / "MANIFEST.json").write_text("{}")
    (root / "20260104T000000000Z").mkdir()  # no manifest: incomplete
    (root / "stray.txt").write_text("x")
    assert list_versions(tmp_path, "m") == ["20260101T000000000Z", "20260102T000000000Z"]
    assert load_artifact(tmp_path, "m").version == "20260102T000000000Z"
    assert load_artifact(tmp_path, "m", "20260101T000000000Z").version == "20260101T000000000Z"


def test_no_model_has_a_hint(tmp_path):
    with pytest.raises(ArtifactError, match="streamer train"):
        load_artifact(tmp_path, "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="no trained model 'empty'"):
        load_artifact(tmp_path, "empty")


def test_unknown_version(tmp_path, parts):
    save(tmp_path, parts, "v1")
    with pytest.raises(ArtifactError, match="no MANIFEST.json"):
        load_artifact(tmp_path, "m", "v2")


@pytest.mark.parametrize("victim", ["scoring.json", "reservoir.npy", "model.keras", "card.json"])
def test_checksum_mismatch(tmp_path, parts, victim):
    path = save(tmp_path, parts, "v1")
    with (path / victim).open("ab") as f:
        f.write(b" ")
    with pytest.raises(ArtifactError, match=f"checksum mismatch for {re.escape(victim)}"):
        load_artifact_dir(path)


@pytest.mark.parametrize("victim", ["normalizer.json", "calibration.npy", "config.json"])
def test_missing_file(tmp_path, parts, victim):
    path = save(tmp_path, parts, "v1")
    (path / victim).unlink()
    with pytest.raises(ArtifactError, match=f"{re.escape(victim)} is missing"):
        load_artifact(tmp_path, "m")


def test_bad_manifests(tmp_path, parts):
    path = save(tmp_path, parts, "v1")
    mpath = path / "MANIFEST.json"
    good = json.loads(mpath.read_text())
    mpath.write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable manifest"):
        load_artifact_dir(path)
    mpath.write_text(json.dumps({**good, "format": 99}))
    with pytest.raises(ArtifactError, match="unsupported artifact format"):
        load_artifact_dir(path)
    files = dict(good["files"])
    del files["card.json"]
    mpath.write_text(json.dumps({**good, "files": files}))
    with pytest.raises(ArtifactError, match="does not list card.json"):
        load_artifact_dir(path)


def test_verified_but_unparsable_file_is_an_artifact_error(tmp_path, parts):
    path = save(tmp_path, parts, "v1")
    (path / "normalizer.json").write_text('{"names": ["a"]}')  # valid JSON, wrong content
    manifest = json.loads((path / "MANIFEST.json").read_text())
    manifest["files"]["normalizer.json"] = hashlib.sha256((path / "normalizer.json").read_bytes()).hexdigest()
    (path / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="cannot load"):
        load_artifact_dir(path)


def test_save_refuses_existing_and_bad_names(tmp_path, parts):
    save(tmp_path, parts, "v1")
    with pytest.raises(ArtifactError, match="already exists"):
        save(tmp_path, parts, "v1")
    for version, name in (("../x", "m"), (".hidden", "m"), ("a b", "m"), ("v2", "../m"), ("v2", "a/b")):
        with pytest.raises(ArtifactError, match="bad model name or version"):
            save(tmp_path, parts, version, name=name)
    assert list_versions(tmp_path, "m") == ["v1"]
    assert not any(p.name.startswith(".") for p in (tmp_path / "m").iterdir())


def test_failed_save_leaves_nothing_behind(tmp_path, parts):
    class Broken:
        def save(self, path):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save(tmp_path, {**parts, "embedder": Broken()}, "v1")
    assert [p.name for p in (tmp_path / "m").iterdir()] == []  # the temporary directory is gone
    assert list_versions(tmp_path, "m") == []
