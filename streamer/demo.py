"""``streamer demo``: the whole product on a laptop in a few minutes.

Steps:
1. start the local Kafka broker (unless a bootstrap server is given);
2. generate a SYNTHETIC network-flow stream (:mod:`streamer.synth`) with three injected attacks
   in its second part, and a few malformed events;
3. train a model on the clean first part (``streamer train`` code);
4. replay the second part into an input topic (``streamer replay`` code);
5. run the detector on it through Kafka (``streamer run`` code) until it has read everything;
6. read the alert topic back, print the alerts and precision/recall against the injected truth,
   and write the summary JSON;
7. stop what step 1 started.

The drift phase (``--drift-minutes``, 0 to leave it out) continues the stream after the attacks: a
quarter of the workstations roll out a backup client (8x larger downloads, 6x longer flows; a
benign, lasting change of the normal regime, :func:`streamer.synth.regime_shift`). While the
detector keeps running, the retrainer (``streamer retrain`` code, its own consumer group) reads the
same topic, detects the drift, retrains, validates and announces a new version on the demo's models
topic; the running detector hot-swaps to it between two batches. Then ``--after-minutes`` more of
the new regime, with a port scan, are produced. The summary gains ``model_versions`` (the versions
that scored events, in order) and ``false_alarm_rate`` before the drift, under the drift with the
old model, and after the swap (attack windows left out). Precision and recall stay those of the
attack phase, as before.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import orjson

from streamer.config import StreamerConfig, apply_overrides
from streamer.kafka_io import read_topic_to_end
from streamer.localbroker import start_local_broker, stop_local_broker
from streamer.records import Record
from streamer.synth import (
    DEMO_SCHEMA,
    Attack,
    demo_attacks,
    generate_flows,
    regime_shift,
    strip_truth,
)

__all__ = ["run_demo", "demo_overrides", "score_alerts"]

log = logging.getLogger(__name__)

WINDOW_S = 10
# Malformed events mixed into the stream, to show the dead-letter path.
BAD_EVENTS = [
    b"this is not json",
    b"[1, 2, 3]",
    b'{"src_host": "10.0.0.9", "ts": 1767227200000}',
    b'{"src_host": "10.0.0.9", "dst_port": 443, "protocol": "tcp", "flag": "SF", "duration_ms": 5, '
    b'"bytes_out": "lots", "bytes_in": 10, "packets": 2}',
    b"\xff\xfe\x00garbage",
]


def demo_overrides() -> dict[str, Any]:
    """The configuration the demo runs with (its schema matches :mod:`streamer.synth`)."""
    ov: dict[str, Any] = {f"schema.{k}": v for k, v in DEMO_SCHEMA.items()}
    ov.update({
        "window.kind": "time",
        "window.seconds": WINDOW_S,
        "window.lateness_s": 2,
        "model.name": "demo",
        "detector.alpha": 0.001,
        # 60 hosts give 6 windows per second of event time: judge a drift over ~8 minutes of it.
        "retrain.drift_windows": 3000,
    })
    return ov


def _drift_hosts(hosts: list[str]) -> list[str]:
    """A quarter of the workstations, none of the attack hosts (the last 20 are used by attacks)."""
    n_servers = max(1, len(hosts) // 6) + max(1, len(hosts) // 12)
    candidates = hosts[n_servers:max(n_servers, len(hosts) - 20)] or hosts[n_servers:]
    return candidates[: max(1, (len(hosts) - n_servers) // 4)]


def _truth_keys(events: list[dict]) -> set[tuple[str, int]]:
    return {(e["src_host"], e["ts"] // (WINDOW_S * 1000) * WINDOW_S * 1000) for e in events if e.get("_attack")}


def _phase_rates(scored: list[tuple[str, int, bool, str]], first_version: str, drift_ms: int, *,
                 alerts_truth: set[tuple[str, int]]) -> dict[str, Any]:
    """The false-alarm rate (alerted windows without attack traffic / such windows) in three phases:
    before the drift, under the drift with the first model, and with any later model."""
    phases: dict[str, list[bool]] = {"before_drift": [], "drift_old_model": [], "after_swap": []}
    for ent, start, alert, version in scored:
        if (ent, start) in alerts_truth:
            continue
        key = ("before_drift" if start < drift_ms else "drift_old_model") if version == first_version else "after_swap"
        phases[key].append(alert)
    out: dict[str, Any] = {k: (round(float(np.mean(v)), 5) if v else None) for k, v in phases.items()}
    out["windows"] = {k: len(v) for k, v in phases.items()}
    return out


def _drift_phase(cfg: StreamerConfig, runner: Any, artifact: Any, *, values_total: int, after_ev: list[dict],
                 out: TextIO) -> tuple[Any, dict[str, Any]]:
    """Run the detector in the background, the retrainer in the foreground until it publishes a
    new version, wait for the hot swap, produce the rest, and let the detector finish."""
    from streamer.replay import replay_values
    from streamer.retrain import Retrainer

    errors: list[BaseException] = []

    def run() -> None:
        try:
            runner.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    thread = threading.Thread(target=run, name="detector", daemon=True)
    thread.start()
    info: dict[str, Any] = {}
    try:
        _wait(lambda: runner.stats.records >= values_total or errors or not thread.is_alive(), 600)
        if errors:
            raise errors[0]
        # Throughput over the backlog read in one go (the waits for the retrainer are no detection time).
        info["first_pass"] = {"records": runner.stats.records, "active_seconds": runner.stats.active_seconds}
        out.write(f"      detector: {runner.stats.records} events read with model {runner.pipeline.model_version}; "
                  "starting the retrainer on the same topic (its own consumer group) ...\n")
        out.flush()
        rt_cfg = copy.deepcopy(cfg)
        retrainer = Retrainer(rt_cfg, artifact, stop_at_end=True, max_publications=1)
        t0 = time.monotonic()
        rstats = retrainer.run()
        info.update({"retrain_seconds": round(time.monotonic() - t0, 1), "drifts_detected": rstats.drifts,
                     "published": rstats.published, "rejected": rstats.rejected})
        if rstats.outcomes:
            last = rstats.outcomes[-1]
            info["gate"] = last.get("gate")
            info["retrain_reason"] = last.get("reason")
        if rstats.published:
            new = rstats.published[-1]
            out.write(f"      retrainer: drift detected, version {new} trained, validated (gate passed) and announced; "
                      "waiting for the detector to swap ...\n")
            out.flush()
            _wait(lambda: runner.pipeline.model_version == new or errors, 120)
            out.write(f"      detector: hot-swapped {artifact.version} -> {runner.pipeline.model_version} between two "
                      "batches\n")
        else:
            out.write(f"      retrainer: no new version published ({rstats.drifts} drifts detected, "
                      f"{len(rstats.rejected)} candidates rejected); the detector keeps {artifact.version}\n")
        out.write(f"      producing {len(after_ev)} more events of the new regime (with a port scan) ...\n")
        out.flush()
        replay_values(cfg, [orjson.dumps(strip_truth(e)) for e in after_ev], cfg.topics.input[0], total=len(after_ev))
        _wait(lambda: runner.stats.records >= values_total + len(after_ev) or errors or not thread.is_alive(), 600)
        runner.stop_at_end = True
        thread.join(600)
    finally:
        runner.stop()
        thread.join(60)
    if errors:
        raise errors[0]
    return runner.stats, info


def _rate(stats: Any, swap: dict[str, Any]) -> float:
    """Detector throughput: over the first backlog when there is a drift phase (the detector then
    idles while it waits for the retrainer), else over the whole run."""
    fp = swap.get("first_pass")
    if fp and fp["active_seconds"] > 0:
        return fp["records"] / fp["active_seconds"]
    return stats.events_per_s


def _wait(cond: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the demo waited {timeout_s:.0f}s in vain")
        time.sleep(0.2)


def score_alerts(alerts: list[dict], truth_windows: set[tuple[str, int]], attacks: list) -> dict[str, Any]:
    """Window-level precision and recall of alerts against the injected attacks."""
    unique = {a["alert_id"]: a for a in alerts}.values()  # at-least-once: de-duplicate by id
    keys = {(a["entity"], a["window_start_ms"]) for a in unique}
    tp = keys & truth_windows
    per_attack = {}
    for atk in attacks:
        wins = {(h, w) for h, w in truth_windows if h in atk.hosts and atk.start_ms - WINDOW_S * 1000 < w < atk.end_ms}
        per_attack[atk.kind] = {"windows": len(wins), "detected": len(wins & keys)}
    return {
        "alerts": len(keys),
        "true_positives": len(tp),
        "precision": len(tp) / len(keys) if keys else 0.0,
        "recall": len(tp) / len(truth_windows) if truth_windows else 0.0,
        "per_attack": per_attack,
    }


def _table(alerts: list[dict], truth: set[tuple[str, int]], t0_ms: int, out: TextIO) -> None:
    rows = sorted({a["alert_id"]: a for a in alerts}.values(), key=lambda a: (a["window_start_ms"], a["entity"]))
    out.write(f"\n{'window (s)':>10}  {'entity':<12} {'score':>9} {'p-value':>9}  {'truth':<6} top features\n")
    for a in rows:
        feats = ", ".join(f"{f['feature']} {f['share']:.0%}" for f in a["top_features"])
        hit = "attack" if (a["entity"], a["window_start_ms"]) in truth else "-"
        out.write(f"{(a['window_start_ms'] - t0_ms) / 1000:>10.0f}  {a['entity']:<12} {a['score']:>9.1f} "
                  f"{a['p_value']:>9.1e}  {hit:<6} {feats}\n")


def run_demo(
    cfg: StreamerConfig,
    *,
    bootstrap_given: bool,
    port: int = 9092,
    hosts: int = 60,
    train_minutes: float = 25.0,
    test_minutes: float = 10.0,
    summary_json: str | None = None,
    keep_broker: bool = False,
    seed: int = 1,
    drift_minutes: float = 12.0,
    after_minutes: float = 10.0,
    out: TextIO = sys.stdout,
) -> dict[str, Any]:
    from streamer.artifact import load_artifact_dir
    from streamer.pipeline import Pipeline
    from streamer.replay import replay_values
    from streamer.runner import Runner
    from streamer.train import train_model

    t_start = time.monotonic()
    apply_overrides(cfg, demo_overrides())
    run_id = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    apply_overrides(cfg, {
        "topics.input": [f"streamer.demo.{run_id}.events"],
        "topics.alerts": f"streamer.demo.{run_id}.alerts",
        "topics.dead_letter": f"streamer.demo.{run_id}.deadletter",
        "topics.models": f"streamer.demo.{run_id}.models",
        "kafka.group_id": f"streamer-demo-{run_id}",
        "retrain.group_id": f"streamer-demo-{run_id}-retrainer",
    })
    drift = drift_minutes > 0
    cfg.validate()
    started = False
    try:
        # 1. broker
        if not bootstrap_given:
            out.write(f"[1/6] starting the local Kafka broker on port {port} ...\n")
            out.flush()
            cfg.kafka.bootstrap_servers = start_local_broker(port)
            started = True
        else:
            out.write(f"[1/6] using the Kafka cluster at {cfg.kafka.bootstrap_servers}\n")

        # 2. data
        start_ms = 1_767_225_600_000
        cut_ms = start_ms + int(train_minutes * 60_000)
        drift_ms = cut_ms + int(test_minutes * 60_000)
        after_ms = drift_ms + int(drift_minutes * 60_000)
        end_ms = after_ms + int(after_minutes * 60_000) if drift else drift_ms
        host_names = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(hosts)]
        attacks = demo_attacks(host_names, cut_ms)
        drift_hosts = _drift_hosts(host_names)
        late_attack = Attack("port_scan", (host_names[-7],), after_ms + int(after_minutes * 30_000),
                             after_ms + int(after_minutes * 30_000) + 40_000)
        stream = generate_flows(n_hosts=hosts, duration_s=(end_ms - start_ms) / 1000, start_ms=start_ms,
                                attacks=attacks + ([late_attack] if drift else []), seed=seed)
        events = regime_shift(stream.events, drift_hosts, drift_ms, bytes_in_factor=8, duration_factor=6)
        train_ev = [e for e in events if e["ts"] < cut_ms]
        test_ev = [e for e in events if cut_ms <= e["ts"] < drift_ms]
        drift_ev = [e for e in events if drift_ms <= e["ts"] < after_ms] if drift else []
        after_ev = [e for e in events if e["ts"] >= after_ms] if drift else []
        truth = {(e["src_host"], e["ts"] // (WINDOW_S * 1000) * WINDOW_S * 1000) for e in test_ev if e.get("_attack")}
        out.write(f"[2/6] generated a synthetic flow stream: {len(train_ev)} training events (clean), "
                  f"{len(test_ev)} live events from {hosts} hosts with {len(attacks)} attacks "
                  f"({', '.join(a.kind for a in attacks)}) and {len(BAD_EVENTS)} malformed events\n")
        if drift:
            out.write(f"      then a drift: {len(drift_hosts)} workstations roll out a backup client (8x larger "
                      f"downloads, 6x longer flows) for {drift_minutes:g} minutes ({len(drift_ev)} events), and "
                      f"{after_minutes:g} more minutes of that regime with a port scan ({len(after_ev)} events)\n")
        out.flush()

        # 3. train
        out.write(f"[3/6] training on the first {train_minutes:g} minutes ...\n")
        out.flush()
        records = [Record(orjson.dumps(strip_truth(e)), "demo-train", 0, i) for i, e in enumerate(train_ev)]
        path = train_model(cfg, records, source="synthetic demo stream (streamer.synth)")
        out.write(f"      model {path}\n")

        # 4. replay
        values = [orjson.dumps(strip_truth(e)) for e in test_ev]
        step = max(1, len(values) // (len(BAD_EVENTS) + 1))
        for i, bad in enumerate(BAD_EVENTS):
            values.insert((i + 1) * step, bad)
        values += [orjson.dumps(strip_truth(e)) for e in drift_ev]
        out.write(f"[4/6] producing {len(values)} events into {cfg.topics.input[0]} ...\n")
        out.flush()
        replay_values(cfg, values, cfg.topics.input[0], total=len(values))

        # 5. detect
        out.write("[5/6] running the detector through Kafka ...\n")
        out.flush()
        artifact = load_artifact_dir(path)
        scored: list[tuple[str, int, bool, str]] = []  # entity, window start, alert, model version

        def on_step(result: Any) -> None:
            if result.scored is not None:
                scored.extend(zip(result.windows.entity.tolist(), result.windows.start_ms.tolist(),
                                  result.scored.alert.tolist(), [result.model_version] * len(result.windows)))

        runner = Runner(cfg, Pipeline(artifact, cfg.detector), stop_at_end=not drift, install_signals=False,
                        follow=drift, on_step=on_step)
        if not drift:
            stats = runner.run()
            swap: dict[str, Any] = {}
        else:
            stats, swap = _drift_phase(cfg, runner, artifact, values_total=len(values), after_ev=after_ev, out=out)

        # 6. results
        alert_records = read_topic_to_end(cfg.kafka, cfg.topics.alerts)
        alerts = [orjson.loads(r.value) for r in alert_records if r.value]
        attack_phase = [a for a in alerts if a["window_start_ms"] < drift_ms]
        quality = score_alerts(attack_phase, truth, attacks)
        _table(attack_phase, truth, cut_ms, out)
        summary = {
            "events": stats.records,
            "windows": stats.windows,
            "alerts": quality["alerts"],
            "dead_letters": stats.dead_letters,
            "precision": round(quality["precision"], 4),
            "recall": round(quality["recall"], 4),
            "per_attack": quality["per_attack"],
            "events_per_s": round(_rate(stats, swap), 1),
            "detector_seconds": round(swap["first_pass"]["active_seconds"] if swap.get("first_pass")
                                      else stats.active_seconds, 2),
            "model_version": artifact.version,
            "model_path": str(path),
            "model_versions": list(stats.model_versions),
            "alpha": cfg.detector.alpha,
            "topics": {"input": cfg.topics.input[0], "alerts": cfg.topics.alerts,
                       "dead_letter": cfg.topics.dead_letter, "models": cfg.topics.models},
            "wall_seconds": round(time.monotonic() - t_start, 1),
            "data": "synthetic (streamer.synth)",
            # one alert record as it came off the alerts topic (the strongest of the attack phase)
            "example_alert": max(attack_phase, key=lambda a: a["score"]) if attack_phase else None,
        }
        if drift:
            summary["false_alarm_rate"] = _phase_rates(scored, artifact.version, drift_ms, alerts_truth=_truth_keys(
                [e for e in events if e["ts"] >= cut_ms]))
            late_keys = {(e["src_host"], e["ts"] // (WINDOW_S * 1000) * WINDOW_S * 1000) for e in after_ev
                         if e.get("_attack")}
            late_alerts = {(a["entity"], a["window_start_ms"]) for a in alerts} & late_keys
            summary["drift"] = {
                "drift_hosts": len(drift_hosts), "drift_start_ms": drift_ms, "swap_start_ms": after_ms, **swap,
                "attack_after_swap": {"kind": late_attack.kind, "windows": len(late_keys),
                                      "detected": len(late_alerts),
                                      "model_versions": sorted({a["model_version"] for a in alerts
                                                                if (a["entity"], a["window_start_ms"]) in late_keys})},
            }
            summary["wall_seconds"] = round(time.monotonic() - t_start, 1)
        detected = ", ".join(f"{k} {v['detected']}/{v['windows']} windows" for k, v in quality["per_attack"].items())
        out.write(f"\n{stats.records} events ({stats.dead_letters} dead-lettered), {stats.windows} windows, "
                  f"{quality['alerts']} alerts; detector {_rate(stats, swap):,.0f} events/s; {detected}\n")
        if drift:
            far, d = summary["false_alarm_rate"], summary["drift"]
            fmt = lambda x: "-" if x is None else f"{x:.4f}"  # noqa: E731
            out.write(f"drift: false-alarm rate {fmt(far['before_drift'])} before, {fmt(far['drift_old_model'])} "
                      f"under the drift with the old model, {fmt(far['after_swap'])} after the swap "
                      f"(alpha {cfg.detector.alpha}); models {' -> '.join(stats.model_versions)}; "
                      f"{d['attack_after_swap']['kind']} after the swap: {d['attack_after_swap']['detected']}/"
                      f"{d['attack_after_swap']['windows']} windows\n")
        out.write(f"[6/6] precision {quality['precision']:.3f} recall {quality['recall']:.3f} "
                  f"(window level, against the injected attacks; alpha {cfg.detector.alpha})\n")
        if summary_json:
            Path(summary_json).parent.mkdir(parents=True, exist_ok=True)
            Path(summary_json).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        return summary
    finally:
        if started and not keep_broker:
            stop_local_broker(port)
