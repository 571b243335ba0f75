"""Group events per entity into windows: ``record``, ``count`` or ``time``.

State is kept per (topic, partition, entity), so every window's events come from one partition and
the runner can commit, per partition, exactly up to the oldest event a window still needs
(:meth:`Windower.held_offsets`): a restart re-reads those events and rebuilds the same windows.
State is bounded: entities idle for ``idle_timeout_s`` of event time, and the least recently seen
beyond ``max_entities``, are closed and evicted.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from streamer.config import WindowConfig
from streamer.records import EventBatch, WindowBatch

__all__ = ["Windower", "RecordWindower", "CountWindower", "TimeWindower", "make_windower", "new_event_columns",
           "change_columns"]

# Count-window feature names: ``<field>@-<lag>``, lag 0 the newest event.
LAG_SEP = "@-"

Key = tuple[str, int, str]  # (topic, partition, entity)
Partition = tuple[str, int]


class Windower(Protocol):
    """The window stage's interface."""

    feature_names: list[str]

    def push(self, events: EventBatch) -> tuple[WindowBatch, np.ndarray]:
        """Add events; return the windows this closed and the indices of events too late to use."""

    def flush(self) -> WindowBatch:
        """Close every open window (end of stream)."""

    def held_offsets(self) -> dict[Partition, int]:
        """Per partition, the oldest offset that open state still needs (commit no further)."""

    def drop_partitions(self, partitions: set[Partition]) -> None:
        """Forget state of partitions this consumer no longer owns."""

    @property
    def n_entities(self) -> int: ...


def _group(events: EventBatch) -> tuple[list[Key], np.ndarray]:
    """Distinct (topic, partition, entity) keys of a batch and each event's key index."""
    ent_u, ent_inv = np.unique(events.entity.astype(str), return_inverse=True)
    top_u, top_inv = np.unique(events.topic.astype(str), return_inverse=True)
    combo = np.stack([ent_inv, top_inv, events.partition], axis=1)
    uniq, inv = np.unique(combo, axis=0, return_inverse=True)
    keys = [(str(top_u[t]), int(p), str(ent_u[e])) for e, t, p in uniq]
    return keys, inv.reshape(-1)


class RecordWindower:
    """Each event is one window (flow records, already aggregated events)."""

    def __init__(self, feature_names: list[str]) -> None:
        self.feature_names = list(feature_names)

    def push(self, events: EventBatch) -> tuple[WindowBatch, np.ndarray]:
        n = len(events)
        wb = WindowBatch(
            events.entity, events.time_ms, events.time_ms, events.x, events.topic, events.partition,
            events.offset, events.offset, np.ones(n, dtype=np.int64),
        )
        return wb, np.empty(0, dtype=np.int64)

    def flush(self) -> WindowBatch:
        return WindowBatch.empty(len(self.feature_names))

    def held_offsets(self) -> dict[Partition, int]:
        return {}

    def drop_partitions(self, partitions: set[Partition]) -> None:
        return None

    @property
    def n_entities(self) -> int:
        return 0


@dataclass(slots=True)
class _CountState:
    x: np.ndarray  # (<= size-1, F) most recent events
    t: np.ndarray
    off: np.ndarray
    seen: int  # events seen since the state was created
    last_ms: int


