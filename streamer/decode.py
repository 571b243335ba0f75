"""Decode raw JSON records into a columnar :class:`EventBatch`, and bad records into dead letters.

This is the one stage with a per-event Python loop (parsing JSON is per message); everything after
it works on arrays. Every bad record gets a reason code and a sentence; nothing non-finite passes.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone

import numpy as np
import orjson

from streamer.config import SchemaConfig
from streamer.records import DeadLetter, EventBatch, Record

__all__ = ["Decoder", "category_bucket"]

# Content encodings that mean "the value is the JSON itself".
_PLAIN_ENCODINGS = {b"", b"identity", b"utf-8", b"utf8", b"json", b"application/json"}
# Event times beyond this many ms from the epoch (~285,000 years) are nonsense, and would overflow
# the int64 time column and the window arithmetic.
_MAX_ABS_TIME_MS = 2**53


def category_bucket(value: str, buckets: int) -> int:
    """Stable bucket of a categorical value (CRC-32: the same in every process and version)."""
    return zlib.crc32(value.encode("utf-8")) % buckets


class Decoder:
    """Turns records into features following a :class:`SchemaConfig`.

    Features are the numeric fields in order, then ``hash_buckets`` one-hot columns per
    categorical field.
    """

    def __init__(self, schema: SchemaConfig) -> None:
        self.schema = schema
        names = list(schema.numeric_fields)
        for cat in schema.categorical_fields:
            names += [f"{cat}#{b}" for b in range(schema.hash_buckets)]
        self.feature_names: list[str] = names
        self._time_scale = 1000.0 if schema.time_unit == "s" else 1.0

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def decode(self, records: Sequence[Record]) -> tuple[EventBatch, list[DeadLetter], np.ndarray]:
        """Decode a batch.

        Returns the good events (in input order), the dead letters, and for each good event the
        index of its record in ``records``.
        """
        schema = self.schema
        n_num = len(schema.numeric_fields)
        n_feat = self.n_features
        x = np.zeros((len(records), n_feat), dtype=np.float64)
        entity: list[str] = []
        time_ms: list[int] = []
        keep: list[int] = []
        dead: list[DeadLetter] = []
        for i, rec in enumerate(records):
            problem = self._decode_one(rec, x[i], n_num)
            if isinstance(problem, tuple):
                ent, t = problem
                entity.append(ent)
                time_ms.append(t)
                keep.append(i)
            else:
                dead.append(problem)
        idx = np.asarray(keep, dtype=np.int64)
        kept = [records[i] for i in keep]
        batch = EventBatch(
            entity=np.asarray(entity, dtype=object),
            time_ms=np.asarray(time_ms, dtype=np.int64),
            x=x[idx],
            topic=np.asarray([r.topic for r in kept], dtype=object),
            partition=np.asarray([r.partition for r in kept], dtype=np.int64),
            offset=np.asarray([r.offset for r in kept], dtype=np.int64),
        )
        return batch, dead, idx

    def _decode_one(self, rec: Record, row: np.ndarray, n_num: int) -> tuple[str, int] | DeadLetter:
        schema = self.schema
        value = rec.value
        if value is None or len(value) == 0:
            return DeadLetter("empty", "the message has no value", rec)
        if len(value) > schema.max_event_bytes:
            return DeadLetter(
                "oversized", f"the message has {len(value)} bytes, more than {schema.max_event_bytes}", rec
            )
        for key, hval in rec.headers:
            if key.lower() == "content-encoding" and (hval or b"").strip().lower() not in _PLAIN_ENCODINGS:
                return DeadLetter("unknown_encoding", f"content-encoding {hval!r} is not supported", rec)
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return DeadLetter("unknown_encoding", "the message is not UTF-8 text", rec)
            return DeadLetter("not_json", f"not valid JSON: {exc}", rec)
        if not isinstance(doc, dict):
            return DeadLetter("not_object", f"a JSON object is expected, got {type(doc).__name__}", rec)

        ent = doc.get(schema.entity_field)
        if ent is None:
            return DeadLetter("missing_field", f"the entity field {schema.entity_field!r} is missing", rec)
        if isinstance(ent, bool) or not isinstance(ent, (str, int)):
            return DeadLetter(
                "wrong_type", f"the entity field {schema.entity_field!r} must be a string or integer", rec
            )
        ent = str(ent)

        t = self._event_time(doc, rec)
        if isinstance(t, DeadLetter):
            return t

        for j, name in enumerate(schema.numeric_fields):
            v = doc.get(name)
            if v is None:
                return DeadLetter("missing_field", f"the numeric field {name!r} is missing", rec)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return DeadLetter("wrong_type", f"the numeric field {name!r} must be a number, got {v!r}"[:200], rec)
            fv = float(v)
            if not math.isfinite(fv):
                return DeadLetter("not_finite", f"the numeric field {name!r} is not finite", rec)
            row[j] = fv
        buckets = schema.hash_buckets
        for c, name in enumerate(schema.categorical_fields):
            v = doc.get(name)
            if v is None:
                return DeadLetter("missing_field", f"the categorical field {name!r} is missing", rec)
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                return DeadLetter(
                    "wrong_type", f"the categorical field {name!r} must be a string or integer", rec
                )
            row[n_num + c * buckets + category_bucket(str(v), buckets)] = 1.0
        return ent, t

    def _event_time(self, doc: dict, rec: Record) -> int | DeadLetter:
        name = self.schema.time_field
        raw = doc.get(name) if name else None
        if raw is None or raw == "":
            if rec.timestamp_ms >= 0:
                return int(rec.timestamp_ms)
            return DeadLetter("missing_field", f"no event time: {name!r} is missing and there is no Kafka timestamp", rec)
        if isinstance(raw, bool):
            return DeadLetter("wrong_type", f"the time field {name!r} must be a number or ISO-8601 string", rec)
        if isinstance(raw, (int, float)):
            if not math.isfinite(raw):
                return DeadLetter("not_finite", f"the time field {name!r} is not finite", rec)
            ms = raw * self._time_scale
            if not abs(ms) < _MAX_ABS_TIME_MS:
                return DeadLetter("out_of_range", f"the time field {name!r} is out of range: {raw!r}", rec)
            # Seconds are rounded to the ms (1.005 s * 1000 is 1004.99...); ms are taken as given.
            return int(raw) if self._time_scale == 1.0 else round(ms)
        if isinstance(raw, str):
            try:
                dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            except ValueError:
                return DeadLetter("wrong_type", f"the time field {name!r} is not ISO-8601: {raw[:60]!r}", rec)
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=timezone.utc)
            return int(dt.timestamp() * 1000)
        return DeadLetter("wrong_type", f"the time field {name!r} must be a number or ISO-8601 string", rec)


def records_from_lines(lines: Iterable[bytes], topic: str = "file", partition: int = 0) -> list[Record]:
    """Wrap raw lines (a JSONL file) as records with their line number as offset."""
    return [Record(line, topic, partition, i) for i, line in enumerate(lines)]
