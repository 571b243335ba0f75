"""streamer.embed: the autoencoder, its training and batched inference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamer import embed as embed_mod
from streamer.embed import LATENT_LAYER, RECON_LAYER, Embedder, build_autoencoder, members_of, train_autoencoder

N_IN, LATENT = 6, 3


@pytest.fixture(scope="module")
def ae():
    """A tiny autoencoder trained two epochs on correlated data."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(600, 2))
    x = np.concatenate([base, base @ rng.normal(size=(2, 4))], axis=1).astype(np.float32)
    model = build_autoencoder(N_IN, hidden=[8], latent_dim=LATENT, noise_std=0.05, seed=3)
    hist = train_autoencoder(model, x[:500], x[500:], epochs=2, patience=2, batch_size=64, learning_rate=1e-2)
    return {"model": model, "emb": Embedder(model), "hist": hist, "x": x}


def _data(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, N_IN)).astype(np.float32)


def test_build_autoencoder_layout():
    m = build_autoencoder(5, hidden=[7, 4], latent_dim=2, noise_std=0.1, seed=0)
    names = [layer.name for layer in m.layers]
    assert names == ["window", "denoise", "enc_0", "enc_1", LATENT_LAYER, "dec_0", "dec_1", RECON_LAYER]
    assert [m.get_layer(n).units for n in ("enc_0", "enc_1", LATENT_LAYER, "dec_0", "dec_1", RECON_LAYER)] == \
        [7, 4, 2, 4, 7, 5]
    no_noise = build_autoencoder(5, hidden=[3], latent_dim=2, noise_std=0.0, seed=0)
    assert "denoise" not in [layer.name for layer in no_noise.layers]


def test_build_autoencoder_is_seeded():
    a = build_autoencoder(4, hidden=[3], latent_dim=2, noise_std=0.1, seed=11)
    b = build_autoencoder(4, hidden=[3], latent_dim=2, noise_std=0.1, seed=11)
    c = build_autoencoder(4, hidden=[3], latent_dim=2, noise_std=0.1, seed=12)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert any(not np.array_equal(wa, wc) for wa, wc in zip(a.get_weights(), c.get_weights()))


def test_train_autoencoder_history_and_epoch_hook():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 4)).astype(np.float32)
    m = build_autoencoder(4, hidden=[4], latent_dim=2, noise_std=0.0, seed=0)
    seen = []
    hist = train_autoencoder(m, x[:96], x[96:], epochs=3, patience=5, batch_size=32, learning_rate=1e-2,
                             on_epoch=lambda e, logs: seen.append((e, sorted(logs))))
    assert len(hist["loss"]) == len(hist["val_loss"]) == 3
    assert all(isinstance(v, float) and np.isfinite(v) for v in hist["loss"] + hist["val_loss"])
    assert [e for e, _ in seen] == [1, 2, 3]
    assert all({"loss", "val_loss"} <= set(keys) for _, keys in seen)


def test_training_reduces_loss(ae):
    assert ae["hist"]["loss"][-1] < ae["hist"]["loss"][0]


