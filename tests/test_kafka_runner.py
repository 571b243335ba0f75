"""Integration tests against the real local Kafka broker: events in, alerts out; bad events to the
dead-letter topic; a detector killed mid-stream and restarted skips no event."""

from __future__ import annotations

import base64
import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from streamer.artifact import load_artifact_dir
from streamer.config import KafkaConfig
from streamer.kafka_io import read_topic_to_end
from streamer.pipeline import Pipeline
from streamer.replay import replay_values
from streamer.runner import Runner
from streamer.synth import strip_truth

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[1]


def _cfg(trained_model, bootstrap, topics, **extra):
    cfg = copy.deepcopy(trained_model["cfg"])
    cfg.kafka.bootstrap_servers = bootstrap
    cfg.kafka.group_id = topics["group"]
    cfg.topics.input = [topics["input"]]
    cfg.topics.alerts = topics["alerts"]
    cfg.topics.dead_letter = topics["dead_letter"]
    cfg.topics.scores = topics["scores"]
    for k, v in extra.items():
        section, name = k.split("__")
        setattr(getattr(cfg, section), name, v)
    return cfg


def _values(events):
    return [orjson.dumps(strip_truth(e)) for e in events]


def _read(bootstrap: str, topic: str) -> list[dict]:
    return [orjson.loads(r.value) for r in read_topic_to_end(KafkaConfig(bootstrap_servers=bootstrap), topic)]


def test_events_in_alerts_out(trained_model, flows, bootstrap, topics):
    cfg = _cfg(trained_model, bootstrap, topics)
    replay_values(cfg, _values(flows["test"]), topics["input"], show_progress=False)
    model = load_artifact_dir(trained_model["path"])
    stats = Runner(cfg, Pipeline(model, cfg.detector), stop_at_end=True, install_signals=False).run()

    assert stats.records == len(flows["test"])
    assert stats.dead_letters == 0
    alerts = _read(bootstrap, topics["alerts"])
    assert len(alerts) == stats.alerts > 0
    hosts = {a["entity"] for a in alerts}
    assert {"10.0.0.19", "10.0.0.18"} <= hosts  # the port scanner and the exfiltrating host
    attack_hosts = sum(a["entity"] in ("10.0.0.19", "10.0.0.18") for a in alerts)
    assert attack_hosts / len(alerts) > 0.5
    a = alerts[0]
    for key in ("alert_id", "entity", "window_start_ms", "window_end_ms", "score", "p_value", "threshold",
                "model_version", "top_features", "source"):
        assert key in a
    assert a["model_version"] == model.version
    assert a["p_value"] < cfg.detector.alpha and a["score"] > a["threshold"]
    assert a["source"]["topic"] == topics["input"]
    assert a["source"]["offset_start"] <= a["source"]["offset_end"]
    assert 0 < sum(f["share"] for f in a["top_features"]) <= 1.0001

    scores = _read(bootstrap, topics["scores"])
    assert len(scores) == stats.windows
    # every event is in exactly one scored window (tumbling windows, one run, no restart)
    assert sum(s["n_events"] for s in scores) == len(flows["test"])

    # offsets were committed up to the end of every partition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": topics["group"]})
    try:
        parts = [TopicPartition(topics["input"], p) for p in range(3)]
        committed = c.committed(parts, timeout=10)
        ends = [c.get_watermark_offsets(tp, timeout=10)[1] for tp in parts]
        assert [tp.offset for tp in committed] == ends
    finally:
        c.close()


BAD = {
    b"not json at all": "not_json",
    b'"a string"': "not_object",
    b'{"src_host": "h1"}': "missing_field",
    (b'{"src_host": "h1", "dst_port": 1, "protocol": "tcp", "flag": "SF", "duration_ms": 1, "bytes_out": "x", '
     b'"bytes_in": 1, "packets": 1}'): "wrong_type",
    b"\xff\xfe\xfa": "unknown_encoding",
    b"{" + b'"pad": "' + b"x" * 70_000 + b'"}': "oversized",
}


def test_bad_events_go_to_dead_letter(trained_model, flows, bootstrap, topics):
    cfg = _cfg(trained_model, bootstrap, topics)
    good = _values(flows["test"][:3000])
    values = list(good)
    for i, bad in enumerate(BAD):
        values.insert(100 + i * 400, bad)
    replay_values(cfg, values, topics["input"], show_progress=False)
    model = load_artifact_dir(trained_model["path"])
    stats = Runner(cfg, Pipeline(model, cfg.detector), stop_at_end=True, install_signals=False).run()

    assert stats.records == len(values)
    assert stats.events == len(good)  # the detector went on after each bad event
    dead = _read(bootstrap, topics["dead_letter"])
    assert len(dead) == len(BAD)
    by_original = {base64.b64decode(d["original_b64"]): d for d in dead}
    for raw, reason in BAD.items():
        d = by_original[raw]
        assert d["reason"] == reason
        assert d["detail"]
        assert d["source"]["topic"] == topics["input"]
        assert d["source"]["offset"] >= 0 and d["source"]["partition"] in (0, 1, 2)


