"""streamer.window: record, count and time windowers."""

from __future__ import annotations

import math

import numpy as np

from streamer.config import WindowConfig
from streamer.records import EventBatch, WindowBatch
from streamer.window import CountWindower, RecordWindower, TimeWindower, make_windower


def ev(rows: list[tuple]) -> EventBatch:
    """rows: (entity, time_ms, features, offset[, partition[, topic]])."""
    rows = [r + (0, "t")[len(r) - 4:] if len(r) < 6 else r for r in rows]
    return EventBatch(
        entity=np.asarray([r[0] for r in rows], dtype=object),
        time_ms=np.asarray([r[1] for r in rows], dtype=np.int64),
        x=np.asarray([r[2] for r in rows], dtype=np.float64).reshape(len(rows), -1),
        topic=np.asarray([r[5] for r in rows], dtype=object),
        partition=np.asarray([r[4] for r in rows], dtype=np.int64),
        offset=np.asarray([r[3] for r in rows], dtype=np.int64),
    )


def rows_of(wb: WindowBatch) -> list[tuple]:
    """Windows as comparable tuples, sorted."""
    out = [(str(wb.topic[i]), int(wb.partition[i]), str(wb.entity[i]), int(wb.start_ms[i]), int(wb.end_ms[i]),
            int(wb.offset_lo[i]), int(wb.offset_hi[i]), int(wb.n_events[i]), tuple(np.round(wb.x[i], 9)))
           for i in range(len(wb))]
    return sorted(out)


def cat(batches: list[WindowBatch], n: int) -> WindowBatch:
    return WindowBatch.concat(batches, n)


# -- record -----------------------------------------------------------------------------------------


def test_record_windower_is_a_passthrough():
    w = RecordWindower(["a", "b"])
    e = ev([("x", 5, [1, 2], 7, 1), ("y", 9, [3, 4], 8, 2)])
    wb, late = w.push(e)
    assert late.tolist() == []
    assert wb.entity.tolist() == ["x", "y"]
    assert wb.start_ms.tolist() == [5, 9] and wb.end_ms.tolist() == [5, 9]
    np.testing.assert_array_equal(wb.x, [[1, 2], [3, 4]])
    assert wb.offset_lo.tolist() == [7, 8] and wb.offset_hi.tolist() == [7, 8]
    assert wb.partition.tolist() == [1, 2] and wb.n_events.tolist() == [1, 1]
    assert len(w.flush()) == 0 and w.flush().x.shape == (0, 2)
    assert w.held_offsets() == {} and w.n_entities == 0
    w.drop_partitions({("t", 1)})


def test_make_windower_kinds():
    assert isinstance(make_windower(["a"], WindowConfig(kind="record")), RecordWindower)
    assert isinstance(make_windower(["a"], WindowConfig(kind="count")), CountWindower)
    assert isinstance(make_windower(["a"], WindowConfig(kind="time")), TimeWindower)


# -- count ------------------------------------------------------------------------------------------


def count_w(size=3, slide=2, **kw) -> CountWindower:
    return CountWindower(["a", "b"], WindowConfig(kind="count", size=size, slide=slide, **kw))


def seq(i_from: int, i_to: int, entity="e", partition=0) -> list[tuple]:
    """Events i = i_from..i_to with x = [i, 10 i], time 1000 i, offset 100 + i."""
    return [(entity, 1000 * i, [i, 10 * i], 100 + i, partition) for i in range(i_from, i_to + 1)]


def test_count_feature_names_oldest_first():
    assert count_w().feature_names == ["a@-2", "b@-2", "a@-1", "b@-1", "a@-0", "b@-0"]


def test_count_windows_exact_contents_and_positions():
    w = count_w(size=3, slide=2)
    wb, late = w.push(ev(seq(1, 7)))
    assert late.tolist() == []
    # windows end at event numbers 3, 5, 7 (size, then every `slide`)
    np.testing.assert_array_equal(wb.x, [[1, 10, 2, 20, 3, 30], [3, 30, 4, 40, 5, 50], [5, 50, 6, 60, 7, 70]])
    assert wb.start_ms.tolist() == [1000, 3000, 5000] and wb.end_ms.tolist() == [3000, 5000, 7000]
    assert wb.offset_lo.tolist() == [101, 103, 105] and wb.offset_hi.tolist() == [103, 105, 107]
    assert wb.n_events.tolist() == [3, 3, 3]
    assert wb.entity.tolist() == ["e"] * 3 and wb.topic.tolist() == ["t"] * 3 and wb.partition.tolist() == [0] * 3
    # the last size-1 events stay buffered: the oldest one is what a restart must re-read
    assert w.held_offsets() == {("t", 0): 106}
    wb, _ = w.push(ev(seq(8, 8)))
    assert len(wb) == 0 and w.held_offsets() == {("t", 0): 107}
    wb, _ = w.push(ev(seq(9, 9)))
    np.testing.assert_array_equal(wb.x, [[7, 70, 8, 80, 9, 90]])