class CountWindower:
    """The last ``size`` events of an entity, emitted every ``slide`` events, flattened oldest first.

    An entity that never reaches ``size`` events yields no window; its events are counted in
    :attr:`unwindowed` when it is evicted.
    """

    def __init__(self, feature_names: list[str], cfg: WindowConfig) -> None:
        self.size, self.slide = cfg.size, cfg.slide
        self.idle_ms = int(cfg.idle_timeout_s * 1000)
        self.max_entities = cfg.max_entities
        self.base_names = list(feature_names)
        self.feature_names = [f"{n}{LAG_SEP}{lag}" for lag in range(self.size - 1, -1, -1) for n in feature_names]
        # Least recently seen first, over all partitions (for the max_entities bound) and per
        # partition (for idle eviction: partitions advance at different paces in event time).
        self._state: OrderedDict[Key, _CountState] = OrderedDict()
        self._lru: dict[Partition, OrderedDict[Key, None]] = {}
        self._watermark: dict[Partition, int] = {}
        self.unwindowed = 0

    @property
    def n_entities(self) -> int:
        return len(self._state)

    def push(self, events: EventBatch) -> tuple[WindowBatch, np.ndarray]:
        n_feat = len(self.base_names)
        if len(events) == 0:
            return WindowBatch.empty(len(self.feature_names)), np.empty(0, dtype=np.int64)
        keys, inv = _group(events)
        order = np.argsort(inv, kind="stable")
        bounds = np.searchsorted(inv[order], np.arange(len(keys) + 1))
        W, S = self.size, self.slide
        out_x, out_meta = [], []
        for k, key in enumerate(keys):
            rows = order[bounds[k]:bounds[k + 1]]
            st = self._state.get(key)
            if st is None:
                empty = np.empty(0, dtype=np.int64)
                st = _CountState(np.empty((0, n_feat)), empty, empty.copy(), 0, 0)
            x = np.concatenate([st.x, events.x[rows]])
            t = np.concatenate([st.t, events.time_ms[rows]])
            off = np.concatenate([st.off, events.offset[rows]])
            held = len(st.x)
            # Event numbers (1-based since the state began) of the rows in ``x``. Only the new rows
            # can end a window: windows ending at a held row were emitted by an earlier push.
            numbers = np.arange(st.seen - held + 1, st.seen + len(rows) + 1)
            is_new = np.arange(len(numbers)) >= held
            ends = np.nonzero(is_new & (numbers >= W) & ((numbers - W) % S == 0))[0]
            if len(ends):
                view = np.lib.stride_tricks.sliding_window_view(x, W, axis=0)  # (n-W+1, F, W)
                starts = ends - W + 1
                out_x.append(view[starts].transpose(0, 2, 1).reshape(len(ends), W * n_feat))
                out_meta.append((key, t[starts], t[ends], off[starts], off[ends]))
            keep = W - 1
            st.x, st.t, st.off = x[-keep:] if keep else x[:0], t[-keep:] if keep else t[:0], off[-keep:] if keep else off[:0]
            st.seen += len(rows)
            st.last_ms = int(t[-1])
            self._state[key] = st
            self._state.move_to_end(key)
            part = (key[0], key[1])
            lru = self._lru.setdefault(part, OrderedDict())
            lru[key] = None
            lru.move_to_end(key)
            self._watermark[part] = max(self._watermark.get(part, st.last_ms), st.last_ms)
        self._evict({(k[0], k[1]) for k in keys})
        return self._emit(out_x, out_meta), np.empty(0, dtype=np.int64)

    def _emit(self, out_x: list[np.ndarray], out_meta: list[tuple]) -> WindowBatch:
        if not out_x:
            return WindowBatch.empty(len(self.feature_names))
        counts = [len(m[1]) for m in out_meta]
        keys = [m[0] for m in out_meta]

        def per_window(values: list) -> np.ndarray:
            return np.repeat(np.asarray(values, dtype=object), counts)

        return WindowBatch(
            entity=per_window([k[2] for k in keys]),
            start_ms=np.concatenate([m[1] for m in out_meta]),
            end_ms=np.concatenate([m[2] for m in out_meta]),
            x=np.concatenate(out_x),
            topic=per_window([k[0] for k in keys]),
            partition=per_window([k[1] for k in keys]).astype(np.int64),
            offset_lo=np.concatenate([m[3] for m in out_meta]),
            offset_hi=np.concatenate([m[4] for m in out_meta]),
            n_events=np.full(sum(counts), self.size, dtype=np.int64),
        )

    def _evict(self, partitions: set[Partition]) -> None:
        for part in partitions:
            lru = self._lru.get(part)
            wm = self._watermark.get(part)
            while lru and wm is not None:
                key = next(iter(lru))
                if self._state[key].last_ms >= wm - self.idle_ms:
                    break
                self._forget(key)
        while len(self._state) > self.max_entities:
            self._forget(next(iter(self._state)))

    def _forget(self, key: Key) -> None:
        st = self._state.pop(key)
        self._lru[(key[0], key[1])].pop(key, None)
        if st.seen < self.size:
            self.unwindowed += st.seen

    def flush(self) -> WindowBatch:
        # Count windows are complete by construction; entities short of ``size`` events stay open.
        return WindowBatch.empty(len(self.feature_names))

    def held_offsets(self) -> dict[Partition, int]:
        held: dict[Partition, int] = {}
        for (topic, part, _), st in self._state.items():
            if len(st.off):
                p = (topic, part)
                held[p] = min(held.get(p, st.off[0]), int(st.off[0]))
        return held

    def drop_partitions(self, partitions: set[Partition]) -> None:
        _drop(partitions, self._state, self._watermark, self._lru)


