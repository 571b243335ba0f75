"""The model code runs unchanged on the JAX backend, and artifacts cross backends."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import sys
import numpy as np
import keras
from streamer.embed import Embedder, build_autoencoder, train_autoencoder
assert keras.backend.backend() == sys.argv[1], keras.backend.backend()
members = int(sys.argv[4])
x = np.random.default_rng(0).normal(size=(600, 12)).astype("float32")
m = build_autoencoder(12, hidden=[16], latent_dim=3, noise_std=0.1, seed=1, members=members)
h = train_autoencoder(m, x[:500], x[500:], epochs=3, patience=2, batch_size=64, learning_rate=1e-2)
assert h["val_loss"][-1] < h["val_loss"][0] * 1.5
e = Embedder(m)
z, err = e.embed(x[:70])
assert z.shape == (70, 3 * members) and err.shape == (70, 12) and np.isfinite(err).all()
e.save(sys.argv[2])
np.save(sys.argv[3], z)
"""

LOAD = """
import sys
import numpy as np
from streamer.embed import Embedder
x = np.random.default_rng(0).normal(size=(600, 12)).astype("float32")
z, _ = Embedder.load(sys.argv[2]).embed(x[:70])
np.testing.assert_allclose(z, np.load(sys.argv[3]), rtol=1e-4, atol=1e-5)
"""


def _py(code: str, backend: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": backend}
    return subprocess.run([sys.executable, "-c", code, backend, *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax not installed (pip install -e '.[dev]')")
@pytest.mark.parametrize("members", [1, 3])
def test_jax_backend_trains_embeds_and_tensorflow_loads_it(tmp_path: Path, members: int):
    """One autoencoder, and an ensemble of three (model.members)."""
    model, z = tmp_path / "ae.keras", tmp_path / "z.npy"
    res = _py(SCRIPT, "jax", str(model), str(z), str(members))
    assert res.returncode == 0, res.stderr[-3000:]
    res = _py(LOAD, "tensorflow", str(model), str(z))
    assert res.returncode == 0, res.stderr[-3000:]
