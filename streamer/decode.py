"""Decode raw JSON records into a columnar :class:`EventBatch`, and bad records into dead letters.

Parsing JSON is one orjson call per message; the fields are then taken out one column at a time
over the whole batch and checked on arrays, and only the rows that fail a check are looked at one by
one (to name the reason of their dead letter). Everything after this stage works on arrays.
Every bad record gets a reason code and a sentence; nothing non-finite passes.
"""

from __future__ import annotations

import functools
import hashlib
import math
import zlib
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone

import numpy as np
import orjson

from streamer.config import SchemaConfig
from streamer.records import DeadLetter, EventBatch, Record, RecordBatch

__all__ = ["Decoder", "category_bucket", "category_buckets"]

# Content encodings that mean "the value is the JSON itself".
_PLAIN_ENCODINGS = {b"", b"identity", b"utf-8", b"utf8", b"json", b"application/json"}
# Event times beyond this many ms from the epoch (~285,000 years) are nonsense, and would overflow
# the int64 time column and the window arithmetic.
_MAX_ABS_TIME_MS = 2**53


def category_bucket(value: str, buckets: int) -> int:
    """Stable bucket of a categorical value (CRC-32: the same in every process and version)."""
    return zlib.crc32(value.encode("utf-8")) % buckets


@functools.lru_cache(maxsize=1 << 16)
def category_buckets(value: str, buckets: int, functions: int = 1) -> tuple[int, ...]:
    """The buckets a categorical value sets: :func:`category_bucket`'s, then one per further hash
    function (BLAKE2b salted with the function's number: stable too, and independent of CRC-32,
    whose linearity would make same-length values that collide in the first bucket collide in a
    salted CRC's as well). Duplicates are dropped, so a value may set fewer than ``functions``.
    Cached (bounded): a stream repeats its values batch after batch, and the one-by-one decode path
    asks once per record."""
    out = [category_bucket(value, buckets)]
    raw = value.encode("utf-8")
    for i in range(1, functions):
        digest = hashlib.blake2b(raw, digest_size=8, salt=i.to_bytes(16, "little")).digest()
        b = int.from_bytes(digest, "little") % buckets
        if b not in out:
            out.append(b)
    return tuple(out)