def test_embedder_dimensions(ae):
    emb = ae["emb"]
    assert (emb.n_inputs, emb.latent_dim) == (N_IN, LATENT)


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65])
def test_embed_shapes_and_padding(ae, n):
    emb = ae["emb"]
    x = _data(n)
    z, sq = emb.embed(x)
    assert z.shape == (n, LATENT) and sq.shape == (n, N_IN)
    assert z.dtype == np.float32 and sq.dtype == np.float32
    if n:
        # the same rows without padding, through the same compiled graph
        z_ref, sq_ref = (np.asarray(a) for a in emb.infer.predict_on_batch(x))
        np.testing.assert_allclose(z, z_ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(sq, sq_ref, rtol=1e-5, atol=1e-6)


def test_embed_is_row_independent(ae):
    emb = ae["emb"]
    x = _data(65, seed=2)
    z_all, sq_all = emb.embed(x)
    z_one, sq_one = emb.embed(x[17:18])
    np.testing.assert_allclose(z_all[17:18], z_one, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sq_all[17:18], sq_one, rtol=1e-5, atol=1e-6)


def test_embed_large_batch_chunks(ae):
    emb = ae["emb"]
    n = 9000  # one full chunk of MAX_INFER_BATCH and a padded remainder
    x = _data(n, seed=3)
    z, sq = emb.embed(x)
    assert z.shape == (n, LATENT) and sq.shape == (n, N_IN)
    step = embed_mod.MAX_INFER_BATCH
    refs = [emb.infer.predict_on_batch(x[lo:lo + step]) for lo in range(0, n, step)]
    z_ref = np.concatenate([np.asarray(r[0]) for r in refs])
    sq_ref = np.concatenate([np.asarray(r[1]) for r in refs])
    np.testing.assert_allclose(z, z_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sq, sq_ref, rtol=1e-5, atol=1e-6)


def test_embed_small_chunks(ae, monkeypatch):
    emb = ae["emb"]
    x = _data(250, seed=4)
    z_big, sq_big = emb.embed(x)
    monkeypatch.setattr(embed_mod, "MAX_INFER_BATCH", 100)  # chunks 100, 100, 50 (padded to 64)
    z, sq = emb.embed(x)
    np.testing.assert_allclose(z, z_big, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sq, sq_big, rtol=1e-5, atol=1e-6)


def test_sq_err_is_squared_reconstruction_error(ae):
    emb, model = ae["emb"], ae["model"]
    x = _data(40, seed=5)
    _, sq = emb.embed(x)
    x_hat = np.asarray(model.predict_on_batch(x))  # inference mode: no denoising noise
    np.testing.assert_allclose(sq, (x - x_hat) ** 2, rtol=1e-4, atol=1e-6)
    # and z is the latent layer's output
    import keras

    encoder = keras.Model(model.inputs, model.get_layer(LATENT_LAYER).output)
    z, _ = emb.embed(x)
    np.testing.assert_allclose(z, np.asarray(encoder.predict_on_batch(x)), rtol=1e-4, atol=1e-6)


def test_inference_is_deterministic(ae):
    emb = ae["emb"]
    x = _data(70, seed=6)
    a, b = emb.embed(x), emb.embed(x)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_save_load_round_trip(ae, tmp_path):
    emb = ae["emb"]
    path = tmp_path / "m.keras"
    emb.save(path)
    assert path.is_file()
    back = Embedder.load(path)
    assert (back.n_inputs, back.latent_dim) == (emb.n_inputs, emb.latent_dim)
    x = _data(100, seed=7)
    z1, sq1 = emb.embed(x)
    z2, sq2 = back.embed(x)
    np.testing.assert_allclose(z2, z1, rtol=0, atol=1e-6)
    np.testing.assert_allclose(sq2, sq1, rtol=0, atol=1e-6)


def test_dropout_layers_drop_in_training_only(tmp_path):
    m = build_autoencoder(5, hidden=[16, 8], latent_dim=2, noise_std=0.0, seed=0, dropout=0.5)
    names = [layer.name for layer in m.layers]
    assert names == ["window", "enc_0", "enc_0_drop", "enc_1", "enc_1_drop", LATENT_LAYER,
                     "dec_0", "dec_0_drop", "dec_1", "dec_1_drop", RECON_LAYER]
    x = _data(64, seed=2)[:, :5]
    # training mode drops half the units: two calls differ; inference is deterministic
    assert not np.allclose(np.asarray(m(x, training=True)), np.asarray(m(x, training=True)))
    emb = Embedder(m)
    z1, sq1 = emb.embed(x)
    z2, sq2 = emb.embed(x)
    np.testing.assert_array_equal(z1, z2)
    np.testing.assert_array_equal(sq1, sq2)
    emb.save(tmp_path / "d.keras")
    z3, _ = Embedder.load(tmp_path / "d.keras").embed(x)
    np.testing.assert_allclose(z3, z1, rtol=0, atol=1e-6)


def test_weight_decay_uses_adamw_and_shrinks_weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4)).astype(np.float32)
    norms = {}
    for wd in (0.0, 50.0):
        m = build_autoencoder(4, hidden=[8], latent_dim=2, noise_std=0.0, seed=0)
        train_autoencoder(m, x[:192], x[192:], epochs=3, patience=5, batch_size=32, learning_rate=1e-2,
                          weight_decay=wd)
        assert type(m.optimizer).__name__ == ("AdamW" if wd else "Adam")
        norms[wd] = sum(float(np.square(w).sum()) for w in m.get_weights())
    # a decay of lr * 50 = 0.5 per step pulls every weight towards zero far faster than the loss pushes
    assert norms[50.0] < 0.5 * norms[0.0]


