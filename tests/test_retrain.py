"""streamer.retrain: drift -> retrain -> gate -> announce -> hot swap in a running detector (real
broker), the poisoning ramp, and a retrainer that fails or crashes mid-training."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from conftest import START_MS, flow_records, make_config

from streamer.artifact import list_versions, load_artifact_dir
from streamer.config import KafkaConfig
from streamer.kafka_io import read_topic_to_end
from streamer.modelstore import latest_announcement
from streamer.pipeline import Pipeline
from streamer.replay import replay_values
from streamer.retrain import Retrainer, _Watch, change_point, evaluate_gate
from streamer.runner import Runner
from streamer.synth import Attack, generate_flows, regime_shift, strip_truth

MIN = 60_000
SHIFT_MS = START_MS + 12 * MIN  # the backup client rolls out
C_MS = START_MS + 20 * MIN  # phase C: produced after the swap
END_S = 32 * 60
SCAN = "10.0.0.20"
SCAN_MS = START_MS + 28 * MIN
DRIFT_HOSTS = [f"10.0.0.{i}" for i in range(5, 13)]  # 8 of the 16 workstations
# Small, fast settings for 20 hosts (2 windows per second of event time) at alpha 0.01.
RETRAIN = {"retrain.reservoir_windows": 3000, "retrain.min_windows": 400, "retrain.drift_windows": 400,
           "retrain.interval_s": 0, "retrain.retry_s": 0}


@pytest.fixture(scope="module")
def drift_data():
    """32 minutes of flows from 20 hosts: training [0, 8) min, then A [8, 12) normal, B [12, 20) with 8
    workstations on a new regime (8x downloads, 6x longer flows), C [20, 32) the same regime with a
    port scan at minute 28."""
    stream = generate_flows(n_hosts=20, duration_s=END_S, start_ms=START_MS, seed=3,
                            attacks=[Attack("port_scan", (SCAN,), SCAN_MS, SCAN_MS + 30_000)])
    events = regime_shift(stream.events, DRIFT_HOSTS, SHIFT_MS, bytes_in_factor=8, duration_factor=6)
    train = [e for e in events if e["ts"] < START_MS + 8 * MIN]
    ab = [e for e in events if START_MS + 8 * MIN <= e["ts"] < C_MS]
    c = [e for e in events if e["ts"] >= C_MS]
    return {"train": train, "ab": ab, "c": c}


@pytest.fixture(scope="module")
def drift_model(tmp_path_factory, drift_data):
    from streamer.train import train_model

    tmp = tmp_path_factory.mktemp("drift-models")
    cfg = make_config(tmp, **RETRAIN)
    path = train_model(cfg, flow_records(drift_data["train"]), source="drift test flows", show_progress=False)
    return {"cfg": cfg, "path": path, "dir": tmp}


def _copy_model(drift_model, tmp_path) -> Path:
    """A private model store holding only the base version (the tests write versions into it)."""
    dest = tmp_path / "models" / "default" / drift_model["path"].name
    shutil.copytree(drift_model["path"], dest)
    return dest


def _values(events):
    return [orjson.dumps(strip_truth(e)) for e in events]


def _read(bootstrap, topic):
    return [orjson.loads(r.value) for r in read_topic_to_end(KafkaConfig(bootstrap_servers=bootstrap), topic)]


def _wait(cond, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.kafka
def test_drift_retrain_gate_announce_and_hot_swap(drift_data, drift_model, bootstrap, topics, tmp_path):
    base = _copy_model(drift_model, tmp_path)
    cfg = make_config(tmp_path / "models", **RETRAIN)
    cfg.kafka.bootstrap_servers = bootstrap
    cfg.kafka.group_id = topics["group"]
    cfg.kafka.batch_size = 500
    cfg.topics.input = [topics["input"]]
    cfg.topics.alerts, cfg.topics.dead_letter, cfg.topics.scores = topics["alerts"], topics["dead_letter"], topics["scores"]
    cfg.topics.models = f"{topics['input']}.models"
    ab, c = drift_data["ab"], drift_data["c"]
    replay_values(cfg, _values(ab), topics["input"], show_progress=False)

    # The detector: a running Runner that follows the announcements.
    v1 = base.name
    runner = Runner(cfg, Pipeline(load_artifact_dir(base), cfg.detector), install_signals=False, follow=True)
    errors: list[BaseException] = []

    def run():
        try:
            runner.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        _wait(lambda: runner.stats.records >= len(ab) or errors, 120, "the detector to read phases A and B")
        assert not errors, errors
        assert runner.pipeline.model_version == v1

        # The retrainer, as its command: own consumer group, stops after its first publication.
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "STREAMER_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
               "STREAMER_TOPICS__INPUT": topics["input"], "STREAMER_TOPICS__MODELS": cfg.topics.models,
               "STREAMER_MODEL__DIR": cfg.model.dir, "STREAMER_MODEL__EPOCHS": "8", "STREAMER_MODEL__PATIENCE": "3",
               "STREAMER_DETECTOR__ALPHA": "0.01", "STREAMER_DETECTOR__RESERVOIR_SIZE": "5000",
               "STREAMER_RETRAIN__GROUP_ID": f"{topics['group']}-retrainer", "STREAMER_KAFKA__BATCH_SIZE": "500",
               **{f"STREAMER_RETRAIN__{k.split('.')[1].upper()}": str(v) for k, v in RETRAIN.items()}}
        proc = subprocess.run([sys.executable, "-m", "streamer.cli", "retrain", "--until-end", "--max-publications",
                               "1"], env=env, capture_output=True, text=True, timeout=400)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "drift detected" in proc.stderr and "passed the gate" in proc.stderr, proc.stderr[-3000:]
        assert "epoch 1/8" in proc.stderr  # training progress in the log
        versions = list_versions(cfg.model.dir, "default")
        assert len(versions) == 2 and versions[0] == v1
        v2 = versions[1]
        ann = latest_announcement(cfg)
        assert ann is not None and ann.version == v2 and ann.action == "publish"
        assert ann.history == [v1, v2]
        assert ann.validation["gate"]["passed"] is True
        card = orjson.loads((Path(cfg.model.dir) / "default" / v2 / "card.json").read_bytes())
        assert card["retrain"]["reason"] in ("drift", "false alarms") and card["gate"]["passed"]

        # The running detector adopts it between two batches...
        _wait(lambda: runner.pipeline.model_version == v2 or errors, 60, "the hot swap")
        assert not errors, errors
        # ...and scores the rest of the stream with it.
        replay_values(cfg, _values(c), topics["input"], show_progress=False)
        _wait(lambda: runner.stats.records >= len(ab) + len(c) or errors, 120, "the detector to read phase C")
        runner.stop_at_end = True
        thread.join(60)
        assert not thread.is_alive() and not errors, errors
    finally:
        runner.stop()
        thread.join(30)

    assert runner.stats.model_versions == [v1, v2]
    assert runner.stats.swaps == 1 and runner.stats.refused == 0
    scores = _read(bootstrap, topics["scores"])
    assert {s["model_version"] for s in scores} == {v1, v2}

    # Every input event is scored exactly once, across the swap.
    keys = [(s["source"]["partition"], s["entity"], s["window_start_ms"]) for s in scores]
    assert len(keys) == len(set(keys)), "a window was scored twice"
    inputs = read_topic_to_end(KafkaConfig(bootstrap_servers=bootstrap), topics["input"])
    assert len(inputs) == len(ab) + len(c) == sum(s["n_events"] for s in scores)
    span = {k: (s["source"]["offset_start"], s["source"]["offset_end"]) for k, s in zip(keys, scores)}
    for r in inputs:
        e = orjson.loads(r.value)
        lo, hi = span[(r.partition, e["src_host"], e["ts"] // 10_000 * 10_000)]
        assert lo <= r.offset <= hi
    # Per partition, the old version scored everything before the swap, the new one everything after.
    for p in {k[0] for k in keys}:
        seq = [s["model_version"] for s in sorted(scores, key=lambda s: s["source"]["offset_end"])
               if s["source"]["partition"] == p]
        assert seq == sorted(seq, key=lambda v: v != v1)

    # False-alarm rates (attack windows left out): up under the drift, back toward alpha after the swap.
    alpha = cfg.detector.alpha

    def far(sel):
        picked = [s for s in scores if sel(s) and not (s["entity"] == SCAN and s["window_start_ms"] >= SCAN_MS - 10_000
                                                       and s["window_start_ms"] < SCAN_MS + 30_000)]
        return sum(s["alert"] for s in picked) / len(picked), len(picked)

    before, n0 = far(lambda s: s["window_start_ms"] < SHIFT_MS)
    drift_old, n1 = far(lambda s: s["window_start_ms"] >= SHIFT_MS and s["model_version"] == v1)
    after, n2 = far(lambda s: s["model_version"] == v2)
    print(f"false-alarm rate: before drift {before:.4f} ({n0}), drift with the old model {drift_old:.4f} ({n1}), "
          f"after the swap {after:.4f} ({n2}); alpha {alpha}")
    assert n0 > 300 and n1 > 300 and n2 > 1000
    assert drift_old > max(2 * alpha, 2 * before)
    assert after < drift_old / 2 and after < 3 * alpha

    # The attack after the shift is still caught, by the new model.
    alerts = _read(bootstrap, topics["alerts"])
    scan = [a for a in alerts if a["entity"] == SCAN and SCAN_MS - 10_000 <= a["window_start_ms"] < SCAN_MS + 30_000]
    assert len(scan) >= 2 and {a["model_version"] for a in scan} == {v2}


# -- poisoning ---------------------------------------------------------------------------------
RAMP_HOST = "10.0.0.18"


def _ramp(start_ms: int, end_ms: int, seed: int = 5) -> list[dict]:
    """Exfiltration that grows slowly: uploads from ~3 KB to ~3 MB over the ramp (log-linear)."""
    rng = np.random.default_rng(seed)
    out = []
    for t in np.sort(rng.uniform(start_ms, end_ms, int((end_ms - start_ms) / 4000))):
        frac = (t - start_ms) / (end_ms - start_ms)
        size = int(np.exp(rng.normal(8.0 + 7.0 * frac, 0.4)))
        out.append({"ts": int(t), "src_host": RAMP_HOST, "dst_host": "198.51.100.23", "dst_port": 443,
                    "protocol": "tcp", "flag": "SF", "duration_ms": int(1000 + 40_000 * frac), "bytes_out": size,
                    "bytes_in": 3000, "packets": size // 1400 + 3, "_attack": f"{frac:.4f}"})
    return out


@pytest.mark.slow
def test_poisoning_ramp_is_not_admitted_and_fails_the_gate(drift_model, tmp_path):
    """A slow ramp of exfiltration: the retrainer's reservoir keeps only its faint beginning, the
    confident set fills with its end, and a candidate trained on the poisoned windows is refused."""
    _copy_model(drift_model, tmp_path)
    cfg = make_config(tmp_path / "models", **RETRAIN)
    r0, r1 = START_MS + 9 * MIN, START_MS + 29 * MIN
    stream = generate_flows(n_hosts=20, duration_s=30 * 60, start_ms=START_MS, seed=3)
    ramp = _ramp(r0, r1)
    live = sorted([e for e in stream.events if e["ts"] >= START_MS + 8 * MIN] + ramp,
                  key=lambda e: (e["ts"], e["src_host"]))
    frac = {}
    for e in ramp:
        frac.setdefault(e["ts"] // 10_000 * 10_000, float(e["_attack"]))

    rt = Retrainer(cfg, load_artifact_dir(drift_model["path"]), announce=False)
    recs = flow_records(live)
    for lo in range(0, len(recs), 500):
        rt.observe(rt.pipeline.process(recs[lo:lo + 500]))
    assert rt.due() is None  # one host's attack is no change of regime: nothing to retrain on

    def ramp_windows(store):
        return [(end - 10_000, store.p_value[i]) for i, (ent, end) in enumerate(zip(store.entity, store.end_ms))
                if ent == RAMP_HOST and (end - 10_000) in frac]

    admitted = ramp_windows(rt.reservoir)
    confident = ramp_windows(rt.confident)
    # Only windows from the faint first third of the ramp got in (every one the model alerted on
    # stayed out) ...
    assert all(p >= cfg.detector.alpha for _, p in admitted)
    assert all(frac[start] < 0.35 for start, _ in admitted), sorted(frac[s] for s, _ in admitted)
    assert len(admitted) < 0.2 * len(frac)
    # ... while its strong part became confident alerts the gate will insist on.
    assert len(confident) > 0.5 * len(frac)

    # A candidate that learnt the ramp (as if it had been admitted) does not pass the gate.
    from streamer.train import fit_on_windows

    train_wb, gate_x, _ = rt.training_windows("schedule")
    poison = [w for w in range(len(rt.confident)) if rt.confident.entity[w] == RAMP_HOST]
    poisoned = copy.deepcopy(train_wb)
    n_p = len(poison)
    poisoned.x = np.concatenate([train_wb.x, np.repeat(rt.confident.x[poison], 3, axis=0)])
    poisoned.end_ms = np.concatenate([train_wb.end_ms, np.repeat(rt.confident.end_ms[poison], 3)])
    poisoned.start_ms = poisoned.end_ms
    poisoned.entity = np.concatenate([train_wb.entity, np.full(3 * n_p, RAMP_HOST, dtype=object)])
    for name in ("partition", "offset_lo", "offset_hi", "n_events"):
        setattr(poisoned, name, np.zeros(len(poisoned.x), dtype=np.int64))
    poisoned.topic = np.full(len(poisoned.x), "", dtype=object)
    cand = fit_on_windows(rt.cfg, poisoned, rt.names, source="poisoned", show_progress=False)
    gate = evaluate_gate(cand.artifact("poisoned"), rt.cfg, gate_x, rt.confident.x)
    assert not gate["passed"]
    assert any("high confidence" in r for r in gate["reasons"]), gate["reasons"]

    # The honest candidate (what the retrainer would train on a schedule) passes and still flags them.
    out = rt.retrain("schedule")
    assert out["passed"], out
    assert out["gate"]["confident_recall"] >= cfg.retrain.gate_min_confident_recall
    assert list_versions(cfg.model.dir, "default")[-1] == out["version"]


def test_windows_grouped_by_an_alert_cooldown_are_not_normal_training_data(drift_model, tmp_path):
    """With an alert cooldown, a lasting attack alerts once per escalation; the rest of its
    significant windows still stay out of the retrainer's reservoir of normal windows."""
    _copy_model(drift_model, tmp_path)
    cfg = make_config(tmp_path / "models", **RETRAIN, **{"detector.alert_cooldown": 1000})
    stream = generate_flows(n_hosts=20, duration_s=20 * 60, start_ms=START_MS, seed=3)
    live = sorted([e for e in stream.events if e["ts"] >= START_MS + 8 * MIN] + _ramp(START_MS + 9 * MIN, START_MS + 19 * MIN),
                  key=lambda e: (e["ts"], e["src_host"]))
    rt = Retrainer(cfg, load_artifact_dir(drift_model["path"]), announce=False)
    recs = flow_records(live)
    grouped = 0
    for lo in range(0, len(recs), 500):
        result = rt.pipeline.process(recs[lo:lo + 500])
        if result.scored is not None:
            sc = result.scored
            grouped += int((sc.repeat & (sc.significance < cfg.detector.alpha)).sum())
        rt.observe(result)
    assert grouped > 0  # the ramp's later windows repeat its incident: no alert, yet significant
    assert (rt.reservoir.p_value >= cfg.detector.alpha).all()
    assert any(ent == RAMP_HOST for ent in rt.quarantine.entity) or any(ent == RAMP_HOST for ent in rt.confident.entity)


