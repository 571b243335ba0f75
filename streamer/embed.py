"""The autoencoder: the encoder gives a window's latent vector, the decoder its reconstruction.

Written against Keras 3 layers and ``keras.ops`` only (no backend calls), so the same code runs with
``KERAS_BACKEND=tensorflow`` (default) and ``KERAS_BACKEND=jax``. Inference goes through one
compiled call per batch (``predict_on_batch``), on batch sizes padded to a power of two so the
compiled function is traced a handful of times, not once per batch size.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

# Keep TensorFlow's C++ log lines out of the user's terminal: on a machine without CUDA it logs an
# "error" for the missing driver at the first model call. Python exceptions still surface.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _import_keras():  # noqa: ANN202
    """Import Keras with file descriptor 2 muted: TensorFlow's C++ runtime prints INFO lines
    (oneDNN, CUDA probing) before its log level applies. Python errors still surface, after
    stderr is restored. ``STREAMER_TF_QUIET=0`` keeps the chatter."""
    if os.environ.get("STREAMER_TF_QUIET", "1") == "0":
        import keras

        return keras
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import keras
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return keras


keras = _import_keras()
# Each new padded batch size traces the predict function once; TensorFlow warns about it at the
# fifth trace, which is expected here (a handful of power-of-two sizes per model).
logging.getLogger("tensorflow").setLevel(logging.ERROR)

__all__ = ["Embedder", "build_autoencoder", "members_of", "train_autoencoder"]

log = logging.getLogger(__name__)

LATENT_LAYER = "latent"
RECON_LAYER = "reconstruction"
# Largest batch sent through the compiled call at once; bigger batches are chunked.
MAX_INFER_BATCH = 8192
MIN_INFER_BATCH = 64
#: Training losses by name (``model.loss``): Keras' own squared error, and Huber's loss at delta 1.
LOSSES: dict[str, str | keras.losses.Loss] = {"mse": "mse", "huber": keras.losses.Huber(delta=1.0)}


def _tag(member: int, members: int) -> str:
    """The prefix of member ``member``'s layer names: none for a single autoencoder."""
    return "" if members == 1 else f"m{member}_"


def build_autoencoder(
    n_inputs: int, *, hidden: list[int], latent_dim: int, noise_std: float, seed: int, members: int = 1,
    dropout: float = 0.0,
) -> keras.Model:
    """A dense, denoising autoencoder ``x -> z -> x_hat`` (trains on ``x_hat``).

    With ``members`` > 1, an ensemble: that many autoencoders of the same shape side by side in one
    model, each from its own initialisation (and noise), sharing no weight. Member ``i``'s layers
    carry the prefix ``m<i>_`` (its latent layer is ``m<i>_latent``; :class:`Embedder` joins them),
    and ``reconstruction`` is the members' reconstructions side by side (``members * n_inputs``).
    Trained against the input repeated ``members`` times, each member learns on its own: the loss
    is the mean of theirs, and no gradient crosses from one to another.

    With ``dropout`` > 0, each hidden layer's output (encoder and decoder, not the latent layer)
    is dropped at that rate while training; inference never drops."""
    if members < 1:
        raise ValueError(f"an autoencoder needs at least one member, got {members}")
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(n_inputs,), name="window")

    def hidden_layer(h, width: int, name: str, drop_seed: int):
        """A hidden layer, then its dropout while training. Dropout seeds start at ``seed + 1000``,
        apart from the noise layers' ``seed + m``: no two layers draw the same random stream."""
        h = keras.layers.Dense(width, activation="gelu", name=name)(h)
        if dropout > 0:
            h = keras.layers.Dropout(dropout, seed=seed + 1000 + drop_seed, name=f"{name}_drop")(h)
        return h

    outputs = []
    for m in range(members):
        tag = _tag(m, members)
        h = inputs
        if noise_std > 0:
            h = keras.layers.GaussianNoise(noise_std, seed=seed + m, name=f"{tag}denoise")(h)
        for i, width in enumerate(hidden):
            h = hidden_layer(h, width, f"{tag}enc_{i}", 100 * m + i)
        h = keras.layers.Dense(latent_dim, name=f"{tag}{LATENT_LAYER}")(h)
        for i, width in enumerate(reversed(hidden)):
            h = hidden_layer(h, width, f"{tag}dec_{i}", 100 * m + 50 + i)
        outputs.append(keras.layers.Dense(n_inputs, name=f"{tag}{RECON_LAYER}")(h))
    if members == 1:
        return keras.Model(inputs, outputs[0], name="autoencoder")
    return keras.Model(inputs, keras.layers.Concatenate(name=RECON_LAYER)(outputs), name="autoencoder")


def members_of(model: keras.Model) -> int:
    """How many autoencoders ``model`` holds side by side (see :func:`build_autoencoder`)."""
    return int(model.output.shape[-1]) // int(model.inputs[0].shape[-1])


class _EpochLog(keras.callbacks.Callback):
    """Training progress: one log line per epoch, and an optional hook for a progress bar."""

    def __init__(self, epochs: int, hook: Callable[[int, dict[str, float]], None] | None) -> None:
        super().__init__()
        self.epochs = epochs
        self.hook = hook

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = {k: float(v) for k, v in (logs or {}).items()}
        log.debug("epoch %d/%d loss=%.5f val_loss=%.5f", epoch + 1, self.epochs, logs.get("loss", float("nan")),
                 logs.get("val_loss", float("nan")))
        if self.hook is not None:
            self.hook(epoch + 1, logs)