class TimeWindower:
    """Per-entity tumbling or hopping event-time windows with per-feature aggregates.

    A window ``[start, start + seconds)`` closes when its partition's newest event time passes
    ``start + seconds + lateness``. An event older than that arrives too late: it is returned to the
    caller (who dead-letters it) rather than silently dropped. Closed windows leave no state; beyond
    ``max_entities`` the least recently seen entities are closed early.
    """

    def __init__(self, feature_names: list[str], cfg: WindowConfig) -> None:
        self.len_ms = int(round(cfg.seconds * 1000))
        self.hop_ms = int(round((cfg.hop_seconds or cfg.seconds) * 1000))
        self.late_ms = int(round(cfg.lateness_s * 1000))
        self.max_entities = cfg.max_entities
        self.aggregates = list(cfg.aggregates)
        self.base_names = list(feature_names)
        names: list[str] = []
        for agg in self.aggregates:
            names += ["count"] if agg == "count" else [f"{n}.{agg}" for n in feature_names]
        self.feature_names = names
        # key -> {window_start_ms: accumulator}; an accumulator is
        # [count, sum(F), sumsq(F), min(F), max(F), first_offset, last_offset].
        self._state: OrderedDict[Key, dict[int, np.ndarray]] = OrderedDict()
        self._watermark: dict[Partition, int] = {}
        # Per partition, a heap of (window_start, key) of open windows: closing pops only what closes.
        self._open: dict[Partition, list[tuple[int, Key]]] = {}

    @property
    def n_entities(self) -> int:
        return len(self._state)

    def _limit(self, part: Partition) -> int:
        """Windows ending at or before this time are closed in ``part``."""
        wm = self._watermark.get(part)
        return -(2**62) if wm is None else wm - self.late_ms

    def push(self, events: EventBatch) -> tuple[WindowBatch, np.ndarray]:
        F = len(self.base_names)
        if len(events) == 0:
            return WindowBatch.empty(len(self.feature_names)), np.empty(0, dtype=np.int64)
        keys, inv = _group(events)
        t = events.time_ms
        key_limit = np.asarray([self._limit((k[0], k[1])) for k in keys], dtype=np.int64)
        # Every window an event belongs to: starts s = (floor(t/hop) - j) * hop with t < s + len,
        # and not already closed in its partition.
        per = -(-self.len_ms // self.hop_ms)
        starts = ((t // self.hop_ms)[:, None] - np.arange(per)[None, :]) * self.hop_ms
        ok = (t[:, None] < starts + self.len_ms) & (starts + self.len_ms > key_limit[inv][:, None])
        late = np.nonzero(~ok.any(axis=1))[0]
        ev_idx, j_idx = np.nonzero(ok)
        w_start = starts[ev_idx, j_idx]
        key_of = inv[ev_idx]
        order = np.lexsort((w_start, key_of))
        ev_idx, w_start, key_of = ev_idx[order], w_start[order], key_of[order]
        if len(ev_idx):
            seg = np.concatenate([[0], np.nonzero((np.diff(key_of) != 0) | (np.diff(w_start) != 0))[0] + 1])
            xs = events.x[ev_idx]
            offs = events.offset[ev_idx]
            cnt = np.diff(np.append(seg, len(ev_idx)))
            stats = np.concatenate(
                [
                    cnt[:, None].astype(np.float64),
                    np.add.reduceat(xs, seg, axis=0),
                    np.add.reduceat(xs * xs, seg, axis=0),
                    np.minimum.reduceat(xs, seg, axis=0),
                    np.maximum.reduceat(xs, seg, axis=0),
                    np.minimum.reduceat(offs, seg)[:, None],
                    np.maximum.reduceat(offs, seg)[:, None],
                ],
                axis=1,
            )
            for g, s in enumerate(seg):
                key = keys[key_of[s]]
                wins = self._state.get(key)
                if wins is None:
                    wins = self._state[key] = {}
                else:
                    self._state.move_to_end(key)
                start = int(w_start[s])
                acc = wins.get(start)
                if acc is None:
                    wins[start] = stats[g].copy()
                    heapq.heappush(self._open.setdefault((key[0], key[1]), []), (start, key))
                else:
                    _merge(acc, stats[g], F)
        newest = np.full(len(keys), -(2**62), dtype=np.int64)
        np.maximum.at(newest, inv, t)
        for k, key in enumerate(keys):
            part = (key[0], key[1])
            self._watermark[part] = max(self._watermark.get(part, int(newest[k])), int(newest[k]))
        return self._close(), late

    def _close(self) -> WindowBatch:
        """Emit windows whose end has passed their partition's watermark, then enforce the bound."""
        rows: list[tuple[Key, int, np.ndarray]] = []
        for part, heap in self._open.items():
            limit = self._limit(part)
            while heap and heap[0][0] + self.len_ms <= limit:
                start, key = heapq.heappop(heap)
                self._pop(key, start, rows)
        while len(self._state) > self.max_entities:
            key, wins = next(iter(self._state.items()))
            for start in sorted(wins):
                self._pop(key, start, rows)
        return self._to_batch(rows)

    def _pop(self, key: Key, start: int, rows: list[tuple[Key, int, np.ndarray]]) -> None:
        wins = self._state.get(key)
        if wins is None or start not in wins:
            return  # already closed early (entity evicted); its heap entry is stale
        rows.append((key, start, wins.pop(start)))
        if not wins:
            del self._state[key]

    def _to_batch(self, rows: list[tuple[Key, int, np.ndarray]]) -> WindowBatch:
        if not rows:
            return WindowBatch.empty(len(self.feature_names))
        F = len(self.base_names)
        acc = np.stack([r[2] for r in rows])
        n = acc[:, 0:1]
        s, sq = acc[:, 1:1 + F], acc[:, 1 + F:1 + 2 * F]
        mean = s / n
        columns = {
            "count": n,
            "mean": mean,
            "std": np.sqrt(np.maximum(sq / n - mean * mean, 0.0)),
            "min": acc[:, 1 + 2 * F:1 + 3 * F],
            "max": acc[:, 1 + 3 * F:1 + 4 * F],
            "sum": s,
        }
        start = np.asarray([r[1] for r in rows], dtype=np.int64)
        return WindowBatch(
            entity=np.asarray([r[0][2] for r in rows], dtype=object),
            start_ms=start,
            end_ms=start + self.len_ms,
            x=np.concatenate([columns[a] for a in self.aggregates], axis=1),
            topic=np.asarray([r[0][0] for r in rows], dtype=object),
            partition=np.asarray([r[0][1] for r in rows], dtype=np.int64),
            offset_lo=acc[:, -2].astype(np.int64),
            offset_hi=acc[:, -1].astype(np.int64),
            n_events=acc[:, 0].astype(np.int64),
        )

    def flush(self) -> WindowBatch:
        rows: list[tuple[Key, int, np.ndarray]] = []
        for key in list(self._state):
            for start in sorted(self._state[key]):
                self._pop(key, start, rows)
        self._open.clear()
        return self._to_batch(rows)

    def held_offsets(self) -> dict[Partition, int]:
        held: dict[Partition, int] = {}
        for (topic, part, _), wins in self._state.items():
            lo = int(min(acc[-2] for acc in wins.values()))
            held[(topic, part)] = min(held.get((topic, part), lo), lo)
        return held

    def drop_partitions(self, partitions: set[Partition]) -> None:
        _drop(partitions, self._state, self._watermark, self._open)


def _drop(partitions: set[Partition], state: dict[Key, object], *per_partition: dict[Partition, object]) -> None:
    """Forget the entity state of ``partitions`` and their per-partition bookkeeping."""
    for key in [k for k in state if (k[0], k[1]) in partitions]:
        del state[key]
    for mapping in per_partition:
        for p in partitions:
            mapping.pop(p, None)


def _merge(acc: np.ndarray, new: np.ndarray, F: int) -> None:
    """Fold a partial aggregate into an open window's accumulator, in place."""
    acc[: 1 + 2 * F] += new[: 1 + 2 * F]
    lo, hi = slice(1 + 2 * F, 1 + 3 * F), slice(1 + 3 * F, 1 + 4 * F)
    np.minimum(acc[lo], new[lo], out=acc[lo])
    np.maximum(acc[hi], new[hi], out=acc[hi])
    acc[-2] = min(acc[-2], new[-2])
    acc[-1] = max(acc[-1], new[-1])


def new_event_columns(feature_names: list[str], cfg: WindowConfig) -> np.ndarray:
    """Window feature columns that hold events new to their window: in count windows (features
    ``<field>@-<lag>``) the ``slide`` newest events, so that each event is seen there once, in the
    first window it appears in; in record and time windows every column."""
    if cfg.kind != "count":
        return np.arange(len(feature_names))
    lags = np.array([int(n.rsplit(LAG_SEP, 1)[1]) for n in feature_names])
    return np.flatnonzero(lags < max(1, min(cfg.slide, cfg.size)))


def change_columns(feature_names: list[str], cfg: WindowConfig) -> tuple[np.ndarray, np.ndarray]:
    """Column pairs ``(new, previous)`` of count-window features: for each column of an event new to
    its window (:func:`new_event_columns`), the same field one event earlier, so that ``x[:, new] -
    x[:, previous]`` is each new event's change from the event before it. Empty for other windows,
    and for a window of one event."""
    if cfg.kind != "count":
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    where = {n: i for i, n in enumerate(feature_names)}
    new, prev = [], []
    for c in new_event_columns(feature_names, cfg):
        field, lag = feature_names[c].rsplit(LAG_SEP, 1)
        before = where.get(f"{field}{LAG_SEP}{int(lag) + 1}")
        if before is not None:
            new.append(int(c))
            prev.append(before)
    return np.asarray(new, dtype=np.int64), np.asarray(prev, dtype=np.int64)


def make_windower(feature_names: list[str], cfg: WindowConfig) -> Windower:
    """The windower the config asks for."""
    if cfg.kind == "record":
        return RecordWindower(feature_names)
    if cfg.kind == "count":
        return CountWindower(feature_names, cfg)
    return TimeWindower(feature_names, cfg)