def test_count_windows_split_pushes_equal_one_push():
    one = count_w(size=4, slide=3)
    whole, _ = one.push(ev(seq(1, 20)))
    many = count_w(size=4, slide=3)
    parts = [many.push(ev(seq(a, b)))[0] for a, b in ((1, 2), (3, 3), (4, 9), (10, 10), (11, 20))]
    assert rows_of(cat(parts, 8)) == rows_of(whole)
    assert len(whole) == 6  # ends at 4, 7, 10, 13, 16, 19
    assert whole.offset_hi.tolist() == [104, 107, 110, 113, 116, 119]
    assert many.held_offsets() == one.held_offsets() == {("t", 0): 118}


def test_count_windows_random_split_equivalence():
    rng = np.random.default_rng(0)
    rows = [(f"e{rng.integers(3)}", 10 * i, list(rng.normal(size=2)), i, int(rng.integers(2))) for i in range(300)]
    one = count_w(size=5, slide=2)
    whole, _ = one.push(ev(rows))
    many = count_w(size=5, slide=2)
    cuts = np.sort(rng.choice(np.arange(1, 300), 25, replace=False)).tolist()
    parts = [many.push(ev(rows[a:b]))[0] for a, b in zip([0] + cuts, cuts + [300])]
    assert rows_of(cat(parts, 10)) == rows_of(whole)
    assert one.held_offsets() == many.held_offsets()


def test_count_slide_equals_size_and_size_one():
    w = count_w(size=2, slide=2)
    wb, _ = w.push(ev(seq(1, 5)))
    np.testing.assert_array_equal(wb.x, [[1, 10, 2, 20], [3, 30, 4, 40]])
    assert w.held_offsets() == {("t", 0): 105}
    w1 = count_w(size=1, slide=1)
    wb, _ = w1.push(ev(seq(1, 3)))
    np.testing.assert_array_equal(wb.x, [[1, 10], [2, 20], [3, 30]])
    assert w1.feature_names == ["a@-0", "b@-0"]
    assert w1.held_offsets() == {}  # nothing buffered


def test_count_per_partition_separation():
    w = count_w(size=2, slide=1)
    rows = [("e", 1, [1, 0], 0, 0), ("e", 2, [10, 0], 0, 1), ("e", 3, [2, 0], 1, 0), ("e", 4, [20, 0], 1, 1),
            ("e", 5, [3, 0], 2, 0)]
    wb, _ = w.push(ev(rows))
    got = sorted((int(p), tuple(x[[0, 2]])) for p, x in zip(wb.partition, wb.x))
    assert got == [(0, (1.0, 2.0)), (0, (2.0, 3.0)), (1, (10.0, 20.0))]
    assert w.n_entities == 2
    assert w.held_offsets() == {("t", 0): 2, ("t", 1): 1}
    # a different topic with the same partition number is separate too
    wb, _ = w.push(ev([("e", 6, [99, 0], 0, 0, "other")]))
    assert len(wb) == 0 and w.n_entities == 3


def test_count_drop_partitions():
    w = count_w(size=2, slide=1)
    w.push(ev([("e", 1, [1, 0], 0, 0), ("e", 2, [10, 0], 0, 1)]))
    w.drop_partitions({("t", 0)})
    assert w.n_entities == 1 and w.held_offsets() == {("t", 1): 0}
    wb, _ = w.push(ev([("e", 3, [2, 0], 1, 0)]))
    assert len(wb) == 0  # the state of partition 0 was forgotten: one event is not a window
    wb, _ = w.push(ev([("e", 4, [20, 0], 1, 1)]))
    np.testing.assert_array_equal(wb.x[:, [0, 2]], [[10, 20]])


