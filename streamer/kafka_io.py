"""Kafka clients for the source and the sinks: configuration, waiting for the broker, topics.

Every client gets the same pass-through librdkafka settings (``kafka.settings``: security, SASL,
SSL, ...). librdkafka's own log lines go through Python logging, not straight to stderr.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streamer.config import KafkaConfig
from streamer.errors import BrokerError
from streamer.records import Record, RecordBatch

__all__ = [
    "client_config", "consumer_config", "producer_config", "wait_for_broker", "ensure_topics", "read_topic_to_end",
    "split_messages", "consume_batch",
]

log = logging.getLogger(__name__)
_rdkafka_log = logging.getLogger("streamer.librdkafka")


def _quiet_error(err: Any) -> None:
    # Transport errors (broker down, reconnecting) are retried by librdkafka; log them, don't shout.
    _rdkafka_log.debug("librdkafka: %s", err)


def client_config(cfg: KafkaConfig) -> dict[str, Any]:
    return {"bootstrap.servers": cfg.bootstrap_servers, "logger": _rdkafka_log, "error_cb": _quiet_error,
            **cfg.settings}


def consumer_config(cfg: KafkaConfig, *, group_id: str | None = None) -> dict[str, Any]:
    """At-least-once consumer: nothing is committed or stored automatically."""
    return {
        **client_config(cfg),
        "group.id": group_id or cfg.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": cfg.auto_offset_reset,
        # Fetch in large chunks: the detector works in batches anyway.
        "fetch.min.bytes": 1,
        "queued.max.messages.kbytes": 65536,
        **cfg.settings,
    }


def producer_config(cfg: KafkaConfig) -> dict[str, Any]:
    """Idempotent, fully acknowledged producer; a few ms of linger so alerts travel in batches."""
    return {
        **client_config(cfg),
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "compression.type": "lz4",
        **cfg.settings,
    }


def wait_for_broker(cfg: KafkaConfig, *, timeout_s: float | None = None) -> AdminClient:
    """Return an admin client once the broker answers a metadata request; retry with back-off.

    Raises :class:`BrokerError` with one clear sentence when ``timeout_s`` passes.
    """
    timeout_s = cfg.connect_timeout_s if timeout_s is None else timeout_s
    admin = AdminClient(client_config(cfg))
    deadline = time.monotonic() + timeout_s
    delay = 0.5
    while True:
        try:
            admin.list_topics(timeout=min(1.0 + delay, max(0.5, deadline - time.monotonic())))
            return admin
        except KafkaException as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerError(
                    f"Kafka broker at {cfg.bootstrap_servers} unreachable after {timeout_s:.0f}s "
                    f"({exc.args[0].str() if exc.args else exc}); start it (make broker) or set "
                    "--bootstrap-servers / STREAMER_KAFKA__BOOTSTRAP_SERVERS"
                ) from None
            log.warning("Kafka broker at %s not reachable yet; retrying in %.1fs", cfg.bootstrap_servers, delay)
            time.sleep(min(delay, left))
            delay = min(delay * 2, 10.0)


def ensure_topics(admin: AdminClient, topics: list[str], *, partitions: int = 3, timeout_s: float = 30.0,
                  config: dict[str, str] | None = None) -> None:
    """Create the topics that do not exist yet (replication 1 suits the local broker; on a real
    cluster create topics with your own policy beforehand and this does nothing). ``config``: topic
    settings of the created topics (e.g. ``{"cleanup.policy": "compact"}``)."""
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [t for t in dict.fromkeys(topics) if t not in existing]
    if not missing:
        return
    futures = admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1, config=dict(config or {}))
                                   for t in missing])
    for topic, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
            log.info("created topic %s (%d partitions)", topic, partitions)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise BrokerError(f"cannot create topic {topic}: {exc}") from None
    # Metadata propagates asynchronously; wait until every topic is visible.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(t in admin.list_topics(timeout=timeout_s).topics for t in missing):
            return
        time.sleep(0.2)


def consume_batch(consumer: Consumer, batch_size: int, timeout_s: float) -> list[Any]:
    """Wait up to ``timeout_s`` for the first message, then take, without waiting, whatever else is
    already fetched (up to ``batch_size`` in all). Under load batches come out full; under a light
    load they come out small and at once, instead of waiting for a batch that is not coming."""
    first = consumer.consume(1, timeout=timeout_s)
    if not first or batch_size <= 1:
        return first
    return first + consumer.consume(batch_size - 1, timeout=0)


def split_messages(msgs: list[Any]) -> tuple[RecordBatch, set[tuple[str, int]]]:
    """Triage a ``consume()`` result: the good messages as a :class:`RecordBatch`, in order, and the
    partitions that reported their end. A fatal client error raises :class:`BrokerError`; others are
    logged (librdkafka retries them itself). One pass per column, no object per message."""
    ended: set[tuple[str, int]] = set()
    errors = [m.error() for m in msgs]
    if any(e is not None for e in errors):
        good = []
        for m, err in zip(msgs, errors):
            if err is None:
                good.append(m)
            elif err.code() == KafkaError._PARTITION_EOF:
                ended.add((m.topic(), m.partition()))
            elif err.fatal():
                raise BrokerError(f"fatal consumer error: {err}")
            else:
                log.warning("consumer error: %s", err)
        msgs = good
    n = len(msgs)
    stamps = np.array([m.timestamp() for m in msgs], dtype=np.int64).reshape(n, 2)
    headers = [m.headers() for m in msgs]
    batch = RecordBatch(
        [m.value() for m in msgs],
        np.array([m.topic() for m in msgs], dtype=object).reshape(n),
        np.fromiter((m.partition() for m in msgs), np.int64, n),
        np.fromiter((m.offset() for m in msgs), np.int64, n),
        np.where(stamps[:, 0] != 0, stamps[:, 1], -1),  # type 0: the message has no timestamp
        {i: tuple(h) for i, h in enumerate(headers) if h},
    )
    return batch, ended


def read_topic_to_end(cfg: KafkaConfig, topic: str, *, timeout_s: float = 60.0) -> list[Record]:
    """Every record currently in ``topic``, read with a throw-away consumer group (no commits)."""
    from confluent_kafka import TopicPartition

    admin = wait_for_broker(cfg)
    meta = admin.list_topics(topic, timeout=10)
    if topic not in meta.topics or meta.topics[topic].error is not None:
        raise BrokerError(f"topic {topic!r} does not exist on {cfg.bootstrap_servers}")
    consumer = Consumer(consumer_config(cfg, group_id=f"streamer-reader-{time.time_ns()}"))
    try:
        parts = [TopicPartition(topic, p) for p in meta.topics[topic].partitions]
        ends, pos = {}, {}
        for tp in parts:
            lo, hi = consumer.get_watermark_offsets(tp, timeout=10)
            ends[tp.partition], pos[tp.partition] = hi, lo - 1
            tp.offset = lo
        consumer.assign(parts)
        out: list[Record] = []
        deadline = time.monotonic() + timeout_s
        while any(pos[p] + 1 < ends[p] for p in ends):
            if time.monotonic() > deadline:
                raise BrokerError(f"timed out reading topic {topic!r} to its end")
            batch, _ = split_messages(consumer.consume(10_000, timeout=1.0))
            out.extend(batch)
            for (_, part), nxt in batch.next_offsets().items():
                pos[part] = nxt - 1
        return out
    finally:
        consumer.close()
