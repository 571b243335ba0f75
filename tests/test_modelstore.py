"""streamer.modelstore (announcements, signatures, verified loading), the validation gate, the
pipeline's hot swap, and the detector/CLI side of the model lifecycle (real broker)."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer
from conftest import flow_records, make_config

from streamer.artifact import checksum, list_versions, load_artifact_dir, save_artifact
from streamer.errors import ArtifactError
from streamer.modelstore import (
    ANNOUNCEMENT_SCHEMA,
    Announcement,
    AnnouncementError,
    SignatureError,
    announcement_for,
    ensure_models_topic,
    find_version_dir,
    rejected_dir,
    resolve_artifact,
    sign,
    store_versions,
    verify,
)
from streamer.pipeline import ModelSwapError, Pipeline
from streamer.retrain import evaluate_gate
from streamer.train import windows_from_records


def _ann(**kw) -> Announcement:
    base = dict(name="default", version="v2", path="/srv/models/default/v2", checksum="ab" * 32,
                validation={"alpha": 0.01, "gate": {"passed": True}}, action="publish", history=["v1", "v2"],
                announced_at_ms=1_795_889_627_000, announced_by="retrainer")
    return Announcement(**{**base, **kw})


# -- announcements -------------------------------------------------------------------------------
def test_announcement_round_trip():
    a = sign(_ann(), "k")
    raw = a.to_bytes()
    doc = orjson.loads(raw)
    assert doc["schema"] == ANNOUNCEMENT_SCHEMA and list(doc) == sorted(doc)
    assert set(doc) == {"schema", "name", "version", "path", "checksum", "validation", "action", "history",
                        "announced_at_ms", "announced_by", "signature"}
    b = Announcement.from_bytes(raw)
    assert b == a
    verify(b, "k")  # the signature survives the trip
    assert "signature" not in orjson.loads(_ann().to_bytes())  # unsigned: no field


@pytest.mark.parametrize("raw, what", [
    (None, "tombstone"),
    (b"", "tombstone"),
    (b"not json", "not JSON"),
    (b"[1, 2]", "not a streamer.model/1"),
    (b'{"schema": "streamer.alert/1", "name": "x"}', "not a streamer.model/1"),
    (b'{"schema": "streamer.model/1", "name": "default", "path": "/p", "checksum": "c"}', "'version'"),
    (b'{"schema": "streamer.model/1", "name": "default", "version": "v", "path": "/p", "checksum": "c", '
     b'"signature": 5}', "'signature'"),
    (b'{"schema": "streamer.model/1", "name": "default", "version": "v", "path": "/p", "checksum": "c", '
     b'"history": "v"}', "'history'"),
    (b'{"schema": "streamer.model/1", "name": "default", "version": "v", "path": "/p", "checksum": "c", '
     b'"action": "delete"}', "action"),
])
def test_bad_announcements_are_refused(raw, what):
    with pytest.raises(AnnouncementError, match=what):
        Announcement.from_bytes(raw)


def test_hmac_signatures():
    a = sign(_ann(), "secret-1")
    verify(a, "secret-1")
    with pytest.raises(SignatureError, match="bad signature"):
        verify(a, "secret-2")
    for field, value in (("version", "v3"), ("path", "/tmp/evil"), ("checksum", "cd" * 32), ("history", ["v9"]),
                         ("validation", {"alpha": 0.5}), ("action", "promote")):
        tampered = dataclasses.replace(a, **{field: value})
        with pytest.raises(SignatureError, match="bad signature"):
            verify(tampered, "secret-1")
    with pytest.raises(SignatureError, match="not signed"):
        verify(_ann(), "secret-1")
    verify(_ann(), None)  # without a key nothing is checked
    verify(dataclasses.replace(a, signature="00"), "")
    assert sign(_ann(), None).signature is None


# -- artifacts behind announcements -----------------------------------------------------------------
def _resave(art, models_dir, version, *, root=None, config=None, card=None):
    """A new version of an existing artifact (same weights), under another version name."""
    return save_artifact(models_dir, art.name, embedder=art.embedder, normalizer=art.normalizer,
                         reservoir_seed=art.reservoir_seed, calibration=art.calibration, scoring=art.scoring,
                         config=config or art.config, card=card or {k: v for k, v in art.card.items()
                                                                    if k not in ("name", "version")},
                         version=version, root=root)


@pytest.fixture(scope="module")
def base_model(trained_model):
    return load_artifact_dir(trained_model["path"])


@pytest.fixture
def store(tmp_path, base_model):
    cfg = make_config(tmp_path)
    paths = {v: _resave(base_model, tmp_path, v) for v in ("v1", "v2")}
    return cfg, paths


@pytest.mark.slow
def test_resolve_artifact_checks_everything(store, tmp_path):
    cfg, paths = store
    good = announcement_for(cfg, paths["v2"], action="publish", history=["v1"])
    assert good.checksum == checksum(paths["v2"]) and good.history == ["v1", "v2"]
    assert good.validation["alpha"] == cfg.detector.alpha
    assert resolve_artifact(cfg, good).version == "v2"

    # the announced path is elsewhere (another mount point): found under this model.dir
    assert resolve_artifact(cfg, dataclasses.replace(good, path="/nonexistent/default/v2")).version == "v2"
    with pytest.raises(ArtifactError, match="not found"):
        resolve_artifact(cfg, dataclasses.replace(good, version="v7", path="/nonexistent/v7"))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        resolve_artifact(cfg, dataclasses.replace(good, checksum="0" * 64))
    with pytest.raises(ArtifactError, match="holds default/v1"):  # right checksum, wrong directory
        resolve_artifact(cfg, dataclasses.replace(good, version="v2", path=str(paths["v1"]),
                                                  checksum=checksum(paths["v1"])))
    # signatures: with a key, unsigned and wrongly signed announcements are refused
    keyed = copy.deepcopy(cfg)
    keyed.model.hmac_key = "k"
    with pytest.raises(SignatureError):
        resolve_artifact(keyed, good)
    with pytest.raises(SignatureError):
        resolve_artifact(keyed, sign(copy.deepcopy(good), "other"))
    assert resolve_artifact(keyed, sign(copy.deepcopy(good), "k")).version == "v2"
    # a corrupted file
    norm = paths["v2"] / "normalizer.json"
    norm.write_text(norm.read_text().replace("[", "[ ", 1))
    with pytest.raises(ArtifactError, match="checksum mismatch for normalizer.json"):
        resolve_artifact(cfg, good)


def test_store_versions_lists_rejected_candidates_apart(store, base_model, tmp_path):
    cfg, paths = store
    card = {**{k: v for k, v in base_model.card.items() if k not in ("name", "version")},
            "gate": {"passed": False, "reasons": ["flags only 0 of the 3 windows"]}}
    _resave(base_model, tmp_path, "v3", root=rejected_dir(cfg), card=card)
    assert list_versions(tmp_path, "default") == ["v1", "v2"]  # `streamer run` never picks a rejected one
    rows = {r["version"]: r for r in store_versions(cfg)}
    assert rows["v3"]["status"] == "rejected" and rows["v3"]["gate"] == "failed"
    assert rows["v3"]["gate_reasons"] == ["flags only 0 of the 3 windows"]
    assert rows["v1"]["status"] == "stored" and rows["v1"]["gate"] is None
    assert find_version_dir(cfg, "v3") == rejected_dir(cfg) / "v3"
    assert find_version_dir(cfg, "v1") == paths["v1"] and find_version_dir(cfg, "v9") is None


def test_hmac_key_is_never_written_or_shown(tmp_path, base_model):
    cfg = make_config(tmp_path, **{"model.hmac_key": "s3cret"})
    path = _resave(base_model, tmp_path, "v1", config=cfg)
    assert "s3cret" not in (path / "config.json").read_text()
    assert json.loads((path / "config.json").read_text())["model"]["hmac_key"] is None
    env = {**os.environ, "STREAMER_MODEL__HMAC_KEY": "s3cret"}
    out = subprocess.run([sys.executable, "-m", "streamer.cli", "config", "show"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "s3cret" not in out.stdout and "hmac_key: null" in out.stdout


# -- hot swap in the pipeline ---------------------------------------------------------------------
@pytest.mark.slow
def test_swap_model_between_batches(store, base_model, flows, trained_model, tmp_path):
    cfg, paths = store
    pipe = Pipeline(load_artifact_dir(paths["v1"]), trained_model["cfg"].detector)
    recs = flow_records(flows["test"])
    half = len(recs) // 2
    first = [pipe.process(recs[lo:min(lo + 700, half)]) for lo in range(0, half, 700)]
    assert {r.model_version for r in first} == {"v1"}
    held, open_entities = pipe.held_offsets(), pipe.windower.n_entities
    assert open_entities > 0 and len(pipe.recent) > 0

    # another window: refused, nothing changes
    other = copy.deepcopy(base_model.config)
    other.window.seconds = 20
    with pytest.raises(ModelSwapError, match="another window"):
        pipe.swap_model(dataclasses.replace(load_artifact_dir(paths["v2"]), config=other))
    assert pipe.model_version == "v1"

    readmitted = pipe.swap_model(load_artifact_dir(paths["v2"]))
    assert pipe.model_version == "v2" and readmitted > 0
    assert pipe.held_offsets() == held and pipe.windower.n_entities == open_entities  # window state kept
    assert pipe.detector.calibrator.n == len(load_artifact_dir(paths["v2"]).calibration)
    rest = [pipe.process(recs[lo:lo + 700]) for lo in range(half, len(recs), 700)] + [pipe.flush()]
    assert {r.model_version for r in rest if len(r.windows)} == {"v2"}
    alerts = [a for r in rest for a in r.alerts]
    assert alerts and {a["model_version"] for a in alerts} == {"v2"}
    n_windows = sum(len(r.windows) for r in first + rest)
    assert sum(int(r.windows.n_events.sum()) for r in first + rest) == len(recs) and n_windows > 0


# -- the gate ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_gate_figures_and_refusals(base_model, flows, trained_model):
    cfg = copy.deepcopy(trained_model["cfg"])
    wb, _, _ = windows_from_records(cfg, flow_records(flows["test"]))
    ent = wb.entity.astype(str)
    attack = np.isin(ent, ["10.0.0.19", "10.0.0.18"])
    scored = Pipeline(base_model, cfg.detector).detector.score(wb.x, admit=False)
    strong = attack & (scored.score > 10 * Pipeline(base_model, cfg.detector).detector.calibrator.threshold)
    assert strong.sum() >= 2
    normal_x, confident_x = wb.x[~attack & ~scored.alert], wb.x[strong]

    g = evaluate_gate(base_model, cfg, normal_x, confident_x)
    assert g["passed"] and g["reasons"] == []
    assert g["false_alarm_rate"] <= g["far_max"] == pytest.approx(cfg.detector.alpha * (1 + cfg.retrain.gate_far_tolerance))
    assert g["confident_recall"] == 1.0 and g["confident_flagged"] == g["confident_n"] == int(strong.sum())

    # a candidate that no longer flags what the current model flagged with high confidence
    g = evaluate_gate(base_model, cfg, normal_x, normal_x[:20])
    assert not g["passed"] and any("high confidence" in r for r in g["reasons"])
    # a candidate that raises too many false alarms on held-out normal windows
    g = evaluate_gate(base_model, cfg, np.concatenate([normal_x[:50], wb.x[strong]]), confident_x)
    assert not g["passed"] and any("false-alarm rate" in r for r in g["reasons"])
    # nothing to judge the false-alarm rate on: refused
    assert not evaluate_gate(base_model, cfg, normal_x[:0], confident_x)["passed"]
    # no confident alerts kept: that check passes vacuously
    g = evaluate_gate(base_model, cfg, normal_x, confident_x[:0])
    assert g["passed"] and g["confident_recall"] is None

    # Bars from the model in service (retrain.gate_reference current), scored the same way on the same
    # windows: a candidate no worse than it passes where the fixed bars refuse...
    rel = copy.deepcopy(cfg)
    rel.retrain.gate_reference = "current"
    mixed = np.concatenate([normal_x[:50], wb.x[strong]])
    same = Pipeline(base_model, cfg.detector).detector
    g = evaluate_gate(base_model, rel, mixed, normal_x[:40], current=same)
    assert g["passed"] and g["reference"] == "current", g["reasons"]
    fixed_far = cfg.detector.alpha * (1 + cfg.retrain.gate_far_tolerance)
    assert g["far_max"] == g["current_false_alarm_rate"] == g["false_alarm_rate"] > fixed_far
    assert g["min_confident_recall"] == g["current_confident_recall"] == g["confident_recall"] < 0.95
    # ...one that flags fewer of the confident alerts than it does is refused; the fixed bar stays
    # where the model in service meets it
    looser = Pipeline(base_model, dataclasses.replace(cfg.detector, alpha=0.3)).detector
    g = evaluate_gate(base_model, rel, normal_x, normal_x[:40], current=looser)
    assert 0 < g["current_confident_recall"] < 0.95 and g["confident_recall"] < g["current_confident_recall"]
    assert not g["passed"] and any("the current model's" in r for r in g["reasons"])
    assert g["far_max"] == g["current_false_alarm_rate"] > g["false_alarm_rate"]
    g = evaluate_gate(base_model, rel, normal_x, confident_x, current=same)
    assert g["passed"] and g["far_max"] == pytest.approx(fixed_far) and g["min_confident_recall"] == 0.95


# -- the detector follows the topic (real broker) ------------------------------------------------------
def _produce(bootstrap: str, topic: str, ann: Announcement) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    p.produce(topic, key=ann.name.encode(), value=ann.to_bytes())
    assert p.flush(30) == 0


@pytest.mark.kafka
def test_detector_refuses_bad_announcements_and_swaps_to_a_good_one(store, base_model, bootstrap, topics, tmp_path,
                                                                    caplog):
    from streamer.runner import Runner

    cfg, paths = store
    cfg = copy.deepcopy(cfg)
    cfg.kafka.bootstrap_servers = bootstrap
    cfg.kafka.group_id = topics["group"]
    cfg.topics.input, cfg.topics.alerts, cfg.topics.dead_letter = [topics["input"]], topics["alerts"], topics["dead_letter"]
    cfg.topics.models = f"{topics['input']}.models"
    cfg.model.hmac_key = "k"
    ensure_models_topic(cfg)
    from streamer.kafka_io import ensure_topics, wait_for_broker

    ensure_topics(wait_for_broker(cfg.kafka), [topics["input"]])

    # v3: same weights, other window; v4: corrupted after the announcement was made
    other = copy.deepcopy(base_model.config)
    other.window.seconds = 20
    v3 = _resave(base_model, tmp_path, "v3", config=other)
    v4 = _resave(base_model, tmp_path, "v4")
    bad = [
        announcement_for(cfg, paths["v2"], action="publish", history=["v1"]),  # unsigned
        sign(announcement_for(cfg, paths["v2"], action="publish", history=["v1"]), "wrong key"),
        sign(dataclasses.replace(announcement_for(cfg, paths["v2"], action="publish", history=[]), version="v9",
                                 path=str(tmp_path / "default" / "v9")), "k"),  # missing artifact
        sign(announcement_for(cfg, v3, action="publish", history=[]), "k"),  # other window
        sign(announcement_for(cfg, v4, action="publish", history=[]), "k"),  # corrupted below
        sign(dataclasses.replace(announcement_for(cfg, paths["v2"], action="publish", history=[]),
                                 checksum="0" * 64), "k"),  # wrong checksum
    ]
    (v4 / "calibration.npy").write_bytes(b"\x93NUMPY garbage")
    runner = Runner(cfg, Pipeline(load_artifact_dir(paths["v1"]), cfg.detector), install_signals=False, follow=True)
    caplog.set_level(logging.INFO, logger="streamer.runner")
    t = threading.Thread(target=runner.run, daemon=True)
    t.start()
    try:
        for ann in bad:
            _produce(bootstrap, cfg.topics.models, ann)
            deadline = time.monotonic() + 30
            before = runner.stats.refused
            while runner.stats.refused == before and time.monotonic() < deadline:
                time.sleep(0.1)
        assert runner.stats.refused == len(bad), caplog.text[-3000:]
        assert runner.pipeline.model_version == "v1" and runner.stats.swaps == 0
        _produce(bootstrap, cfg.topics.models, sign(announcement_for(cfg, paths["v2"], action="promote",
                                                                     history=["v1"]), "k"))
        deadline = time.monotonic() + 30
        while runner.pipeline.model_version != "v2" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert runner.pipeline.model_version == "v2" and runner.stats.swaps == 1
    finally:
        runner.stop()
        t.join(30)
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == len(bad)  # one clear line each
    for text, needle in zip(refusals, ["not signed", "bad signature", "not found", "another window",
                                       "checksum mismatch for calibration.npy", "checksum mismatch"]):
        assert needle in text and "keeping v1" in text
    assert any("model swapped v1 -> v2" in r.getMessage() for r in caplog.records)


# -- by hand: streamer models (real broker) ------------------------------------------------------
def _models(env, *args):
    return subprocess.run([sys.executable, "-m", "streamer.cli", "models", *args], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.kafka
def test_models_list_show_promote_rollback(store, base_model, bootstrap, topics, tmp_path):
    cfg, paths = store
    card = {**{k: v for k, v in base_model.card.items() if k not in ("name", "version")},
            "gate": {"passed": False, "reasons": ["too many false alarms"]}}
    _resave(base_model, tmp_path, "v3", root=rejected_dir(cfg), card=card)
    env = {**os.environ, "STREAMER_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "STREAMER_MODEL__DIR": str(tmp_path),
           "STREAMER_TOPICS__MODELS": f"{topics['input']}.models", "STREAMER_MODEL__HMAC_KEY": "k"}

    out = _models(env, "list")
    assert out.returncode == 0, out.stderr
    assert "nothing announced" in out.stdout and "rejected" in out.stdout
    r = _models(env, "rollback")
    assert r.returncode == 1 and "nothing announced yet" in r.stderr and len(r.stderr.strip().splitlines()) == 1

    for v in ("v1", "v2"):
        r = _models(env, "promote", v)
        assert r.returncode == 0, r.stderr
        assert f"announced default/{v} (promote)" in r.stdout
    out = _models(env, "list")
    assert re.search(r"^v2\s+announced", out.stdout, re.M) and "history v1 -> v2" in out.stdout

    r = _models(env, "rollback")
    assert r.returncode == 0 and "announced default/v1 (rollback)" in r.stdout and "history v1\n" in r.stdout
    r = _models(env, "rollback")
    assert r.returncode == 1 and "no earlier announced version" in r.stderr

    shown = json.loads(_models(env, "show", "v2").stdout)
    assert shown["checksum"] == checksum(paths["v2"]) and shown["status"] == "stored" and shown["announced"] is False
    assert "validation" in shown and "feature_mean" not in shown["data"]

    # a person overrides the gate: the rejected candidate moves into the store and is announced
    r = _models(env, "promote", "v3")
    assert r.returncode == 0, r.stderr
    assert list_versions(tmp_path, "default") == ["v1", "v2", "v3"]
    assert not (rejected_dir(cfg) / "v3").exists()

    r = _models(env, "promote", "v8")
    assert r.returncode == 1 and "no version 'v8'" in r.stderr
    # a corrupted version is not announced
    (paths["v2"] / "scoring.json").write_text("{}")
    r = _models(env, "promote", "v2")
    assert r.returncode == 1 and "checksum mismatch for scoring.json" in r.stderr

    # what the topic holds, signed with the key
    from streamer.modelstore import read_announcements

    keyed = copy.deepcopy(cfg)
    keyed.kafka.bootstrap_servers, keyed.topics.models, keyed.model.hmac_key = bootstrap, env["STREAMER_TOPICS__MODELS"], "k"
    anns = read_announcements(keyed)
    assert [(a.version, a.action) for a in anns] == [("v1", "promote"), ("v2", "promote"), ("v1", "rollback"),
                                                      ("v3", "promote")]
    assert anns[-1].history == ["v1", "v3"]
    keyed.model.hmac_key = "other"
    assert read_announcements(keyed) == []  # none verifies under another key