def test_count_idle_eviction():
    w = count_w(size=3, slide=1, idle_timeout_s=10)
    w.push(ev([("a", 0, [1, 1], 0)]))
    w.push(ev([("b", 5_000, [1, 1], 1)]))
    assert w.n_entities == 2
    w.push(ev([("b", 10_000, [1, 1], 2)]))  # a is exactly idle_timeout old: kept
    assert w.n_entities == 2
    w.push(ev([("b", 10_001, [1, 1], 3)]))
    assert w.n_entities == 1 and w.unwindowed == 1
    assert w.held_offsets() == {("t", 0): 2}  # b keeps its last two; a's offset 0 is no longer held


def test_count_max_entities():
    w = count_w(size=3, slide=1, max_entities=2)
    for i, ent in enumerate("abc"):
        w.push(ev([(ent, i, [i, i], i)]))
    assert w.n_entities == 2 and w.unwindowed == 1
    assert w.held_offsets() == {("t", 0): 1}  # a (offset 0) was evicted
    w2 = count_w(size=3, slide=1, max_entities=2)
    w2.push(ev([("a", 0, [0, 0], 0), ("b", 0, [0, 0], 1), ("c", 0, [0, 0], 2)]))
    assert w2.n_entities == 2


def test_count_empty_push():
    w = count_w()
    wb, late = w.push(EventBatch.empty(2))
    assert len(wb) == 0 and wb.x.shape == (0, 6) and late.shape == (0,)


# -- time -------------------------------------------------------------------------------------------


def time_w(names=("v",), seconds=10.0, hop=None, lateness=0.0, **kw) -> TimeWindower:
    return TimeWindower(list(names), WindowConfig(kind="time", seconds=seconds, hop_seconds=hop,
                                                  lateness_s=lateness, **kw))


def test_time_feature_names():
    w = time_w(names=("a", "b"))
    assert w.feature_names == ["count", "a.mean", "b.mean", "a.std", "b.std", "a.min", "b.min", "a.max", "b.max",
                               "a.sum", "b.sum"]
    w = TimeWindower(["a"], WindowConfig(kind="time", aggregates=["max", "count"]))
    assert w.feature_names == ["a.max", "count"]


def test_time_tumbling_aggregates():
    w = time_w()
    wb, late = w.push(ev([("e", 1000, [1], 0), ("e", 2000, [2], 1), ("e", 4000, [6], 2)]))
    assert len(wb) == 0 and late.tolist() == []
    wb, late = w.push(ev([("e", 12_000, [5], 3)]))
    assert len(wb) == 1
    # [1, 2, 6]: mean 3, population std sqrt(((-2)^2 + (-1)^2 + 3^2) / 3) = sqrt(14/3)
    np.testing.assert_allclose(wb.x[0], [3, 3, math.sqrt(14 / 3), 1, 6, 9])
    assert (wb.start_ms[0], wb.end_ms[0], wb.n_events[0]) == (0, 10_000, 3)
    assert (wb.offset_lo[0], wb.offset_hi[0]) == (0, 2)
    assert w.held_offsets() == {("t", 0): 3}
    fl = w.flush()
    np.testing.assert_allclose(fl.x, [[1, 5, 0, 5, 5, 5]])
    assert (fl.start_ms[0], fl.end_ms[0]) == (10_000, 20_000)
    assert w.n_entities == 0 and w.held_offsets() == {}


def test_time_two_features_and_subset_of_aggregates():
    w = TimeWindower(["a", "b"], WindowConfig(kind="time", seconds=1, aggregates=["sum", "count", "min"]))
    w.push(ev([("e", 0, [1, -1], 0), ("e", 500, [2, -4], 1)]))
    wb = w.flush()
    np.testing.assert_allclose(wb.x, [[3, -5, 2, 1, -4]])


def test_time_hopping_each_event_in_seconds_over_hop_windows():
    w = time_w(seconds=10, hop=5)
    times = [1000, 6000, 7000, 12_000, 16_000]
    closed, _ = w.push(ev([("e", t, [t / 1000], i) for i, t in enumerate(times)]))
    # watermark 16 s: windows ending at or before it are closed
    assert closed.start_ms.tolist() == [-5000, 0, 5000]
    rest = w.flush()
    assert rest.start_ms.tolist() == [10_000, 15_000]
    allw = cat([closed, rest], len(w.feature_names))
    counts = dict(zip(allw.start_ms.tolist(), allw.n_events.tolist()))
    assert counts == {-5000: 1, 0: 3, 5000: 3, 10_000: 2, 15_000: 1}
    assert int(allw.n_events.sum()) == 2 * len(times)  # each event in seconds / hop = 2 windows
    assert (allw.end_ms - allw.start_ms).tolist() == [10_000] * 5
    sums = dict(zip(allw.start_ms.tolist(), allw.x[:, -1].tolist()))
    assert sums == {-5000: 1, 0: 14, 5000: 25, 10_000: 28, 15_000: 16}
    lo_hi = {int(s): (int(a), int(b)) for s, a, b in zip(allw.start_ms, allw.offset_lo, allw.offset_hi)}
    assert lo_hi == {-5000: (0, 0), 0: (0, 2), 5000: (1, 3), 10_000: (3, 4), 15_000: (4, 4)}