@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_training_loss_is_the_one_named(loss):
    """Early stopping keeps the weights of the best validation loss, so that loss, computed by hand
    from the kept model's reconstructions, is the named one (errors far past 1 tell them apart)."""
    rng = np.random.default_rng(3)
    x = (3.0 * rng.normal(size=(256, 4))).astype(np.float32)
    m = build_autoencoder(4, hidden=[8], latent_dim=1, noise_std=0.0, seed=0)
    hist = train_autoencoder(m, x[:192], x[192:], epochs=4, patience=10, batch_size=64, learning_rate=1e-2,
                             loss=loss)
    e = np.asarray(m(x[192:]), dtype=np.float64) - x[192:]
    huber = np.where(np.abs(e) <= 1.0, 0.5 * e**2, np.abs(e) - 0.5).mean()
    assert np.abs(e).max() > 2.0  # the two losses differ on this data
    expected = {"mse": float(np.mean(e**2)), "huber": float(huber)}
    assert min(hist["val_loss"]) == pytest.approx(expected[loss], rel=1e-4)
    other = expected["huber" if loss == "mse" else "mse"]
    assert min(hist["val_loss"]) != pytest.approx(other, rel=0.05)


def _plateau_rates(val_loss: list[float], lr: float, patience: int, floor: float) -> tuple[list[float], float]:
    """The rate each epoch runs at under "halve after ``patience`` epochs without a validation loss
    below the best by more than 1e-4, never below ``floor``", and the rate after the last epoch."""
    rates, best, wait = [], math.inf, 0
    for v in val_loss:
        rates.append(lr)
        if v < best - 1e-4:
            best, wait = v, 0
            continue
        wait += 1
        if wait >= patience:
            lr, wait = max(lr * 0.5, floor), 0
    return rates, lr


@pytest.mark.parametrize("plateau", [0, 1])
def test_lr_plateau_halves_the_rate_down_to_a_hundredth(plateau):
    # inputs of scale 1e-3: after the first epochs the loss never improves by more than 1e-4, so
    # nearly every epoch is a plateau (which ones depends on the backend's initial weights: the
    # expected rates are derived from the validation losses the run reports)
    x = (1e-3 * np.random.default_rng(4).normal(size=(128, 4))).astype(np.float32)
    m = build_autoencoder(4, hidden=[8], latent_dim=1, noise_std=0.0, seed=0)
    hist = train_autoencoder(m, x[:96], x[96:], epochs=14, patience=100, batch_size=32, learning_rate=1e-2,
                             lr_plateau=plateau)
    assert len(hist["loss"]) == 14
    if plateau:
        rates, final = _plateau_rates(hist["val_loss"], 1e-2, plateau, 1e-4)
        assert hist["learning_rate"] == pytest.approx(rates, rel=1e-5)
        # halved at least seven times, down to the floor and never below it
        assert hist["learning_rate"][-1] == pytest.approx(1e-4, rel=1e-5)
        assert min(hist["learning_rate"]) == pytest.approx(1e-4, rel=1e-5)
        assert float(m.optimizer.learning_rate) == pytest.approx(final, rel=1e-5)
    else:
        # the same plateaus leave a constant rate alone
        assert hist.get("learning_rate", [1e-2] * 14) == pytest.approx([1e-2] * 14, rel=1e-6)
        assert float(m.optimizer.learning_rate) == pytest.approx(1e-2, rel=1e-6)


