"""Produce a JSONL or CSV dataset into a topic, optionally at a fixed rate, with a progress bar.

Each event is keyed by its entity field when it has one, so all events of an entity land in one
partition in order (the detector keeps windows per entity per partition).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson
from confluent_kafka import Producer

from streamer.config import StreamerConfig
from streamer.errors import BrokerError
from streamer.kafka_io import ensure_topics, producer_config, wait_for_broker
from streamer.progress import Progress
from streamer.sources import iter_file_values

__all__ = ["replay_values", "replay_file", "ReplayStats"]

log = logging.getLogger(__name__)


@dataclass
class ReplayStats:
    produced: int = 0
    failed: int = 0
    seconds: float = 0.0


def _entity_key(value: bytes, field: str) -> bytes | None:
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None  # a bad line is replayed as is: the detector dead-letters it
    if isinstance(doc, dict):
        ent = doc.get(field)
        if isinstance(ent, (str, int)) and not isinstance(ent, bool):
            return str(ent).encode("utf-8")
    return None


def replay_values(
    cfg: StreamerConfig,
    values: Iterable[bytes],
    topic: str,
    *,
    rate: float | None = None,
    total: int | None = None,
    show_progress: bool = True,
) -> ReplayStats:
    """Produce ``values`` to ``topic`` at most ``rate`` per second; wait for every acknowledgement."""
    admin = wait_for_broker(cfg.kafka)
    ensure_topics(admin, [topic])
    stats = ReplayStats()
    failures: list[str] = []

    def on_delivery(err, msg):  # noqa: ANN001 - librdkafka callback
        if err is not None:
            failures.append(str(err))

    producer = Producer({**producer_config(cfg.kafka), "on_delivery": on_delivery, "linger.ms": 20})
    bar = Progress(f"replay -> {topic}", total, unit="events", enabled=show_progress)
    field = cfg.schema.entity_field
    start = time.monotonic()
    try:
        for i, value in enumerate(values):
            if rate:
                ahead = start + i / rate - time.monotonic()
                if ahead > 0:
                    producer.poll(0)
                    time.sleep(ahead)
            while True:
                try:
                    producer.produce(topic, value=value, key=_entity_key(value, field))
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
            stats.produced += 1
            bar.update()
    finally:
        left = producer.flush(60)
        bar.close()
    stats.seconds = time.monotonic() - start
    stats.failed = len(failures) + left
    if stats.failed:
        raise BrokerError(f"{stats.failed} of {stats.produced} events were not acknowledged: {failures[:3]}")
    log.info("replayed %d events into %s in %.1fs", stats.produced, topic, stats.seconds)
    return stats


def replay_file(cfg: StreamerConfig, path: str | Path, topic: str, *, rate: float | None = None,
                show_progress: bool = True) -> ReplayStats:
    p = Path(path)
    total = sum(1 for _ in iter_file_values(p)) if show_progress else None
    return replay_values(cfg, iter_file_values(p), topic, rate=rate, total=total, show_progress=show_progress)