def test_time_hop_not_dividing_length():
    w = time_w(seconds=10, hop=4)
    closed, _ = w.push(ev([("e", 9000, [1], 0), ("e", 10_000, [1], 1)]))
    assert closed.start_ms.tolist() == [0]  # its end (10 s) reached the watermark
    wb = cat([closed, w.flush()], 6)
    got = {int(s): int(n) for s, n in zip(wb.start_ms, wb.n_events)}
    # t=9 s lies in [0,10), [4,14), [8,18); t=10 s in [4,14), [8,18) only
    assert got == {0: 1, 4000: 2, 8000: 2}


def test_time_window_closes_at_watermark_plus_lateness():
    w = time_w(lateness=2)
    assert len(w.push(ev([("e", 1000, [1], 0)]))[0]) == 0
    assert len(w.push(ev([("e", 11_000, [2], 1)]))[0]) == 0  # limit 9 s
    assert len(w.push(ev([("e", 11_999, [3], 2)]))[0]) == 0  # limit 9.999 s
    wb, late = w.push(ev([("e", 9500, [4], 3)]))  # still inside the lateness: joins [0, 10 s)
    assert len(wb) == 0 and late.tolist() == []
    wb, _ = w.push(ev([("e", 12_000, [5], 4)]))  # limit 10 s = the window's end: closes
    assert wb.start_ms.tolist() == [0] and wb.n_events.tolist() == [2]
    np.testing.assert_allclose(wb.x[0, [0, 1, 5]], [2, 2.5, 5])
    assert (wb.offset_lo[0], wb.offset_hi[0]) == (0, 3)


def test_time_late_events_are_returned():
    w = time_w(lateness=2)
    w.push(ev([("e", 1000, [1], 0), ("e", 12_000, [2], 1)]))  # [0, 10 s) closed in the same push
    wb, late = w.push(ev([("e", 9000, [3], 2), ("e", 10_500, [4], 3), ("f", 500, [5], 4)]))
    assert late.tolist() == [0, 2]  # e@9 s and f@0.5 s: their only window already closed
    assert len(wb) == 0
    assert w.held_offsets() == {("t", 0): 1}  # late events hold nothing
    fl = w.flush()
    assert fl.entity.tolist() == ["e"] and fl.n_events.tolist() == [2]  # 12 s and 10.5 s


def test_time_late_within_one_batch_uses_previous_watermark():
    w = time_w()
    # In one push nothing can be late: the watermark only moves after the batch.
    wb, late = w.push(ev([("e", 50_000, [1], 0), ("e", 1000, [2], 1)]))
    assert late.tolist() == []
    assert sorted(wb.start_ms.tolist()) == [0]  # closed right after the batch
    assert len(w.flush()) == 1


def test_time_flush_closes_all_and_held_offsets():
    w = time_w(seconds=10, hop=5)
    w.push(ev([("a", 1000, [1], 5, 0), ("a", 2000, [1], 3, 0), ("b", 3000, [1], 9, 0), ("b", 4000, [1], 2, 1)]))
    assert w.held_offsets() == {("t", 0): 3, ("t", 1): 2}
    assert w.n_entities == 3
    fl = w.flush()
    assert len(fl) == 6  # 3 (topic, partition, entity) keys x 2 windows each
    a = [i for i in range(len(fl)) if fl.entity[i] == "a"]
    assert {(int(fl.offset_lo[i]), int(fl.offset_hi[i])) for i in a} == {(3, 5)}
    assert w.held_offsets() == {} and w.n_entities == 0
    assert len(w.flush()) == 0