def test_plateau_rates_hand_computed():
    # epoch 1 improves by less than 1e-4 (a plateau: halve), epoch 2 by more than 1e-4 over the
    # best (not over epoch 1), epochs 3-4 are plateaus, the floor stops the last halving
    rates, final = _plateau_rates([5e-4, 4.5e-4, 3e-4, 3e-4, 2.99e-4], 1.0, 1, 0.2)
    assert rates == [1.0, 1.0, 0.5, 0.5, 0.25] and final == 0.2


def _val_mse(m, x):
    return float(np.mean((np.asarray(m(x), dtype=np.float64) - x) ** 2))


def test_ema_momentum_one_validates_and_keeps_the_first_step_weights():
    """At momentum 1 the average never moves after the first step: every epoch validates the same
    weights, and those are the ones kept, while the raw weights train on (their loss falls)."""
    x = np.random.default_rng(5).normal(size=(256, 4)).astype(np.float32)
    m = build_autoencoder(4, hidden=[8], latent_dim=2, noise_std=0.0, seed=0)
    hist = train_autoencoder(m, x[:192], x[192:], epochs=5, patience=10, batch_size=32, learning_rate=1e-2,
                             ema_momentum=1.0)
    assert m.optimizer.use_ema
    assert hist["val_loss"] == pytest.approx([hist["val_loss"][0]] * 5, rel=1e-6)
    assert hist["loss"][-1] < hist["loss"][0]
    assert _val_mse(m, x[192:]) == pytest.approx(hist["val_loss"][0], rel=1e-4)


def test_ema_momentum_keeps_the_averaged_weights_of_the_best_epoch():
    """The kept model is the one early stopping validated best (its loss computed by hand), it is not
    the last step's (training without the average from the same start differs), and momentum 0 is
    plain training."""
    x = np.random.default_rng(6).normal(size=(256, 4)).astype(np.float32)
    runs = {}
    for mom in (0.0, 0.9):
        m = build_autoencoder(4, hidden=[8], latent_dim=2, noise_std=0.0, seed=0)
        hist = train_autoencoder(m, x[:192], x[192:], epochs=6, patience=10, batch_size=32, learning_rate=1e-2,
                                 ema_momentum=mom)
        assert m.optimizer.use_ema == (mom > 0)
        assert _val_mse(m, x[192:]) == pytest.approx(min(hist["val_loss"]), rel=1e-4)
        runs[mom] = (hist["val_loss"], m.get_weights())
    assert runs[0.9][0] != pytest.approx(runs[0.0][0], rel=1e-3)
    assert any(not np.allclose(a, b) for a, b in zip(runs[0.9][1], runs[0.0][1]))