# -- the watch ---------------------------------------------------------------------------------
def _watch(alarms, levels):
    w = _Watch("drift")
    t = 0
    for a, lv in zip(alarms, levels):  # batches of very different sizes: only windows count
        w.add(np.arange(t, t + len(a)) * 10_000, np.asarray(a, bool), np.asarray(lv, float))
        t += len(a)
    return w


def test_watch_confirms_a_lasting_settled_change_only():
    bar = 0.02
    rng = np.random.default_rng(0)
    lasting = _watch([rng.uniform(size=600) < 0.05], [rng.uniform(0.3, 1.0, 600)])  # one big batch
    ok, text, first = lasting.verdict(600, bar)
    assert ok and first == 0 and lasting.start_ms == 0, text
    # as many false alarms and as high a mean score, but all in one burst: no
    burst = _watch([np.r_[np.ones(30), np.zeros(570)]], [np.r_[np.full(200, 0.95), rng.uniform(0, 1, 400)]])
    ok, text, _ = burst.verdict(600, bar)
    assert not ok and "mean calibrated score" in text
    # scores up, but no more false alarms than alpha allows: no
    assert not _watch([np.zeros(600)], [rng.uniform(0.3, 1.0, 600)]).verdict(600, bar)[0]
    # a ramp: high and rising: not settled
    ramp = _watch([rng.uniform(size=600) < 0.05], [np.clip(np.linspace(0.6, 1.2, 600) + rng.normal(0, .2, 600), 0, 1)])
    ok, text, _ = ramp.verdict(600, bar)
    assert not ok and "still climbing" in text
    # only the trailing windows count, whatever the batch sizes
    late = _watch([np.zeros(300), rng.uniform(size=5) < 0.5, rng.uniform(size=595) < 0.05],
                  [rng.uniform(0, 0.9, 300), rng.uniform(0.3, 1, 5), rng.uniform(0.3, 1.0, 595)])
    assert late.seen == 900
    ok, _, first = late.verdict(600, bar)
    assert ok and first == 300 * 10_000
    assert not _watch([np.zeros(300), rng.uniform(size=600) < 0.05],
                      [rng.uniform(0, 0.9, 300), rng.uniform(0.3, 1.0, 600)]).verdict(900, bar)[0]