def test_time_max_entities_closes_least_recently_seen_early():
    w = time_w(max_entities=2)
    assert len(w.push(ev([("a", 0, [1], 0)]))[0]) == 0
    assert len(w.push(ev([("b", 1, [2], 1)]))[0]) == 0
    w.push(ev([("a", 2, [3], 2)]))  # a is now the most recently seen
    wb, _ = w.push(ev([("c", 3, [4], 3)]))
    assert wb.entity.tolist() == ["b"] and wb.n_events.tolist() == [1]
    assert w.n_entities == 2
    fl = w.flush()
    assert sorted(fl.entity.tolist()) == ["a", "c"]
    # the stale heap entry of b's evicted window closes nothing later
    w.push(ev([("z", 100_000, [0], 9)]))
    assert w.n_entities == 1


def test_time_per_partition_watermarks():
    w = time_w()
    w.push(ev([("e", 1000, [1], 0, 0)]))
    wb, late = w.push(ev([("e", 500_000, [2], 0, 1)]))  # partition 1 far ahead
    assert len(wb) == 0 and late.tolist() == []  # partition 0's window stays open
    wb, late = w.push(ev([("e", 2000, [3], 1, 0)]))  # not late in partition 0
    assert late.tolist() == [] and len(wb) == 0
    wb, _ = w.push(ev([("e", 10_000, [4], 2, 0)]))
    assert wb.partition.tolist() == [0] and wb.n_events.tolist() == [2] and wb.start_ms.tolist() == [0]
    assert w.held_offsets() == {("t", 0): 2, ("t", 1): 0}


def test_time_drop_partitions():
    w = time_w()
    w.push(ev([("e", 1000, [1], 0, 0), ("e", 1000, [2], 0, 1)]))
    w.drop_partitions({("t", 0)})
    assert w.held_offsets() == {("t", 1): 0}
    # partition 0 starts over: its old watermark is gone, so an old time is not late
    _, late = w.push(ev([("e", 10, [1], 7, 0)]))
    assert late.tolist() == []
    fl = w.flush()
    assert sorted(zip(fl.partition.tolist(), fl.offset_lo.tolist())) == [(0, 7), (1, 0)]


def test_time_split_pushes_equal_one_push():
    rng = np.random.default_rng(1)
    n = 400
    t = np.sort(rng.integers(0, 120_000, n))
    rows = [(f"e{rng.integers(4)}", int(t[i]), list(rng.normal(size=2)), i, int(rng.integers(2))) for i in range(n)]
    one = time_w(names=("a", "b"), seconds=10, hop=2.5, lateness=1)
    whole = cat([one.push(ev(rows))[0], one.flush()], 11)
    many = time_w(names=("a", "b"), seconds=10, hop=2.5, lateness=1)
    parts = []
    for lo in range(0, n, 37):
        wb, late = many.push(ev(rows[lo:lo + 37]))
        assert late.tolist() == []  # time-ordered input is never late
        parts.append(wb)
    parts.append(many.flush())
    a, b = rows_of(whole), rows_of(cat(parts, 11))
    assert [r[:8] for r in a] == [r[:8] for r in b]
    np.testing.assert_allclose([r[8] for r in a], [r[8] for r in b], atol=1e-9)
    assert int(sum(r[7] for r in a)) == 4 * n  # every event in 10 / 2.5 = 4 windows


def test_time_empty_push():
    w = time_w()
    wb, late = w.push(EventBatch.empty(1))
    assert len(wb) == 0 and wb.x.shape == (0, 6) and late.shape == (0,)


def test_count_idle_eviction_is_per_partition():
    """A partition read ahead of another must not keep its own idle entities alive."""
    from streamer.config import WindowConfig
    from streamer.records import EventBatch
    from streamer.window import CountWindower

    cfg = WindowConfig(kind="count", size=2, slide=1, idle_timeout_s=10.0)
    w = CountWindower(["v"], cfg)

    def batch(part: int, ents: list[str], t_ms: list[int], first_offset: int) -> EventBatch:
        n = len(ents)
        return EventBatch(np.asarray(ents, dtype=object), np.asarray(t_ms, dtype=np.int64), np.ones((n, 1)),
                          np.asarray(["t"] * n, dtype=object), np.full(n, part, dtype=np.int64),
                          np.arange(first_offset, first_offset + n, dtype=np.int64))

    w.push(batch(1, ["slow"], [0], 0))          # partition 1: one entity, then nothing more
    w.push(batch(0, ["a", "b"], [0, 0], 0))     # partition 0: a and b at t=0
    w.push(batch(0, ["b"], [60_000], 2))        # partition 0 moves on 60 s; a is idle there
    assert w.n_entities == 2  # a evicted although 'slow' (older in the global order) stays
    assert {k[2] for k in w._state} == {"slow", "b"}
