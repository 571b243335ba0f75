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
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import orjson

from streamer.config import StreamerConfig, apply_overrides
from streamer.kafka_io import read_topic_to_end
from streamer.localbroker import start_local_broker, stop_local_broker
from streamer.records import Record
from streamer.synth import DEMO_SCHEMA, demo_attacks, generate_flows, strip_truth

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
    })
    return ov


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
                  f"{a['p_value']:>9.5f}  {hit:<6} {feats}\n")


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
        "kafka.group_id": f"streamer-demo-{run_id}",
    })
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
        host_names = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(hosts)]
        attacks = demo_attacks(host_names, cut_ms)
        stream = generate_flows(n_hosts=hosts, duration_s=(train_minutes + test_minutes) * 60, start_ms=start_ms,
                                attacks=attacks, seed=seed)
        train_ev = [e for e in stream.events if e["ts"] < cut_ms]
        test_ev = [e for e in stream.events if e["ts"] >= cut_ms]
        truth = {(e["src_host"], e["ts"] // (WINDOW_S * 1000) * WINDOW_S * 1000) for e in test_ev if e.get("_attack")}
        out.write(f"[2/6] generated a synthetic flow stream: {len(train_ev)} training events (clean), "
                  f"{len(test_ev)} live events from {hosts} hosts with {len(attacks)} attacks "
                  f"({', '.join(a.kind for a in attacks)}) and {len(BAD_EVENTS)} malformed events\n")
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
        out.write(f"[4/6] producing {len(values)} events into {cfg.topics.input[0]} ...\n")
        out.flush()
        replay_values(cfg, values, cfg.topics.input[0], total=len(values))

        # 5. detect
        out.write("[5/6] running the detector through Kafka ...\n")
        out.flush()
        artifact = load_artifact_dir(path)
        runner = Runner(cfg, Pipeline(artifact, cfg.detector), stop_at_end=True, install_signals=False)
        stats = runner.run()

        # 6. results
        alert_records = read_topic_to_end(cfg.kafka, cfg.topics.alerts)
        alerts = [orjson.loads(r.value) for r in alert_records if r.value]
        quality = score_alerts(alerts, truth, attacks)
        _table(alerts, truth, cut_ms, out)
        summary = {
            "events": stats.records,
            "windows": stats.windows,
            "alerts": quality["alerts"],
            "dead_letters": stats.dead_letters,
            "precision": round(quality["precision"], 4),
            "recall": round(quality["recall"], 4),
            "per_attack": quality["per_attack"],
            "events_per_s": round(stats.events_per_s, 1),
            "detector_seconds": round(stats.active_seconds, 2),
            "model_version": artifact.version,
            "model_path": str(path),
            "alpha": cfg.detector.alpha,
            "topics": {"input": cfg.topics.input[0], "alerts": cfg.topics.alerts,
                       "dead_letter": cfg.topics.dead_letter},
            "wall_seconds": round(time.monotonic() - t_start, 1),
            "data": "synthetic (streamer.synth)",
        }
        detected = ", ".join(f"{k} {v['detected']}/{v['windows']} windows" for k, v in quality["per_attack"].items())
        out.write(f"\n{stats.records} events ({stats.dead_letters} dead-lettered), {stats.windows} windows, "
                  f"{quality['alerts']} alerts; detector {stats.events_per_s:,.0f} events/s; {detected}\n")
        out.write(f"[6/6] precision {quality['precision']:.3f} recall {quality['recall']:.3f} "
                  f"(window level, against the injected attacks; alpha {cfg.detector.alpha})\n")
        if summary_json:
            Path(summary_json).parent.mkdir(parents=True, exist_ok=True)
            Path(summary_json).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        return summary
    finally:
        if started and not keep_broker:
            stop_local_broker(port)
