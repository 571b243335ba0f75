"""The Kafka detector loop: it only wires source, pipeline and sinks.

Delivery is at-least-once. For each batch:

1. consume up to ``kafka.batch_size`` messages;
2. run them through the pipeline (decode, window, score, alert);
3. produce the alerts and dead letters, then flush the producer: every record of the batch is
   acknowledged by the broker (a delivery failure stops the detector before anything is committed);
4. commit, per partition, the next offset to read, but never past the oldest event an open window
   still holds (a restart re-reads those events and rebuilds the same windows). This commit is
   asynchronous (the loop does not wait a broker round trip; a failed one is retried with the
   next batch); on partition revoke and on close it is synchronous.

On partition revoke the state of those partitions is dropped (their new owner rebuilds it from the
committed offsets). SIGTERM/SIGINT finish the current batch, flush, commit and close.

Hot swap: with ``model.follow`` the runner also follows the announcements on ``topics.models``
(:class:`streamer.modelstore.ModelFollower`: a plain consumer assigned to that topic from its
beginning, apart from the consumer group). Between two batches, a newly announced version is loaded
and verified (signature, checksums, same schema and window) and swapped in
(:meth:`Pipeline.swap_model`); windows closed after that carry the new ``model_version``. A version
that fails any check is refused with one log line and the current model keeps running.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from streamer.alert import dead_letter_value, score_values
from streamer.config import StreamerConfig
from streamer.errors import BrokerError, StreamerError
from streamer.kafka_io import (
    consume_batch, consumer_config, ensure_topics, producer_config, split_messages, wait_for_broker,
)
from streamer.pipeline import Pipeline, StepResult
from streamer.records import RecordBatch

__all__ = ["Runner", "RunStats"]

log = logging.getLogger(__name__)

# How often the loop logs its counters, in seconds.
STATS_EVERY_S = 10.0
# Longest wait for the broker to acknowledge a batch's alerts before the detector gives up.
FLUSH_TIMEOUT_S = 60.0


_NO_RECORDS = RecordBatch.from_records([])


def _settle_heap(*, release: bool = False) -> None:
    """Move the objects alive now (the model, TensorFlow's and Keras' own: hundreds of thousands)
    out of the garbage collector's sight. A full collection would otherwise walk them all, a stall
    of ~0.2 s every few seconds under load, the p99 latency. ``release``: after a model swap, let
    the collector see everything once so that the old model's cycles are freed, then settle again."""
    if release:
        gc.unfreeze()
        gc.collect()
    gc.freeze()


@dataclass
class RunStats:
    records: int = 0
    events: int = 0
    windows: int = 0
    alerts: int = 0
    dead_letters: int = 0
    batches: int = 0
    commits: int = 0
    seconds: float = 0.0
    # From the first record read to the last batch acknowledged: the time spent detecting, without
    # the group join before the first message or the idle wait after the last.
    active_seconds: float = 0.0
    model_versions: list[str] = field(default_factory=list)
    swaps: int = 0  # models hot-swapped in
    refused: int = 0  # announcements refused (bad signature, missing or corrupted artifact, other windows)

    @property
    def events_per_s(self) -> float:
        return self.records / self.active_seconds if self.active_seconds > 0 else 0.0