def _run_cli(args, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "streamer.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _cli_env(trained_model, bootstrap, topics):
    cfg = trained_model["cfg"]
    return {
        **os.environ,
        "STREAMER_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "STREAMER_KAFKA__GROUP_ID": topics["group"],
        "STREAMER_KAFKA__BATCH_SIZE": "300",
        "STREAMER_TOPICS__INPUT": topics["input"],
        "STREAMER_TOPICS__ALERTS": topics["alerts"],
        "STREAMER_TOPICS__DEAD_LETTER": topics["dead_letter"],
        "STREAMER_TOPICS__SCORES": topics["scores"],
        "STREAMER_MODEL__DIR": cfg.model.dir,
        "STREAMER_MODEL__NAME": cfg.model.name,
        "STREAMER_DETECTOR__ALPHA": str(cfg.detector.alpha),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }


def _wait_for(bootstrap, topic, n, timeout_s=120.0):
    deadline = time.monotonic() + timeout_s
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{time.time_ns()}", "error_cb": lambda e: None})
    try:
        while time.monotonic() < deadline:
            md = c.list_topics(topic, timeout=5).topics.get(topic)
            if md is not None and md.error is None and md.partitions:
                try:
                    total = sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] for p in md.partitions)
                except KafkaException:  # a topic just created: its leader may not be known yet
                    total = -1
                if total >= n:
                    return total
            time.sleep(0.2)
    finally:
        c.close()
    raise AssertionError(f"{topic} did not reach {n} records in {timeout_s}s")


def test_kill_and_restart_skips_no_event(trained_model, flows, bootstrap, topics):
    """SIGKILL the detector mid-stream; a restart resumes from the committed offsets and every
    input event ends up in a scored window."""
    cfg = _cfg(trained_model, bootstrap, topics)
    events = flows["test"]
    replay_values(cfg, _values(events), topics["input"], show_progress=False)
    env = _cli_env(trained_model, bootstrap, topics)

    first = _run_cli(["run", "--until-end"], env)
    try:
        _wait_for(bootstrap, topics["scores"], 200)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    assert first.returncode == -signal.SIGKILL
    scored_before = _wait_for(bootstrap, topics["scores"], 1, 5)

    second = _run_cli(["run", "--until-end"], env)
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err[-2000:]

    scores = _read(bootstrap, topics["scores"])
    assert len(scores) > scored_before
    # Which partition did each event go to? Read the input topic back with its coordinates.
    inputs = read_topic_to_end(KafkaConfig(bootstrap_servers=bootstrap), topics["input"])
    assert len(inputs) == len(events)
    windows: dict[tuple, list[tuple[int, int]]] = {}
    for s in scores:
        key = (s["source"]["partition"], s["entity"], s["window_start_ms"])
        windows.setdefault(key, []).append((s["source"]["offset_start"], s["source"]["offset_end"]))
    missing = []
    for r in inputs:
        e = orjson.loads(r.value)
        key = (r.partition, e["src_host"], e["ts"] // 10_000 * 10_000)
        if not any(lo <= r.offset <= hi for lo, hi in windows.get(key, [])):
            missing.append((r.partition, r.offset))
    assert not missing, f"{len(missing)} events never scored, e.g. {missing[:5]}"


def test_sigterm_flushes_commits_and_exits(trained_model, flows, bootstrap, topics):
    cfg = _cfg(trained_model, bootstrap, topics)
    replay_values(cfg, _values(flows["test"]), topics["input"], show_progress=False)
    env = _cli_env(trained_model, bootstrap, topics)
    proc = _run_cli(["run"], env)  # runs forever unless stopped
    try:
        _wait_for(bootstrap, topics["scores"], 100)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "records" in out
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": topics["group"]})
    try:
        committed = c.committed([TopicPartition(topics["input"], p) for p in range(3)], timeout=10)
        assert sum(max(tp.offset, 0) for tp in committed) > 0
    finally:
        c.close()


def test_train_from_topic_and_replay_cli(tmp_path, flows, bootstrap, topics):
    """`streamer replay` a JSONL file into a topic, then `streamer train --topic` reads it back."""
    data = tmp_path / "train.jsonl"
    data.write_bytes(b"\n".join(_values(flows["train"][:4000])) + b"\n")
    env = {**os.environ, "STREAMER_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "TF_CPP_MIN_LOG_LEVEL": "3"}
    rep = _run_cli(["replay", str(data), "--topic", topics["input"], "--entity-field", "src_host", "--no-progress"],
                   env)
    out, err = rep.communicate(timeout=120)
    assert rep.returncode == 0, err
    assert "4000 events produced" in out
    from conftest import make_config

    cfg = make_config(tmp_path)
    sets = [f"--set=schema.{k}={','.join(v) if isinstance(v, list) else v}" for k, v in (
        ("entity_field", cfg.schema.entity_field), ("numeric_fields", cfg.schema.numeric_fields),
        ("categorical_fields", cfg.schema.categorical_fields), ("hash_buckets", cfg.schema.hash_buckets))]
    tr = _run_cli(["train", "--topic", topics["input"], "--model-dir", str(tmp_path / "m"), "--epochs", "3",
                   "--window", "time", "--no-progress", *sets], env)
    out, err = tr.communicate(timeout=300)
    assert tr.returncode == 0, err[-2000:]
    version_dir = Path(out.strip().splitlines()[-1])
    card = orjson.loads((version_dir / "card.json").read_bytes())
    assert card["data"]["records"] == 4000
    assert card["source"] == f"topic:{topics['input']}"


def test_a_failed_async_commit_is_forgotten_so_the_next_batch_commits_again(trained_model):
    from confluent_kafka import KafkaError

    cfg = trained_model["cfg"]
    runner = Runner(cfg, Pipeline(load_artifact_dir(trained_model["path"]), cfg.detector), install_signals=False)
    runner._committed = {("t", 0): 10, ("t", 1): 20}
    runner._on_commit(None, [TopicPartition("t", 0, 10)])  # success: kept
    assert runner._committed == {("t", 0): 10, ("t", 1): 20}
    runner._on_commit(KafkaError(KafkaError.REQUEST_TIMED_OUT), [TopicPartition("t", 1, 20)])
    assert runner._committed == {("t", 0): 10}


def test_settle_heap_freezes_and_releases():
    import gc

    from streamer.runner import _settle_heap

    try:
        _settle_heap()
        assert gc.get_freeze_count() > 0
        _settle_heap(release=True)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