def test_change_point_dates_a_step_up():
    rng = np.random.default_rng(1)
    level = np.r_[rng.uniform(0, 1, 700), rng.uniform(0.25, 1, 500)]
    end = np.arange(1200) * 10_000
    shuffled = rng.permutation(1200)  # given in any order: dated in event time
    assert abs(change_point(end[shuffled], level[shuffled]) - 700 * 10_000) <= 50 * 10_000


# -- failures ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_failed_training_is_reported_and_retried_later(drift_model, drift_data, tmp_path, monkeypatch, caplog):
    _copy_model(drift_model, tmp_path)
    cfg = make_config(tmp_path / "models", **{**RETRAIN, "retrain.retry_s": 300})
    now = [1000.0]
    rt = Retrainer(cfg, load_artifact_dir(drift_model["path"]), announce=False, clock=lambda: now[0])
    recs = flow_records(drift_data["ab"])
    for lo in range(0, len(recs), 500):
        rt.observe(rt.pipeline.process(recs[lo:lo + 500]))
    import streamer.artifact

    def crash(*a, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(streamer.artifact.np, "save", crash)  # fails half-way through writing the artifact
    out = rt.retrain("schedule")
    assert out["passed"] is False and "disk full" in out["error"]
    assert "retraining failed" in caplog.text
    assert rt.stats.failed == 1 and rt.model_version == drift_model["path"].name
    root = Path(cfg.model.dir) / "default"
    assert list_versions(cfg.model.dir, "default") == [drift_model["path"].name]
    assert not [p for p in root.rglob(".*")]  # no temporary directory left
    assert not list_versions(root, "rejected")
    assert rt.due() is None  # retried only after retrain.retry_s
    now[0] += 301
    cfg.retrain.every_windows = 1
    rt.cfg.retrain.every_windows = 1
    rt.stats.admitted += 1
    assert rt.due() == "windows"


@pytest.mark.slow
def test_warm_start_fine_tunes_the_model_in_service(drift_model, drift_data, tmp_path):
    _copy_model(drift_model, tmp_path)
    cfg = make_config(tmp_path / "models", **{**RETRAIN, "retrain.warm_start": True})
    rt = Retrainer(cfg, load_artifact_dir(drift_model["path"]), announce=False, clock=lambda: 0.0)
    recs = flow_records(drift_data["ab"])
    for lo in range(0, len(recs), 500):
        rt.observe(rt.pipeline.process(recs[lo:lo + 500]))
    out = rt.retrain("schedule")
    assert "error" not in out, out
    card = orjson.loads((Path(out["path"]) / "card.json").read_bytes())
    assert card["training"]["warm_start"] is True and card["retrain"]["reason"] == "schedule"
    base = orjson.loads((drift_model["path"] / "card.json").read_bytes())
    assert base["training"]["warm_start"] is False


_KILL_SCRIPT = r"""
import sys, time, numpy as np
sys.path.insert(0, {tests!r})
from conftest import make_config
from streamer.artifact import save_artifact
from streamer.normalize import Normalizer

class SlowEmbedder:
    def save(self, path):
        open(path, "wb").write(b"half a model")
        print("writing", flush=True)
        time.sleep(60)

cfg = make_config({tmp!r}, **{{"schema.numeric_fields": ["a"], "schema.categorical_fields": []}})
x = np.random.default_rng(0).normal(size=(20, 1))
save_artifact({tmp!r}, "m", embedder=SlowEmbedder(), normalizer=Normalizer.fit(x, ["a"]),
              reservoir_seed=np.zeros((5, 2)), calibration=np.ones(5), scoring={{}}, config=cfg, card={{}},
              version="v9")
"""


def test_retrainer_killed_mid_write_leaves_no_visible_version(tmp_path):
    """SIGKILL while an artifact is being written: only a hidden temporary directory remains; no
    version is listed, loading says so clearly, and the next save of that version succeeds."""
    from streamer.artifact import load_artifact
    from streamer.errors import ArtifactError

    tests = str(Path(__file__).resolve().parent)
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT.format(tests=tests, tmp=str(tmp_path))],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.kill()
        proc.wait(30)
    leftovers = [p.name for p in (tmp_path / "m").iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".v9.tmp-")
    assert list_versions(tmp_path, "m") == []
    with pytest.raises(ArtifactError, match="no trained model"):
        load_artifact(tmp_path, "m")