def train_autoencoder(
    model: keras.Model,
    x_train: np.ndarray,
    x_val: np.ndarray,
    *,
    epochs: int,
    patience: int,
    batch_size: int,
    learning_rate: float,
    weight_decay: float = 0.0,
    loss: str = "mse",
    lr_plateau: int = 0,
    ema_momentum: float = 0.0,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, list[float]]:
    """Fit on ``x_train`` with early stopping on ``x_val``; returns the loss curves. With
    ``weight_decay`` > 0 the optimizer is AdamW (decoupled weight decay at that rate), else Adam.
    ``loss`` is ``"mse"`` or ``"huber"`` (Huber's loss with delta 1: squared up to an error of one
    normalized unit, linear past it); early stopping watches the same loss on ``x_val``. With
    ``lr_plateau`` > 0 the learning rate halves after that many epochs in which the validation loss
    did not improve by more than 1e-4 (Keras' default), down to a hundredth of ``learning_rate``.
    With ``ema_momentum`` > 0 the optimizer keeps an exponential moving average of the weights over
    training steps; each epoch's validation loss is that of the averaged weights, and early stopping
    keeps the averaged weights of the best epoch (1.0 freezes the average at the first step)."""
    if loss not in LOSSES:
        raise ValueError(f"unknown training loss {loss!r}: expected one of {', '.join(LOSSES)}")
    if not 0.0 <= ema_momentum <= 1.0:
        raise ValueError(f"ema_momentum must be in [0, 1], got {ema_momentum!r}")
    ema = {"use_ema": True, "ema_momentum": ema_momentum} if ema_momentum > 0 else {}
    if weight_decay > 0:
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay, **ema)
    else:
        optimizer = keras.optimizers.Adam(learning_rate, **ema)
    model.compile(optimizer=optimizer, loss=LOSSES[loss])
    members = members_of(model)
    # an ensemble's members each reconstruct the input: the target is the input once per member
    target = (lambda x: x) if members == 1 else (lambda x: np.tile(x, (1, members)))
    callbacks: list[keras.callbacks.Callback] = []
    if ema_momentum > 0:
        # Validation runs on the averaged weights; at each epoch's end they are swapped into the model
        # before early stopping looks, so the weights it keeps (and restores at the end, after fit
        # has written the average into the model) are the averaged ones. Order matters: first.
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    callbacks += [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True),
        _EpochLog(epochs, on_epoch),
    ]
    if lr_plateau > 0:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=lr_plateau,
                                                           min_lr=learning_rate / 100))
    hist = model.fit(
        x_train,
        target(x_train),
        validation_data=(x_val, target(x_val)),
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        verbose=0,
        callbacks=callbacks,
    )
    return {k: [float(v) for v in vals] for k, vals in hist.history.items()}


class Embedder:
    """Batch inference: ``embed(x) -> (z, squared_error)`` through one compiled call per chunk.

    ``z`` is the latent vector of each row, ``squared_error`` the per-feature squared
    reconstruction error (its row sum is the reconstruction error, its shares the explanation).
    """

    def __init__(self, autoencoder: keras.Model) -> None:
        self.autoencoder = autoencoder
        x = autoencoder.inputs[0]
        self.n_inputs = int(x.shape[-1])
        self.members = members_of(autoencoder)
        # The per-feature squared reconstruction error is computed inside the compiled call; an
        # ensemble's is the mean over its members.
        if self.members == 1:
            sq_err = keras.ops.square(keras.ops.subtract(x, autoencoder.output))
        else:
            diff = keras.ops.subtract(keras.ops.tile(x, [1, self.members]), autoencoder.output)
            sq_err = keras.ops.mean(keras.ops.reshape(keras.ops.square(diff), (-1, self.members, self.n_inputs)),
                                    axis=1)
        # an ensemble's embedding: its members' latent vectors side by side
        latents = [autoencoder.get_layer(f"{_tag(i, self.members)}{LATENT_LAYER}").output for i in range(self.members)]
        latent = latents[0] if self.members == 1 else keras.layers.Concatenate(name=LATENT_LAYER)(latents)
        self.infer = keras.Model(
            autoencoder.inputs, [latent, sq_err], name="embed_and_reconstruct"
        )
        self.latent_dim = int(latent.shape[-1])

    @classmethod
    def load(cls, path: str | Path) -> Embedder:
        """Load a ``.keras`` file in safe mode (no arbitrary code, no pickle)."""
        model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
        return cls(model)

    def save(self, path: str | Path) -> None:
        self.autoencoder.save(str(path))

    def embed(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = x.shape[0]
        if n == 0:
            return np.empty((0, self.latent_dim), np.float32), np.empty((0, self.n_inputs), np.float32)
        x = np.ascontiguousarray(x, dtype=np.float32)
        zs, xs = [], []
        for lo in range(0, n, MAX_INFER_BATCH):
            chunk = x[lo:lo + MAX_INFER_BATCH]
            m = chunk.shape[0]
            padded_n = max(MIN_INFER_BATCH, 1 << (m - 1).bit_length())
            if padded_n != m:
                chunk = np.concatenate([chunk, np.zeros((padded_n - m, self.n_inputs), np.float32)])
            z, xh = self.infer.predict_on_batch(chunk)
            zs.append(np.asarray(z)[:m])
            xs.append(np.asarray(xh)[:m])
        return np.concatenate(zs), np.concatenate(xs)
