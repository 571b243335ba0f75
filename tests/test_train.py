"""streamer.train: the model card, the artifact contents, and training refusals."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from conftest import density_ref, flow_records, make_config, own_k_distance

from streamer.artifact import load_artifact_dir
from streamer.decode import Decoder, category_buckets
from streamer.records import Record
from streamer.score import combine_scores, knn_distance
from streamer.train import (
    MIN_WINDOWS,
    TrainingError,
    train_model,
    validation_split,
    windows_from_records,
)
from streamer.window import make_windower

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def card(trained_model):
    return json.loads((trained_model["path"] / "card.json").read_text())


@pytest.fixture(scope="module")
def train_windows(trained_model, flows):
    return windows_from_records(trained_model["cfg"], flow_records(flows["train"]))


def test_card_keys(card, trained_model):
    assert set(card) == {"created_at", "source", "data", "training", "validation", "environment", "name",
                         "version"}
    assert card["source"] == "test flows"
    assert (card["name"], card["version"]) == ("default", trained_model["path"].name)
    assert set(card["data"]) == {"records", "unusable_records", "windows", "train_windows", "validation_windows",
                                 "window", "entities", "features", "feature_mean", "feature_std"}
    assert set(card["training"]) == {"epochs_run", "warm_start", "loss", "val_loss", "best_val_loss", "seconds", "hidden",
                                     "latent_dim", "members", "noise_std", "dropout", "weight_decay",
                                     "loss_function", "lr_plateau", "ema_momentum"}
    assert set(card["validation"]) == {"alpha", "false_alarm_rate_heldout", "false_alarm_rate_heldout_n",
                                       "score_quantiles", "knn_scale", "recon_scale"}
    assert set(card["validation"]["score_quantiles"]) == {"0.5", "0.9", "0.99", "0.999"}
    assert card["environment"]["keras_backend"] in ("tensorflow", "jax", "torch")


def test_card_data_counts(card, flows, trained_model, train_windows):
    cfg = trained_model["cfg"]
    wb, names, dead = train_windows
    d = card["data"]
    assert d["records"] == len(flows["train"])
    assert d["unusable_records"] == {} and dead == {}
    assert d["windows"] == len(wb) == d["train_windows"] + d["validation_windows"]
    assert d["validation_windows"] == max(round(0.2 * d["windows"]), MIN_WINDOWS // 2)
    assert d["window"] == "time"
    assert d["entities"] == len({e["src_host"] for e in flows["train"]}) == 20
    assert d["features"] == names == make_windower(Decoder(cfg.schema).feature_names, cfg.window).feature_names
    assert len(d["feature_mean"]) == len(d["feature_std"]) == len(names)
    # every training event lies in exactly one tumbling window
    assert int(wb.n_events.sum()) == len(flows["train"])
    t = card["training"]
    assert 1 <= t["epochs_run"] <= cfg.model.epochs == 8
    assert len(t["loss"]) == len(t["val_loss"]) == t["epochs_run"]
    assert t["best_val_loss"] == min(t["val_loss"])
    assert (t["hidden"], t["latent_dim"]) == (cfg.model.hidden, cfg.model.latent_dim)
    v = card["validation"]
    assert v["alpha"] == 0.01 and v["false_alarm_rate_heldout_n"] == d["validation_windows"] // 2
    assert 0.0 <= v["false_alarm_rate_heldout"] <= 1.0
    q = v["score_quantiles"]
    assert q["0.5"] <= q["0.9"] <= q["0.99"] <= q["0.999"]


def test_artifact_contents_are_consistent(trained_model, card, train_windows):
    """Recompute the reservoir seed and the calibration scores from the training windows."""
    cfg = trained_model["cfg"]
    art = load_artifact_dir(trained_model["path"])
    wb, names, _ = train_windows
    tr, va = validation_split(wb, cfg.model.validation_split)
    assert wb.end_ms[tr].max() <= wb.end_ms[va].min()  # the held-out part is the newest
    assert art.scoring["feature_names"] == names and art.normalizer.names == names
    assert art.scoring["k"] == cfg.detector.k and art.scoring["recon_weight"] == cfg.detector.recon_weight
    assert art.scoring["recon_top"] == cfg.detector.recon_top == 0
    assert art.config.to_dict() == cfg.to_dict()
    # where an input baseline starts: the training windows' raw mean and variance
    np.testing.assert_allclose(art.scoring["input_mean"], wb.x[tr].mean(axis=0))
    np.testing.assert_allclose(art.scoring["input_var"], wb.x[tr].var(axis=0))
    # where a range view starts: the range of every training window, the held-out ones too
    np.testing.assert_allclose(art.scoring["input_min"], wb.x.min(axis=0))
    np.testing.assert_allclose(art.scoring["input_max"], wb.x.max(axis=0))
    # the reservoir seed: every training window's embedding (fewer than reservoir_size)
    z_tr, _ = art.embedder.embed(art.normalizer.transform(wb.x[tr]))
    assert art.reservoir_seed.shape == (card["data"]["train_windows"], cfg.model.latent_dim)
    np.testing.assert_allclose(art.reservoir_seed, z_tr, rtol=1e-5, atol=1e-5)
    # the calibration set: held-out windows scored against the seed
    err_scale, _, _, _ = _check_calibration(art, cfg, wb.x[va], scaled=True)
    np.testing.assert_allclose(art.scoring["feature_error_scale"], err_scale, rtol=1e-6)
    assert len(art.calibration) == card["data"]["validation_windows"]


def _check_calibration(art, cfg, x_va, *, scaled, density=False):
    """Recompute the held-out windows' scores as training does (kNN distance to the reservoir seed,
    relative to the neighbours' own k-distance when ``density``; reconstruction error, with each
    feature's error in units of its mean squared error on these windows when ``scaled``, floored),
    check the artifact's scales and calibration set against them, and return the per-feature scale
    (None unscaled), the kNN distances, errors and scores."""
    z_va, sq_va = art.embedder.embed(art.normalizer.transform(x_va))
    k = cfg.detector.k
    if density:  # from the definition, by brute force over the seed
        knn = density_ref(z_va, art.reservoir_seed, own_k_distance(art.reservoir_seed, k), k)
    else:
        knn = knn_distance(z_va, art.reservoir_seed, k)
    sq = sq_va.astype(np.float64)
    err_scale = None
    if scaled:
        per_feature = sq.mean(axis=0)
        err_scale = np.maximum(per_feature, 0.01 * per_feature.mean() + 1e-12)
        sq = sq / err_scale
    recon = sq.mean(axis=1)
    assert art.scoring["knn_scale"] == pytest.approx(float(np.median(knn)), rel=1e-4)
    assert art.scoring["recon_scale"] == pytest.approx(float(np.median(recon)), rel=1e-4)
    s = combine_scores(knn, recon, knn_scale=art.scoring["knn_scale"], recon_scale=art.scoring["recon_scale"],
                       recon_weight=art.scoring["recon_weight"])
    np.testing.assert_allclose(art.calibration, s, rtol=1e-4, atol=1e-6)
    return err_scale, knn, recon, s


def test_windows_from_records_counts_bad_records(tmp_path):
    cfg = make_config(tmp_path)
    base = {"src_host": "h", "duration_ms": 1, "bytes_out": 1, "bytes_in": 1, "packets": 1, "dst_port": 443,
            "protocol": "tcp", "flag": "SF"}
    recs = [Record(orjson.dumps({**base, "ts": 1000}), "t", 0, 0),
            Record(orjson.dumps({**base, "ts": 60_000}), "t", 0, 1),
            Record(orjson.dumps({**base, "ts": 2000}), "t", 0, 2),  # older, but in the same batch: not late
            Record(b"garbage", "t", 0, 3),
            Record(orjson.dumps({**base, "ts": 3000, "bytes_out": "x"}), "t", 0, 4)]
    wb, names, dead = windows_from_records(cfg, recs)
    assert dead == {"not_json": 1, "wrong_type": 1}
    assert sorted(wb.n_events.tolist()) == [1, 2]
    assert names[0] == "count"


def test_too_little_data(tmp_path, flows):
    cfg = make_config(tmp_path)
    few = flow_records(flows["train"][:30])  # at most 30 windows
    with pytest.raises(TrainingError, match=f"at least {MIN_WINDOWS} windows") as info:
        train_model(cfg, few, source="few", show_progress=False)
    assert "30 records" in str(info.value)
    bad = [Record(b"not json", "t", 0, i) for i in range(100)]
    with pytest.raises(TrainingError, match="100 unusable"):
        train_model(cfg, bad, source="bad", show_progress=False)
    assert not (tmp_path / "default").exists() or not any((tmp_path / "default").iterdir())


def test_unscaled_reconstruction_errors(tmp_path, flows):
    """``model.feature_error_norm=false`` (NSL-KDD's setting): no per-feature scale is written, the
    calibration averages the plain squared errors, and the detector scores with the same formula."""
    from streamer.detector import Detector

    cfg = make_config(tmp_path, **{"model.feature_error_norm": False, "model.epochs": 3})
    art = load_artifact_dir(train_model(cfg, flow_records(flows["train"]), source="unscaled", show_progress=False))
    assert art.scoring["feature_error_scale"] is None
    wb, _, _ = windows_from_records(cfg, flow_records(flows["train"]))
    _, va = validation_split(wb, cfg.model.validation_split)
    _, _, recon, s = _check_calibration(art, cfg, wb.x[va], scaled=False)
    # the detector: the held-out windows score as calibrated, with the errors as the model gives them
    det = Detector(art, cfg.detector)
    out = det.score(wb.x[va], admit=False)
    assert det.err_scale is None
    np.testing.assert_allclose(out.recon, recon, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out.score, s, rtol=1e-4, atol=1e-6)


def test_warm_start_from_the_weights_of_a_model(tmp_path, flows, trained_model, train_windows, caplog):
    """``init_weights`` (the retrainer's ``retrain.warm_start``): the autoencoder starts from the given
    weights (trained one epoch at a vanishing learning rate, it keeps them); weights of another shape are reported and
    the training starts fresh."""
    from streamer.train import fit_on_windows

    cfg = make_config(tmp_path, **{"model.epochs": 1, "model.learning_rate": 1e-12})
    wb, names, _ = train_windows
    base = load_artifact_dir(trained_model["path"]).embedder.autoencoder.get_weights()
    warm = fit_on_windows(cfg, wb, names, source="warm", show_progress=False, init_weights=base)
    got = warm.artifact("w").embedder.autoencoder.get_weights()
    assert warm.card["training"]["warm_start"] is True
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(got, base, strict=True))
    fresh = fit_on_windows(cfg, wb, names, source="fresh", show_progress=False)
    assert fresh.card["training"]["warm_start"] is False
    assert not all(np.allclose(a, b, atol=1e-6) for a, b in zip(fresh.artifact("f").embedder.autoencoder.get_weights(),
                                                                   base, strict=True))
    with caplog.at_level("WARNING"):
        other = fit_on_windows(cfg, wb, names, source="other", show_progress=False, init_weights=base[:-1])
    assert other.card["training"]["warm_start"] is False and "fresh initialisation" in caplog.text


def test_density_relative_knn(tmp_path, flows):
    """``detector.knn_density``: the model records it, its calibration uses the density-relative kNN
    score, and the detector scores held-out windows as calibrated."""
    from streamer.detector import Detector

    cfg = make_config(tmp_path, **{"detector.knn_density": True, "model.epochs": 3})
    art = load_artifact_dir(train_model(cfg, flow_records(flows["train"]), source="density", show_progress=False))
    assert art.scoring["knn_density"] is True
    wb, _, _ = windows_from_records(cfg, flow_records(flows["train"]))
    _, va = validation_split(wb, cfg.model.validation_split)
    _, knn, _, s = _check_calibration(art, cfg, wb.x[va], scaled=True, density=True)
    det = Detector(art, cfg.detector)
    assert det.reservoir.density_k == cfg.detector.k
    out = det.score(wb.x[va], admit=False)
    np.testing.assert_allclose(out.knn, knn, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out.score, s, rtol=1e-4, atol=1e-6)
    # a model trained without it scores plain distances (as do models from before the option)
    assert Detector(load_artifact_dir(train_model(make_config(tmp_path / "plain", **{"model.epochs": 3}),
                                                  flow_records(flows["train"]), source="plain",
                                                  show_progress=False)),
                    cfg.detector).reservoir.density_k == 0


def test_hash_functions_travel_with_the_model(tmp_path, flows):
    """``schema.hash_functions``: a model trained with two hashes per categorical value keeps the
    setting, and a pipeline built from it decodes the same way whatever the detector's config says."""
    from streamer.pipeline import ModelSwapError, Pipeline

    cfg = make_config(tmp_path, **{"schema.hash_functions": 2, "model.epochs": 3})
    art = load_artifact_dir(train_model(cfg, flow_records(flows["train"]), source="two-hashes", show_progress=False))
    assert art.config.schema.hash_functions == 2
    pipe = Pipeline(art, make_config(tmp_path).detector)
    assert pipe.decoder.schema.hash_functions == 2
    events, dead, _ = pipe.decoder.decode(flow_records(flows["test"][:50]))
    assert not dead
    block = events.x[:, 5:9]  # protocol's 4 buckets after the 5 numeric fields
    for row, e in zip(block, flows["test"][:50]):
        assert set(np.flatnonzero(row)) == set(category_buckets(str(e["protocol"]), 4, 2))
    out = pipe.process(flow_records(flows["test"]))
    assert not out.dead and len(out.windows) > 0 and np.isfinite(out.scored.score).all()
    # a running pipeline never hot-swaps to a model that hashes its categories otherwise
    one = load_artifact_dir(train_model(make_config(tmp_path / "one", **{"model.epochs": 3}),
                                        flow_records(flows["train"]), source="one-hash", show_progress=False))
    with pytest.raises(ModelSwapError, match="another schema"):
        Pipeline(one, cfg.detector).swap_model(art)
