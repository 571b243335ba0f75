"""Messages that travel between the stages: raw records, decoded batches, dead letters.

Batches are columns of numpy arrays (one row per event or window) so that every stage after the
decode works on whole arrays.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import overload

import numpy as np

__all__ = ["Record", "RecordBatch", "DeadLetter", "EventBatch", "WindowBatch"]


@dataclass(frozen=True, slots=True)
class Record:
    """One raw message as a source hands it over (Kafka or a file)."""

    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int = -1
    headers: tuple[tuple[str, bytes | None], ...] = ()


@dataclass(slots=True)
class RecordBatch:
    """Raw records in columns: what a ``consume()`` batch becomes without one Python object per
    message. Indexing with an int gives that row's :class:`Record` (for a dead letter); iterating
    gives every row as a :class:`Record` (for the slow paths and tests)."""

    values: list[bytes | None]
    topic: np.ndarray  # object (str), (n,)
    partition: np.ndarray  # int64, (n,)
    offset: np.ndarray  # int64, (n,)
    timestamp_ms: np.ndarray  # int64, (n,): -1 where the record has none
    headers: dict[int, tuple[tuple[str, bytes | None], ...]] = field(default_factory=dict)  # rows that have any

    def __len__(self) -> int:
        return len(self.values)

    @overload
    def __getitem__(self, i: int) -> Record: ...
    @overload
    def __getitem__(self, i: slice) -> RecordBatch: ...

    def __getitem__(self, i: int | slice) -> Record | RecordBatch:
        if isinstance(i, slice):
            lo, hi, step = i.indices(len(self.values))
            if step != 1:
                raise ValueError("a record batch is sliced with a step of 1")
            return RecordBatch(self.values[lo:hi], self.topic[lo:hi], self.partition[lo:hi], self.offset[lo:hi],
                               self.timestamp_ms[lo:hi], {k - lo: h for k, h in self.headers.items() if lo <= k < hi})
        if i < 0:
            i += len(self.values)
        return Record(self.values[i], self.topic[i], int(self.partition[i]), int(self.offset[i]),
                      int(self.timestamp_ms[i]), self.headers.get(i, ()))

    def __iter__(self) -> Iterator[Record]:
        return (self[i] for i in range(len(self.values)))

    @staticmethod
    def from_records(records: Sequence[Record]) -> RecordBatch:
        n = len(records)
        return RecordBatch(
            [r.value for r in records],
            np.array([r.topic for r in records] if n else [], dtype=object),
            np.fromiter((r.partition for r in records), np.int64, n),
            np.fromiter((r.offset for r in records), np.int64, n),
            np.fromiter((r.timestamp_ms for r in records), np.int64, n),
            {i: r.headers for i, r in enumerate(records) if r.headers},
        )

    def next_offsets(self) -> dict[tuple[str, int], int]:
        """Per topic partition in the batch, the offset after its last record."""
        out: dict[tuple[str, int], int] = {}
        if not len(self.values):
            return out
        topics = set(self.topic.tolist())
        for t in topics:
            rows = slice(None) if len(topics) == 1 else self.topic == t
            part, off = self.partition[rows], self.offset[rows]
            for p in np.unique(part).tolist():
                out[(t, p)] = int(off[part == p].max()) + 1
        return out


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that could not be used, and why."""

    reason: str  # short code: not_json, not_object, missing_field, wrong_type, not_finite, ...
    detail: str  # one human sentence naming the field
    record: Record


@dataclass(slots=True)
class EventBatch:
    """Decoded events, columnar. ``x`` holds numeric features then hashed categorical buckets."""

    entity: np.ndarray  # object (str), shape (n,)
    time_ms: np.ndarray  # int64, (n,)
    x: np.ndarray  # float64, (n, n_features)
    topic: np.ndarray  # object (str), (n,)
    partition: np.ndarray  # int64, (n,)
    offset: np.ndarray  # int64, (n,)

    def __len__(self) -> int:
        return int(self.time_ms.shape[0])

    def take(self, idx: np.ndarray) -> EventBatch:
        return EventBatch(
            self.entity[idx], self.time_ms[idx], self.x[idx], self.topic[idx], self.partition[idx], self.offset[idx]
        )

    @staticmethod
    def empty(n_features: int) -> EventBatch:
        return EventBatch(
            np.empty(0, dtype=object),
            np.empty(0, dtype=np.int64),
            np.empty((0, n_features), dtype=np.float64),
            np.empty(0, dtype=object),
            np.empty(0, dtype=np.int64),
            np.empty(0, dtype=np.int64),
        )


@dataclass(slots=True)
class WindowBatch:
    """Closed windows, one row each, ready for the model.

    ``offset_lo``/``offset_hi`` are the first and last source offsets of the events in the window
    (all events of a window come from one topic partition: windows are kept per entity per
    partition). ``n_events`` is how many events the window holds.
    """

    entity: np.ndarray  # object (str)
    start_ms: np.ndarray  # int64
    end_ms: np.ndarray  # int64
    x: np.ndarray  # float64, (n, n_window_features)
    topic: np.ndarray  # object
    partition: np.ndarray  # int64
    offset_lo: np.ndarray  # int64
    offset_hi: np.ndarray  # int64
    n_events: np.ndarray  # int64
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.start_ms.shape[0])

    def take(self, idx: np.ndarray) -> WindowBatch:
        return WindowBatch(
            self.entity[idx], self.start_ms[idx], self.end_ms[idx], self.x[idx], self.topic[idx],
            self.partition[idx], self.offset_lo[idx], self.offset_hi[idx], self.n_events[idx],
            {k: v[idx] for k, v in self.extra.items()},
        )

    @staticmethod
    def concat(batches: list[WindowBatch], n_features: int) -> WindowBatch:
        batches = [b for b in batches if len(b)]
        if not batches:
            return WindowBatch.empty(n_features)
        if len(batches) == 1:
            return batches[0]
        return WindowBatch(
            *(np.concatenate([getattr(b, name) for b in batches]) for name in
              ("entity", "start_ms", "end_ms", "x", "topic", "partition", "offset_lo", "offset_hi", "n_events"))
        )

    @staticmethod
    def empty(n_features: int) -> WindowBatch:
        i64 = np.empty(0, dtype=np.int64)
        return WindowBatch(
            np.empty(0, dtype=object), i64, i64.copy(), np.empty((0, n_features)), np.empty(0, dtype=object),
            i64.copy(), i64.copy(), i64.copy(), i64.copy(),
        )