def test_ema_momentum_out_of_range_is_refused():
    m = build_autoencoder(4, hidden=[8], latent_dim=1, noise_std=0.0, seed=0)
    x = np.zeros((8, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="ema_momentum must be in"):
        train_autoencoder(m, x, x, epochs=1, patience=1, batch_size=4, learning_rate=1e-3, ema_momentum=1.5)


def test_unknown_training_loss_is_refused():
    m = build_autoencoder(4, hidden=[8], latent_dim=1, noise_std=0.0, seed=0)
    x = np.zeros((8, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="unknown training loss 'mae'"):
        train_autoencoder(m, x, x, epochs=1, patience=1, batch_size=4, learning_rate=1e-3, loss="mae")


# -- an ensemble of autoencoders (model.members) -----------------------------------------------------


def test_ensemble_layout():
    one = build_autoencoder(5, hidden=[7, 4], latent_dim=2, noise_std=0.1, seed=0)
    ens = build_autoencoder(5, hidden=[7, 4], latent_dim=2, noise_std=0.1, seed=0, members=3)
    assert members_of(one) == 1 and members_of(ens) == 3
    assert int(ens.output.shape[-1]) == 15
    names = {layer.name for layer in ens.layers}
    for i in range(3):
        assert {f"m{i}_denoise", f"m{i}_enc_0", f"m{i}_enc_1", f"m{i}_latent", f"m{i}_dec_0", f"m{i}_dec_1",
                f"m{i}_reconstruction"} <= names
        # each member's layers read only their own member's (no weight is shared)
        assert ens.get_layer(f"m{i}_enc_1").input is ens.get_layer(f"m{i}_enc_0").output
        assert ens.get_layer(f"m{i}_dec_0").input is ens.get_layer(f"m{i}_latent").output
    assert ens.count_params() == 3 * one.count_params()
    # the members start from different initialisations
    assert not np.array_equal(ens.get_layer("m0_enc_0").get_weights()[0], ens.get_layer("m1_enc_0").get_weights()[0])
    with pytest.raises(ValueError, match="at least one member"):
        build_autoencoder(5, hidden=[3], latent_dim=2, noise_std=0.0, seed=0, members=0)


@pytest.fixture(scope="module")
def ens():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(600, 2))
    x = np.concatenate([base, base @ rng.normal(size=(2, 4))], axis=1).astype(np.float32)
    model = build_autoencoder(N_IN, hidden=[8], latent_dim=LATENT, noise_std=0.05, seed=3, members=3)
    hist = train_autoencoder(model, x[:500], x[500:], epochs=4, patience=4, batch_size=64, learning_rate=1e-2)
    return {"model": model, "emb": Embedder(model), "hist": hist, "x": x}


def _member_outputs(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each member's latent vectors and reconstructions, (members, n, .), read from its own layers."""
    import keras

    m = members_of(model)
    latents = [np.asarray(keras.Model(model.inputs, model.get_layer(f"m{i}_latent").output).predict_on_batch(x))
               for i in range(m)]
    recons = np.asarray(model.predict_on_batch(x)).reshape(len(x), m, -1).transpose(1, 0, 2)
    return np.stack(latents), recons


def test_ensemble_embedding_is_members_side_by_side_and_error_their_mean(ens):
    emb, model = ens["emb"], ens["model"]
    assert (emb.members, emb.n_inputs, emb.latent_dim) == (3, N_IN, 3 * LATENT)
    x = _data(70, seed=7)
    z, sq = emb.embed(x)
    latents, recons = _member_outputs(model, x)
    np.testing.assert_allclose(z, np.concatenate(list(latents), axis=1), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(sq, ((recons - x[None]) ** 2).mean(axis=0), rtol=1e-4, atol=1e-6)
    # three different models, not one model three times
    assert np.abs(recons[0] - recons[1]).max() > 1e-3


def test_ensemble_trains_each_member_on_the_input(ens):
    """The training loss is the mean of the members' own losses: the best validation loss (whose
    weights early stopping restored) equals the members' mean squared error on the held-out rows,
    and every member reconstructs the input better than predicting zeros."""
    x_val = ens["x"][500:]
    _, recons = _member_outputs(ens["model"], x_val)
    per_member = ((recons - x_val[None]) ** 2).mean(axis=(1, 2))
    assert min(ens["hist"]["val_loss"]) == pytest.approx(per_member.mean(), rel=1e-3)
    assert (per_member < (x_val ** 2).mean()).all()


def test_ensemble_save_load_round_trip(ens, tmp_path):
    emb = ens["emb"]
    path = tmp_path / "ens.keras"
    emb.save(path)
    back = Embedder.load(path)
    assert back.members == 3
    x = _data(20, seed=8)
    for a, b in zip(emb.embed(x), back.embed(x)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