class Runner:
    """Runs a :class:`Pipeline` on Kafka topics until stopped (or, with ``stop_at_end``, until it
    has read every message that was in its partitions)."""

    def __init__(
        self,
        cfg: StreamerConfig,
        pipeline: Pipeline,
        *,
        stop_at_end: bool = False,
        idle_flush_s: float = 0.0,
        on_step: Callable[[StepResult], None] | None = None,
        install_signals: bool = True,
        follow: bool | None = None,
    ) -> None:
        self.cfg = cfg
        self.pipeline = pipeline
        self.stop_at_end = stop_at_end
        self.idle_flush_s = idle_flush_s
        self.on_step = on_step
        self.install_signals = install_signals
        # Follow model announcements: the config's choice unless told; never with a pinned version.
        self.follow = (cfg.model.follow and not cfg.model.version) if follow is None else follow
        self._follower: Any = None
        self._refused: set[bytes] = set()  # announcements refused (the same one is not tried again)
        self.stats = RunStats()
        self._stop = threading.Event()
        self._next: dict[tuple[str, int], int] = {}  # next offset to read, per owned partition
        self._committed: dict[tuple[str, int], int] = {}
        self._delivery_errors: list[str] = []
        self._consumer: Consumer | None = None
        self._first_record_t: float | None = None
        self._producer: Producer | None = None

    def stop(self) -> None:
        """Ask the loop to finish its batch and close (thread- and signal-safe)."""
        self._stop.set()

    # -- Kafka callbacks ------------------------------------------------------------------------
    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._delivery_errors.append(f"{msg.topic()}: {err}")

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Batches are produced and acknowledged before the next consume(), so everything read so far
        # is safe to commit; then this consumer forgets the state of the partitions it loses.
        log.info("revoked %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))
        self._commit(consumer)
        lost = {(p.topic, p.partition) for p in partitions}
        self.pipeline.drop_partitions(lost)
        for p in lost:
            self._next.pop(p, None)
            self._committed.pop(p, None)

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> RunStats:
        cfg = self.cfg
        admin = wait_for_broker(cfg.kafka)
        ensure_topics(admin, [cfg.topics.alerts, cfg.topics.dead_letter] + ([cfg.topics.scores] if cfg.topics.scores else []))
        previous = self._signals()
        consumer = Consumer({**consumer_config(cfg.kafka), "on_commit": self._on_commit})
        producer = Producer({**producer_config(cfg.kafka), "on_delivery": self._on_delivery})
        self._consumer, self._producer = consumer, producer
        consumer.subscribe(cfg.topics.input, on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_revoke)
        _settle_heap()
        start = time.monotonic()
        last_msg = last_stats = start
        try:
            if self.follow:
                self._start_following()
            while not self._stop.is_set():
                if self._follower is not None:
                    self._consider(self._follower.poll())  # between two batches
                records, _ = split_messages(consume_batch(consumer, cfg.kafka.batch_size, cfg.kafka.batch_timeout_s))
                now = time.monotonic()
                if records:
                    if self._first_record_t is None:
                        self._first_record_t = now
                    last_msg = now
                    self._step(self.pipeline.process(records), records)
                elif self.idle_flush_s and now - last_msg > self.idle_flush_s and self.pipeline.windower.n_entities:
                    log.info("no input for %.0fs: closing open windows", now - last_msg)
                    self._step(self.pipeline.flush(), _NO_RECORDS)
                if self.stop_at_end and not records and self._at_end(consumer):
                    self._step(self.pipeline.flush(), _NO_RECORDS)
                    break
                if now - last_stats > STATS_EVERY_S:
                    last_stats = now
                    self._log_stats(now - start)
        finally:
            self.stats.seconds = time.monotonic() - start
            try:
                producer.flush(FLUSH_TIMEOUT_S)
                if not self._delivery_errors:
                    self._commit(consumer)
            finally:
                consumer.close()
                if self._follower is not None:
                    self._follower.close()
                self._restore_signals(previous)
        self._log_stats(self.stats.seconds)
        return self.stats

    def _step(self, result: StepResult, records: RecordBatch) -> None:
        """Produce a batch's output, wait for its acknowledgement, then move the commit point."""
        producer = self._producer
        assert producer is not None and self._consumer is not None
        topics = self.cfg.topics
        for a in result.alerts:
            self._produce(producer, topics.alerts, a["entity"].encode("utf-8"), orjson.dumps(a))
        if topics.scores and result.scored is not None:
            for key, value in score_values(result.windows, result.scored, model_version=result.model_version):
                self._produce(producer, topics.scores, key, value)
        for d in result.dead:
            key = f"{d.record.topic}:{d.record.partition}:{d.record.offset}".encode()
            self._produce(producer, topics.dead_letter, key, dead_letter_value(d),
                          headers=[("streamer-reason", d.reason.encode())])
        remaining = producer.flush(FLUSH_TIMEOUT_S)
        if remaining or self._delivery_errors:
            raise BrokerError(
                f"alerts not acknowledged by the broker ({remaining} pending; "
                f"{'; '.join(self._delivery_errors[:3]) or 'timeout'}): stopping without committing this batch"
            )
        self._next.update(records.next_offsets())
        s = self.stats
        if self._first_record_t is not None:
            s.active_seconds = time.monotonic() - self._first_record_t
        s.records += len(records)
        s.events += result.n_events
        s.windows += len(result.windows)
        s.alerts += len(result.alerts)
        s.dead_letters += len(result.dead)
        s.batches += 1
        if not s.model_versions or s.model_versions[-1] != result.model_version:
            if len(result.windows):
                s.model_versions.append(result.model_version)
        self._commit(self._consumer, asynchronous=True)
        if self.on_step is not None:
            self.on_step(result)

    def _start_following(self) -> None:
        from streamer.modelstore import ModelFollower

        try:
            self._follower = ModelFollower(self.cfg)
            latest = self._follower.catch_up()
        except StreamerError as exc:
            if self._follower is not None:
                self._follower.close()
                self._follower = None
            log.error("cannot follow model announcements on %s (%s): running %s without hot swap",
                      self.cfg.topics.models, exc, self.pipeline.model_version)
            return
        self._consider(latest)

    def _consider(self, ann: Any) -> None:
        """Adopt an announced model version, or refuse it with one log line (keeping the current)."""
        if ann is None:
            return
        current = self.pipeline.model_version
        key = ann.to_bytes()
        if ann.version == current or key in self._refused:
            return
        from streamer.modelstore import resolve_artifact

        try:
            model = resolve_artifact(self.cfg, ann)
            readmitted = self.pipeline.swap_model(model)
        except Exception as exc:  # noqa: BLE001 - whatever is wrong with it, the running model stays
            self._refused.add(key)
            self.stats.refused += 1
            log.error("model announcement %s refused, keeping %s: %s", ann.describe(), current, exc)
            return
        self.stats.swaps += 1
        _settle_heap(release=True)
        log.info("model swapped %s -> %s (%s; %d recent normal windows re-admitted; held-out false-alarm rate %s)",
                 current, model.version, ann.action, readmitted, ann.validation.get("false_alarm_rate_heldout"))

    def _produce(self, producer: Producer, topic: str, key: bytes, value: bytes, headers: Any = None) -> None:
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers)
                break
            except BufferError:
                producer.poll(0.05)  # local queue full: let deliveries drain, then retry
        producer.poll(0)

    def _on_commit(self, err: Any, partitions: list[TopicPartition]) -> None:
        # An asynchronous commit that failed: forget it, so that the next batch commits again.
        failed = [p for p in partitions or [] if err is not None or p.error is not None]
        for p in failed:
            self._committed.pop((p.topic, p.partition), None)
        if failed:
            log.warning("offset commit failed (%s); retried with the next batch", err or failed[0].error)

    def _commit(self, consumer: Consumer, *, asynchronous: bool = False) -> None:
        """Commit the next offsets (held back to the oldest event an open window holds). Between
        batches the commit is asynchronous: the batch's output is already acknowledged, so a lost
        commit only means re-reading (at-least-once); on revoke and on close it is synchronous."""
        held = self.pipeline.held_offsets()
        offsets = []
        for p, nxt in self._next.items():
            target = min(nxt, held.get(p, nxt))
            if self._committed.get(p) != target:
                offsets.append(TopicPartition(p[0], p[1], target))
        if not offsets:
            return
        consumer.commit(offsets=offsets, asynchronous=asynchronous)
        for tp in offsets:
            self._committed[(tp.topic, tp.partition)] = tp.offset
        self.stats.commits += 1

    def _at_end(self, consumer: Consumer) -> bool:
        """True when every assigned partition has been read up to its current end."""
        assigned = consumer.assignment()
        if not assigned:
            return False
        for tp in assigned:
            _, hi = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
            if self._next.get((tp.topic, tp.partition), self._committed_offset(consumer, tp)) < hi:
                return False
        return True

    def _committed_offset(self, consumer: Consumer, tp: TopicPartition) -> int:
        got = consumer.committed([TopicPartition(tp.topic, tp.partition)], timeout=10)[0].offset
        if got >= 0:
            return got
        lo, _ = consumer.get_watermark_offsets(tp, timeout=10)
        return lo

    def _log_stats(self, elapsed: float) -> None:
        s = self.stats
        log.info(
            "%d records (%.0f/s), %d windows, %d alerts, %d dead letters, %d entities open, model %s",
            s.records, s.records / max(elapsed, 1e-9), s.windows, s.alerts, s.dead_letters,
            self.pipeline.windower.n_entities, self.pipeline.model_version,
        )

    def _signals(self) -> dict[int, Any]:
        if not self.install_signals or threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: self.stop())
        return previous

    def _restore_signals(self, previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
