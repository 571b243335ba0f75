"""Shared fixtures. Broker tests (marker ``kafka``) use the real local broker: ``make test`` starts
it and sets ``STREAMER_TEST_BOOTSTRAP``; run alone, the fixture starts one itself on port 19092.
With ``STREAMER_REQUIRE_KAFKA=1`` (CI) a missing broker fails the run instead of skipping."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import numpy as np
import orjson
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from streamer.config import StreamerConfig, load_config  # noqa: E402
from streamer.records import Record  # noqa: E402
from streamer.synth import DEMO_SCHEMA, Attack, generate_flows, strip_truth  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEST_PORT = 19092
START_MS = 1_767_225_600_000


def make_config(tmp: Path | str, **overrides: object) -> StreamerConfig:
    """A config for the synthetic flow schema, models under ``tmp``."""
    ov: dict[str, object] = {f"schema.{k}": v for k, v in DEMO_SCHEMA.items()}
    ov.update({"window.kind": "time", "window.seconds": 10, "window.lateness_s": 2, "model.dir": str(tmp),
               "model.epochs": 8, "model.patience": 3, "detector.alpha": 0.01, "detector.reservoir_size": 5000})
    ov.update(overrides)
    return load_config(overrides=ov, environ={})


def flow_records(events: list[dict], topic: str = "t") -> list[Record]:
    return [Record(orjson.dumps(strip_truth(e)), topic, 0, i) for i, e in enumerate(events)]


@pytest.fixture(scope="session")
def flows():
    """12 minutes of synthetic flows from 20 hosts; a port scan and an exfiltration after minute 8."""
    cut = START_MS + 8 * 60_000
    attacks = [Attack("port_scan", ("10.0.0.19",), cut + 60_000, cut + 90_000),
               Attack("slow_exfiltration", ("10.0.0.18",), cut + 120_000, cut + 200_000)]
    stream = generate_flows(n_hosts=20, duration_s=720, start_ms=START_MS, attacks=attacks, seed=3)
    train = [e for e in stream.events if e["ts"] < cut]
    test = [e for e in stream.events if e["ts"] >= cut]
    return {"stream": stream, "train": train, "test": test, "cut_ms": cut, "attacks": attacks}


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, flows):
    """A small model trained once per session on the clean part of ``flows`` (time windows)."""
    from streamer.train import train_model

    tmp = tmp_path_factory.mktemp("models")
    cfg = make_config(tmp)
    path = train_model(cfg, flow_records(flows["train"]), source="test flows", show_progress=False)
    return {"cfg": cfg, "path": path, "dir": tmp}


def _reachable(bootstrap: str) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        AdminClient({"bootstrap.servers": bootstrap, "error_cb": lambda e: None}).list_topics(timeout=5)
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def bootstrap():
    """Bootstrap address of a real broker."""
    given = os.environ.get("STREAMER_TEST_BOOTSTRAP")
    required = os.environ.get("STREAMER_REQUIRE_KAFKA") == "1"
    if given and _reachable(given):
        yield given
        return
    script = ROOT / "deploy" / "kafka" / "broker.sh"
    started = subprocess.run(["bash", str(script), "start", "--port", str(TEST_PORT)], capture_output=True, text=True)
    address = f"127.0.0.1:{TEST_PORT}"
    if started.returncode != 0 or not _reachable(address):
        msg = f"no Kafka broker for the integration tests: {started.stderr.strip()[-500:]}"
        if required:
            pytest.fail(msg)
        pytest.skip(msg)
    yield address
    subprocess.run(["bash", str(script), "stop", "--port", str(TEST_PORT)], capture_output=True)


@pytest.fixture
def topics():
    """Fresh, uuid-named topics for one test."""
    tag = uuid.uuid4().hex[:10]
    return {"input": f"test.{tag}.events", "alerts": f"test.{tag}.alerts", "dead_letter": f"test.{tag}.dlq",
            "scores": f"test.{tag}.scores", "group": f"test-{tag}"}


def density_ref(q: np.ndarray, ref: np.ndarray, kd: np.ndarray, k: int,
                floor_of: np.ndarray | None = None) -> np.ndarray:
    """The density-relative score from its definition: mean distance to the k nearest rows of ``ref``
    over their mean k-distance (``kd``, one per row of ``ref``) plus a tenth of the median k-distance
    of ``floor_of`` (default: ``kd``)."""
    d = np.sqrt(((q[:, None, :].astype(np.float64) - ref[None, :, :].astype(np.float64)) ** 2).sum(axis=2))
    near = np.argsort(d, axis=1)[:, :k]
    floor = 0.1 * np.median(kd if floor_of is None else floor_of)
    return np.take_along_axis(d, near, axis=1).mean(axis=1) / (kd[near].mean(axis=1) + floor)


def own_k_distance(x: np.ndarray, k: int) -> np.ndarray:
    """Each row's mean distance to its k nearest other rows."""
    d = np.sqrt(((x[:, None, :].astype(np.float64) - x[None, :, :].astype(np.float64)) ** 2).sum(axis=2))
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, :k].mean(axis=1)

