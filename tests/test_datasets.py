"""Dataset loaders of ``streamer eval``, on small files laid out like ``shared/datasets``."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from streamer import datasets
from streamer.cli import _eval_config
from streamer.errors import ConfigError


def _write(path, text: str, *, bom: bool = False, crlf: bool = False) -> None:
    if crlf:
        text = text.replace("\n", "\r\n")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())


def test_csv_with_bom_crlf_separator_and_categorical(tmp_path):
    f = tmp_path / "plant.csv"
    rows = "\n".join(f"{i};{i % 3}.5;{'on' if i % 2 else 'off'};{'attack' if i in (7, 8) else 'ok'};x{i}"
                     for i in range(10))
    _write(f, "time;temp;state;label;id\n" + rows + "\n", bom=True, crlf=True)
    ds = datasets.load_csv([f], label_col="label", sep=";", time_col="time", drop_cols=["id"], train_rows=6,
                           label_normal="ok")
    assert ds.name == "plant"
    assert ds.overrides["schema.numeric_fields"] == ["temp"]
    assert ds.overrides["schema.categorical_fields"] == ["state"]
    s = next(ds.series)
    assert len(s.train) == 6 and len(s.test) == 4
    assert s.labels.tolist() == [0, 1, 1, 0]
    doc = orjson.loads(s.test[1].value)
    assert doc["temp"] == 1.5 and doc["state"] == "on" and "id" not in doc and "label" not in doc


def test_csv_several_files_train_frac_and_normal_only(tmp_path):
    for name in ("a", "b"):
        _write(tmp_path / f"{name}.csv", "v,y\n" + "\n".join(f"{i},{1 if i in (1, 8) else 0}" for i in range(10)) + "\n")
    ds = datasets.load_csv([tmp_path / "a.csv", tmp_path / "b.csv"], label_col="y", train_frac=0.5,
                           train_normal_only=True)
    assert ds.name == "csv" and ds.n_series == 2
    series = list(ds.series)
    assert [s.name for s in series] == ["a", "b"]
    assert len(series[0].train) == 4  # 5 training rows minus the labelled anomaly at row 1
    assert series[0].labels.tolist() == [0, 0, 0, 1, 0]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"label_col": "nope", "train_rows": 2}, "--label-col"),
        ({"label_col": "y", "train_rows": 2, "train_frac": 0.5}, "--train-rows/--train-frac"),
        ({"label_col": "y", "train_frac": 1.5}, "--train-frac"),
        ({"label_col": "y", "train_rows": 50}, "--train-rows/--train-frac"),
        ({"label_col": "y", "train_rows": 2, "drop_cols": ["missing"]}, "--csv"),
    ],
)
def test_csv_bad_use_names_the_option(tmp_path, kwargs, field):
    f = tmp_path / "d.csv"
    _write(f, "v,y\n1,0\n2,0\n3,1\n4,0\n")
    with pytest.raises(ConfigError) as exc:
        ds = datasets.load_csv([f], **kwargs)
        list(ds.series)
    assert field in str(exc.value)


def test_csv_text_labels_need_label_normal(tmp_path):
    f = tmp_path / "d.csv"
    _write(f, "v,y\n1,ok\n2,ok\n3,bad\n")
    with pytest.raises(ConfigError, match="--label-normal"):
        list(datasets.load_csv([f], label_col="y", train_rows=1).series)


def test_dataset_root_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMER_DATASETS", str(tmp_path))
    assert datasets.dataset_root(None) == tmp_path
    monkeypatch.delenv("STREAMER_DATASETS")
    with pytest.raises(ConfigError, match="--root"):
        datasets.dataset_root(None)


def test_nsl_kdd_layout(tmp_path):
    base = tmp_path / "nsl-kdd"
    base.mkdir()
    names = ["duration", "protocol_type", "service", "flag", "src_bytes"]
    (base / "field_names.csv").write_text("\n".join(f"{n},x" for n in names) + "\n")
    (base / "KDDTrain+.txt").write_text("0,tcp,http,SF,100,normal,20\n0,tcp,http,SF,5,neptune,20\n1,udp,dns,SF,50,normal,15\n")
    (base / "KDDTest+.txt").write_text("0,tcp,http,SF,90,normal,20\n9,icmp,ecr_i,SF,1000,smurf,10\n")
    ds = datasets.load_nsl_kdd(tmp_path)
    s = next(ds.series)
    assert len(s.train) == 2  # the normal training records only
    assert s.labels.tolist() == [0, 1]
    assert ds.overrides["schema.categorical_fields"] == ["protocol_type", "service", "flag"]
    assert ds.overrides["schema.numeric_fields"] == ["duration", "src_bytes"]
    assert orjson.loads(s.test[1].value)["service"] == "ecr_i"
    # the settings chosen for NSL-KDD land in a valid evaluation config, and a --set still wins
    cfg = _eval_config(None, ds.overrides, {})
    assert (cfg.model.patience, cfg.model.epochs, cfg.model.hidden) == (40, 400, [128, 64])
    assert (cfg.model.validation_split, cfg.model.ema_momentum) == (0.1, 0.99)
    assert cfg.model.feature_error_norm is False
    assert _eval_config(None, ds.overrides, {"model.patience": 6}).model.patience == 6


def test_smd_layout(tmp_path):
    base = tmp_path / "smd"
    for sub in ("train", "test", "test_label"):
        (base / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.savetxt(base / "train" / "machine-9-9.txt", rng.uniform(size=(20, 38)), delimiter=",")
    np.savetxt(base / "test" / "machine-9-9.txt", rng.uniform(size=(10, 38)), delimiter=",")
    (base / "test_label" / "machine-9-9.txt").write_text("\n".join(["0"] * 8 + ["1", "1"]) + "\n")
    ds = datasets.load_smd(tmp_path)
    assert ds.n_series == 1
    s = next(ds.series)
    assert (len(s.train), len(s.test), int(s.labels.sum())) == (20, 10, 2)
    doc = orjson.loads(s.test[0].value)
    assert doc["machine"] == "machine-9-9" and len([k for k in doc if k.startswith("m")]) == 39
    with pytest.raises(ConfigError):
        datasets.load_smd(tmp_path, machines=["machine-0-0"])
    # the settings chosen for SMD land in a valid evaluation config (a misspelt key would raise)
    cfg = _eval_config(None, ds.overrides, {})
    assert (cfg.detector.recon_weight, cfg.detector.recon_top, cfg.model.members) == (0.8, 8, 3)
    assert (cfg.model.patience, cfg.model.epochs, cfg.detector.alert_cooldown) == (20, 200, 30)
    assert cfg.model.hidden == [128, 64]
    assert _eval_config(None, ds.overrides, {"detector.recon_weight": 0.5}).detector.recon_weight == 0.5


def test_nab_layout_and_probation(tmp_path):
    base = tmp_path / "nab"
    (base / "data" / "realX").mkdir(parents=True)
    (base / "labels").mkdir()
    ts = [f"2020-01-01 00:{m:02d}:00" for m in range(40)]
    (base / "data" / "realX" / "s.csv").write_text("timestamp,value\n" + "\n".join(f"{t},{i}" for i, t in enumerate(ts)) + "\n")
    windows = {"realX/s.csv": [["2020-01-01 00:30:00.000000", "2020-01-01 00:33:00.000000"]]}
    (base / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    ds = datasets.load_nab(tmp_path)
    s = next(ds.series)
    assert s.category == "realX" and len(s.test) == 40
    assert len(s.train) == datasets.nab_probation(40) == 6
    assert s.labels[30:34].tolist() == [1, 1, 1, 1] and s.labels.sum() == 4
    assert datasets.nab_probation(100_000) == 750  # NAB caps the probation at 15% of 5,000 rows


def test_csv_time_column_is_the_event_time(tmp_path):
    """--time-col values go to the decoder as given (seconds, or ISO 8601 text, which it reads as
    from a topic); a row without one has no time (the decoder dead-letters it)."""
    f = tmp_path / "t.csv"
    _write(f, "when,v,y\n2014-07-01 00:00:00,1,0\n1404174600,2,0\n,3,1\n")
    s = next(datasets.load_csv([f], label_col="y", time_col="when", train_rows=1).series)
    docs = [orjson.loads(r.value) for r in [*s.train, *s.test]]
    assert [d.get("t") for d in docs] == ["2014-07-01 00:00:00", 1404174600.0, None]
    assert all("when" not in d for d in docs)
    assert datasets.load_csv([f], label_col="y", time_col="when", train_rows=1).overrides["schema.time_field"] == "t"