class Decoder:
    """Turns records into features following a :class:`SchemaConfig`.

    Features are the numeric fields in order, then ``hash_buckets`` columns per categorical field,
    of which each value sets ``hash_functions`` (one-hot with the default 1).
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

    def decode(self, records: Sequence[Record] | RecordBatch) -> tuple[EventBatch, list[DeadLetter], np.ndarray]:
        """Decode a batch.

        Returns the good events (in input order), the dead letters, and for each good event the
        index of its record in ``records``.

        Clean rows go through a columnar path (one orjson call per record, then one pass per field
        over the whole batch, checked on arrays); any row that path cannot vouch for (a missing
        field, a wrong type, an ISO time string, a header, ...) is decoded on its own by
        :meth:`_decode_one`, which also writes every dead letter. Both give the same result.
        """
        batch = records if isinstance(records, RecordBatch) else RecordBatch.from_records(records)
        n = len(batch)
        x = np.zeros((n, self.n_features), dtype=np.float64)
        entity = np.empty(n, dtype=object)
        time_ms = np.zeros(n, dtype=np.int64)
        slow = self._decode_columns(batch, x, entity, time_ms)
        dead: list[DeadLetter] = []
        good = ~slow
        n_num = len(self.schema.numeric_fields)
        for i in np.flatnonzero(slow).tolist():
            rec = records[i]
            x[i] = 0.0
            got = self._decode_one(rec, x[i], n_num)
            if isinstance(got, DeadLetter):
                dead.append(got)
            else:
                entity[i], time_ms[i] = got
                good[i] = True
        idx = np.flatnonzero(good)
        events = EventBatch(
            entity=entity[idx], time_ms=time_ms[idx], x=x[idx], topic=batch.topic[idx],
            partition=batch.partition[idx], offset=batch.offset[idx],
        )
        return events, dead, idx

    def _decode_columns(self, batch: RecordBatch, x: np.ndarray, entity: np.ndarray, time_ms: np.ndarray) -> np.ndarray:
        """Fill the rows of clean records in place; return the mask of rows left to :meth:`_decode_one`."""
        schema = self.schema
        n = len(batch)
        slow = np.zeros(n, dtype=bool)
        if n == 0:
            return slow
        limit = schema.max_event_bytes
        values = batch.values
        for i in batch.headers:  # any header (content-encoding or not) is looked at row by row
            slow[i] = True
        sizes = np.fromiter((len(v) if v is not None else 0 for v in values), np.int64, n)
        slow |= (sizes == 0) | (sizes > limit)
        docs = _parse_all(values, slow)
        slow |= np.fromiter((type(d) is not dict for d in docs), bool, n)
        docs = [d if type(d) is dict else _EMPTY for d in docs]

        ent = [d.get(schema.entity_field) for d in docs]
        kinds = set(map(type, ent))
        if not kinds <= {str}:  # integers are keys too (as their decimal text); anything else is not
            slow |= np.fromiter((type(v) not in (str, int) for v in ent), bool, n)
            ent = [v if type(v) is str else str(v) if type(v) is int else "" for v in ent]
        entity[:] = ent

        if schema.time_field:
            raw = [d.get(schema.time_field) for d in docs]
            t, bad = _numbers(raw)
            missing = np.fromiter((v is None for v in raw), bool, n)
            ms = t * self._time_scale
            bad |= ~(np.abs(ms) < _MAX_ABS_TIME_MS)
            ms = np.where(bad, 0.0, ms)
            # Seconds are rounded to the ms (1.005 s * 1000 is 1004.99...); ms are taken as given.
            stamps = ms.astype(np.int64) if self._time_scale == 1.0 else np.round(ms).astype(np.int64)
            stamps = np.where(missing, batch.timestamp_ms, stamps)
            slow |= (bad & ~missing) | (missing & (batch.timestamp_ms < 0))
        else:
            stamps = batch.timestamp_ms
            slow |= stamps < 0
        time_ms[:] = stamps

        for j, name in enumerate(schema.numeric_fields):
            col, bad = _numbers([d.get(name) for d in docs])
            bad |= ~np.isfinite(col)
            slow |= bad
            x[:, j] = np.where(bad, 0.0, col)
        n_num, buckets = len(schema.numeric_fields), schema.hash_buckets
        for c, name in enumerate(schema.categorical_fields):
            col = [d.get(name) for d in docs]
            kinds = set(map(type, col))
            if not kinds <= {str, int}:
                bad = np.fromiter((type(v) not in (str, int) for v in col), bool, n)
                slow |= bad
                col = [v if type(v) in (str, int) else "" for v in col]
            # each distinct value's code once, then one gather for the whole batch
            index = {v: i for i, v in enumerate(set(col))}
            codes = np.zeros((len(index), buckets))
            for v, i in index.items():
                codes[i, list(category_buckets(str(v), buckets, schema.hash_functions))] = 1.0
            at = np.fromiter(map(index.__getitem__, col), np.int64, n)
            x[:, n_num + c * buckets:n_num + (c + 1) * buckets] = codes[at]
        return slow

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
            for b in category_buckets(str(v), buckets, schema.hash_functions):
                row[n_num + c * buckets + b] = 1.0
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


_EMPTY: dict = {}
_NUMBER_TYPES = {int, float}


def _parse_all(values: list[bytes | None], skip: np.ndarray) -> list[object]:
    """orjson over every value (``None`` where ``skip`` or where it does not parse; those rows are
    marked in ``skip``)."""
    if not skip.any():
        try:
            return list(map(orjson.loads, values))
        except orjson.JSONDecodeError:
            pass
    out: list[object] = []
    for i, v in enumerate(values):
        if skip[i]:
            out.append(None)
            continue
        try:
            out.append(orjson.loads(v))
        except orjson.JSONDecodeError:
            skip[i] = True
            out.append(None)
    return out


def _numbers(col: list[object]) -> tuple[np.ndarray, np.ndarray]:
    """A column of JSON values as float64, and the mask of values that are not numbers (``None``,
    booleans, strings, ...; those read 0)."""
    if set(map(type, col)) <= _NUMBER_TYPES:
        return np.array(col, dtype=np.float64), np.zeros(len(col), dtype=bool)
    bad = np.fromiter((type(v) not in _NUMBER_TYPES for v in col), bool, len(col))
    return np.array([0.0 if b else v for v, b in zip(col, bad)], dtype=np.float64), bad


def records_from_lines(lines: Iterable[bytes], topic: str = "file", partition: int = 0) -> list[Record]:
    """Wrap raw lines (a JSONL file) as records with their line number as offset."""
    return [Record(line, topic, partition, i) for i, line in enumerate(lines)]
