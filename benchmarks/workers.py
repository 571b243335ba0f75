"""Benchmark contenders, each run in its own process by :class:`benchlib.Worker`.

``python benchmarks/workers.py KIND SPEC.json OUT.json`` with KIND one of:

* ``ceiling``: a confluent-kafka consumer that only decodes each message with orjson and commits
  offsets per batch (asynchronously, per partition, like the detector): what Python + Kafka allow;
* ``streamer``: the detector exactly as ``streamer run`` runs it (:class:`streamer.runner.Runner`
  with the model's schema and window; alerts produced and acknowledged before each commit);
* ``river-hst``: the same consumer and the same decode (:class:`streamer.decode.Decoder`) feeding
  River ``HalfSpaceTrees`` (River's defaults, limits from the training slice), ``score_one`` then
  ``learn_one`` per event, alerts produced, acknowledged and committed the same way.

Each writes OUT.json with the figures of its measured loop: events, seconds (first message to
last commit), CPU seconds of the process over the loop (getrusage: all threads, librdkafka's too)
and peak RSS. Only ``streamer`` imports TensorFlow.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import benchlib  # noqa: F401 - puts the project root on sys.path, quiets TensorFlow
from benchlib import proc_rss_mb, self_cpu_s, self_peak_rss_mb


def _kafka_cfg(spec: dict[str, Any]) -> Any:
    from streamer.config import KafkaConfig

    return KafkaConfig(bootstrap_servers=spec["bootstrap"], group_id=spec["group"],
                       batch_size=spec.get("batch_size", 2000), batch_timeout_s=spec.get("batch_timeout_s", 0.2))


def _ready(spec: dict[str, Any]) -> None:
    Path(spec["ready_file"]).write_text("ready")


def _commit(consumer: Any, nxt: dict[tuple[str, int], int]) -> None:
    from confluent_kafka import TopicPartition

    # Asynchronous, as the detector commits between batches (its output is acknowledged first).
    consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in nxt.items()], asynchronous=True)


class _MeasuredLoop:
    """The consume loop that the ceiling and river-hst share: non-empty ``consume()`` results until
    ``done()`` reaches the spec's expected events (or its timeout), timed from the first message
    and in CPU seconds of the process over the loop."""

    def __init__(self, consumer: Any, kcfg: Any, spec: dict[str, Any]) -> None:
        self.consumer, self.kcfg, self.spec = consumer, kcfg, spec
        self.first: float | None = None
        self.end = self.cpu = 0.0

    def batches(self, done: Callable[[], int]) -> Iterator[list[Any]]:
        cpu0 = self_cpu_s()
        _ready(self.spec)
        deadline = time.monotonic() + self.spec.get("timeout_s", 3600)
        while done() < self.spec["expected"] and time.monotonic() < deadline:
            msgs = self.consumer.consume(self.kcfg.batch_size, timeout=self.kcfg.batch_timeout_s)
            if not msgs:
                continue
            if self.first is None:
                self.first = time.monotonic()
            yield msgs
        self.end = time.monotonic()
        self.cpu = self_cpu_s() - cpu0
        self.consumer.close()

    def figures(self, events: int) -> dict[str, Any]:
        return {"events": events, "seconds": self.end - (self.first or self.end), "cpu_s": self.cpu,
                "peak_rss_mb": self_peak_rss_mb()}


# --------------------------------------------------------------------------------------- ceiling
def ceiling(spec: dict[str, Any]) -> dict[str, Any]:
    import orjson
    from confluent_kafka import Consumer, KafkaError

    from streamer.kafka_io import consumer_config

    kcfg = _kafka_cfg(spec)
    consumer = Consumer(consumer_config(kcfg))  # the detector's own consumer settings
    consumer.subscribe([spec["topic"]])
    loads = orjson.loads
    n = 0
    loop = _MeasuredLoop(consumer, kcfg, spec)
    for msgs in loop.batches(lambda: n):
        nxt: dict[tuple[str, int], int] = {}
        for m in msgs:
            err = m.error()
            if err is None:
                loads(m.value())
                nxt[(m.topic(), m.partition())] = m.offset() + 1
                n += 1
            elif err.code() != KafkaError._PARTITION_EOF:
                raise RuntimeError(str(err))
        if nxt:
            _commit(consumer, nxt)
    return loop.figures(n)


# -------------------------------------------------------------------------------------- streamer
class _Sampler(threading.Thread):
    """Every ``every_s``: time, records done, windows, RSS, open entities (for the soak)."""

    def __init__(self, runner: Any, every_s: float) -> None:
        super().__init__(daemon=True)
        self.runner, self.every_s = runner, every_s
        self.samples: list[dict[str, float]] = []
        self.halt = threading.Event()
        self.t0 = time.monotonic()

    def sample(self) -> None:
        r = self.runner
        w = r.pipeline.windower
        self.samples.append({
            "t": round(time.monotonic() - self.t0, 3), "records": r.stats.records, "windows": r.stats.windows,
            "alerts": r.stats.alerts, "rss_mb": round(proc_rss_mb(), 1), "entities": w.n_entities,
            "cpu_s": round(self_cpu_s(), 3),
        })

    def run(self) -> None:
        while not self.halt.wait(self.every_s):
            self.sample()


def warm_up(embedder: Any) -> float:
    """Trace the compiled inference call for every padded batch size it will see (64 .. 8192), as a
    long-running detector has long done; the clock of the benchmark starts after this."""
    import numpy as np

    from streamer.embed import MAX_INFER_BATCH, MIN_INFER_BATCH

    t0 = time.monotonic()
    n = MIN_INFER_BATCH
    while n <= MAX_INFER_BATCH:
        embedder.embed(np.zeros((n, embedder.n_inputs), np.float32))
        n *= 2
    return time.monotonic() - t0


def streamer(spec: dict[str, Any]) -> dict[str, Any]:
    from streamer.artifact import load_artifact_dir
    from streamer.config import StreamerConfig, apply_overrides
    from streamer.pipeline import Pipeline
    from streamer.runner import Runner

    model = load_artifact_dir(spec["model_path"])
    cfg = StreamerConfig()
    apply_overrides(cfg, {
        "kafka.bootstrap_servers": spec["bootstrap"], "kafka.group_id": spec["group"],
        "topics.input": [spec["topic"]], "topics.alerts": spec["alerts_topic"],
        "topics.dead_letter": spec["dlq_topic"], **spec.get("overrides", {}),
    })
    # As `streamer run`: the model decides the schema and the window.
    cfg.schema, cfg.window = model.config.schema, model.config.window
    if spec.get("window_overrides"):
        apply_overrides(cfg, spec["window_overrides"])  # e.g. idle_timeout_s / max_entities for the soak
    cfg.validate()
    pipeline = Pipeline(model, cfg.detector)
    warm_s = warm_up(model.embedder) if spec.get("warmup", True) else 0.0
    runner = Runner(cfg, pipeline, stop_at_end=spec.get("until_end", True), install_signals=True)
    # Instrumentation only: time spent in the end-of-input check (a broker round trip per partition
    # each time a poll comes back empty) is counted apart, so that "seconds" is the processing time.
    at_end = {"s": 0.0}
    check = runner._at_end

    def timed_check(consumer: Any) -> bool:
        t = time.monotonic()
        try:
            return check(consumer)
        finally:
            if runner._first_record_t is not None:
                at_end["s"] += time.monotonic() - t

    runner._at_end = timed_check  # type: ignore[method-assign]
    sampler = _Sampler(runner, spec["sample_s"]) if spec.get("sample_s") else None
    cpu0 = self_cpu_s()
    rss_before = proc_rss_mb()
    if sampler:
        sampler.start()
    _ready(spec)
    if spec.get("profile"):
        import cProfile

        prof = cProfile.Profile()
        stats = prof.runcall(runner.run)
        prof.dump_stats(spec["profile"])
    else:
        stats = runner.run()
    cpu = self_cpu_s() - cpu0
    if sampler:
        sampler.halt.set()
        sampler.sample()
    w = pipeline.windower
    return {
        "events": stats.records, "seconds": stats.active_seconds - at_end["s"], "cpu_s": cpu,
        "active_seconds_as_reported": stats.active_seconds, "end_of_input_checks_s": at_end["s"], "peak_rss_mb": self_peak_rss_mb(),
        "windows": stats.windows, "alerts": stats.alerts, "dead_letters": stats.dead_letters,
        "batches": stats.batches, "commits": stats.commits, "warmup_s": warm_s, "rss_before_loop_mb": rss_before,
        "window": cfg.window.kind, "model_version": model.version, "threshold": pipeline.detector.calibrator.threshold,
        "reservoir_size": cfg.detector.reservoir_size, "open_entities_at_end": w.n_entities,
        "unwindowed_events": getattr(w, "unwindowed", None),
        "samples": sampler.samples if sampler else [],
    }


# ------------------------------------------------------------------------------------- river-hst
def river_hst(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import orjson
    from confluent_kafka import Consumer, Producer
    from river.anomaly import HalfSpaceTrees

    from streamer.config import SchemaConfig
    from streamer.decode import Decoder
    from streamer.kafka_io import consumer_config, producer_config, split_messages

    kcfg = _kafka_cfg(spec)
    decoder = Decoder(SchemaConfig(**spec["schema"]))
    names = decoder.feature_names
    x_train = np.load(spec["train_features"], allow_pickle=False)
    # Features scaled to [0, 1] by HST itself from these limits (as in streamer.peers).
    lo, hi = x_train.min(axis=0), x_train.max(axis=0)
    hi = np.where(hi > lo, hi, lo + 1.0)
    hst = HalfSpaceTrees(limits={n: (float(a), float(b)) for n, a, b in zip(names, lo, hi)}, seed=7)
    # Threshold: the 1-alpha quantile of its own online scores over the training slice (the first
    # window_size scores are 0 while HST fills its first reference window: left out).
    scores = []
    for row in x_train.tolist():
        d = dict(zip(names, row))
        scores.append(hst.score_one(d))
        hst.learn_one(d)
    threshold = float(np.quantile(scores[hst.window_size:], 1.0 - spec["alpha"]))

    consumer = Consumer(consumer_config(kcfg))
    errors: list[str] = []
    producer = Producer({**producer_config(kcfg), "on_delivery": lambda e, m: errors.append(str(e)) if e else None})
    consumer.subscribe([spec["topic"]])
    limit = spec["expected"]
    n = alerts = dead = 0
    loop = _MeasuredLoop(consumer, kcfg, spec)
    for msgs in loop.batches(lambda: n):
        records, _ = split_messages(msgs)  # the detector's own triage of a consume() result
        records = records[: limit - n]  # exactly ``limit`` events (the rest stays uncommitted)
        events, bad, _ = decoder.decode(records)
        dead += len(bad)
        for ent, t, part, off, row in zip(events.entity.tolist(), events.time_ms.tolist(),
                                          events.partition.tolist(), events.offset.tolist(), events.x.tolist()):
            d = dict(zip(names, row))
            s = hst.score_one(d)
            hst.learn_one(d)
            if s > threshold:
                alerts += 1
                producer.produce(spec["alerts_topic"], key=ent.encode(), value=orjson.dumps({
                    "schema": "bench.river-hst-alert/1", "entity": ent, "ts": t, "score": s,
                    "threshold": threshold, "source": {"topic": spec["topic"], "partition": part, "offset": off},
                }))
                producer.poll(0)
        # As the detector: the batch's alerts acknowledged, then the offsets committed.
        if producer.flush(60) or errors:
            raise RuntimeError(f"alerts not acknowledged: {errors[:3]}")
        nxt = records.next_offsets()
        if nxt:
            _commit(consumer, nxt)
        n += len(records)
    return {**loop.figures(n), "alerts": alerts, "dead_letters": dead, "threshold": threshold, "train_rows": len(x_train)}


KINDS = {"ceiling": ceiling, "streamer": streamer, "river-hst": river_hst}

if __name__ == "__main__":
    kind, spec_path, out_path = sys.argv[1:4]
    spec = json.loads(Path(spec_path).read_text())
    import logging

    logging.basicConfig(level=spec.get("log_level", "WARNING"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = KINDS[kind](spec)
    Path(out_path).write_text(json.dumps(result))
