"""streamer.alert: alert ids, feature groups, alert/score/dead-letter records."""

from __future__ import annotations

import base64
import hashlib
import time

import numpy as np
import orjson
import pytest

from streamer.alert import (
    ALERT_SCHEMA,
    DEAD_LETTER_SCHEMA,
    SCORE_SCHEMA,
    alert_id,
    build_alerts,
    dead_letter_value,
    feature_groups,
    score_values,
)
from streamer.detector import Scored
from streamer.records import DeadLetter, Record, WindowBatch

COORDS = ("flows", 3, 100, 120, "10.0.0.5", 1_000, 11_000)


def test_alert_id_deterministic_and_pinned():
    a = alert_id(*COORDS)
    assert a == alert_id(*COORDS)
    assert len(a) == 32 and int(a, 16) >= 0
    # the key format is part of the contract (consumers de-duplicate across versions)
    key = "\x1f".join(str(c) for c in COORDS).encode()
    assert a == hashlib.blake2b(key, digest_size=16).hexdigest()


@pytest.mark.parametrize("i, other", [(0, "flows2"), (1, 4), (2, 101), (3, 121), (4, "10.0.0.6"), (5, 1_001),
                                      (6, 11_001)])
def test_alert_id_sensitive_to_every_coordinate(i, other):
    changed = list(COORDS)
    changed[i] = other
    assert alert_id(*changed) != alert_id(*COORDS)


def test_alert_id_fields_cannot_run_together():
    assert alert_id("ab", 1, 2, 3, "c", 4, 5) != alert_id("a", 1, 2, 3, "bc", 4, 5)
    assert alert_id("t", 1, 23, 4, "e", 5, 6) != alert_id("t", 1, 2, 34, "e", 5, 6)


def test_feature_groups_naming():
    names = ["bytes@-3", "proto#2", "proto#2.mean", "bytes.mean", "count", "proto#0@-1", "bytes@-0", "bytes.std",
             "proto#1.mean"]
    groups, m = feature_groups(names)
    assert groups == ["bytes", "proto", "proto.mean", "bytes.mean", "count", "bytes.std"]
    expected_group = ["bytes", "proto", "proto.mean", "bytes.mean", "count", "proto", "bytes", "bytes.std",
                      "proto.mean"]
    assert m.shape == (len(names), len(groups))
    assert (m.sum(axis=1) == 1).all()
    assert [groups[j] for j in m.argmax(axis=1)] == expected_group


def test_feature_groups_of_real_windowers():
    from streamer.config import WindowConfig
    from streamer.window import CountWindower, TimeWindower

    base = ["bytes", "proto#0", "proto#1"]
    g, _ = feature_groups(CountWindower(base, WindowConfig(kind="count", size=3)).feature_names)
    assert g == ["bytes", "proto"]
    g, _ = feature_groups(TimeWindower(base, WindowConfig(kind="time", aggregates=["count", "mean", "max"]))
                          .feature_names)
    assert g == ["count", "bytes.mean", "proto.mean", "bytes.max", "proto.max"]


NAMES = ["bytes@-1", "proto#0@-1", "proto#1@-1", "bytes@-0", "proto#0@-0", "proto#1@-0"]


def windows(n: int) -> WindowBatch:
    return WindowBatch(
        entity=np.asarray([f"h{i}" for i in range(n)], dtype=object),
        start_ms=np.arange(n, dtype=np.int64) * 1000,
        end_ms=np.arange(n, dtype=np.int64) * 1000 + 500,
        x=np.zeros((n, len(NAMES))),
        topic=np.asarray(["flows"] * n, dtype=object),
        partition=np.arange(n, dtype=np.int64) % 2,
        offset_lo=np.arange(n, dtype=np.int64) * 10,
        offset_hi=np.arange(n, dtype=np.int64) * 10 + 1,
        n_events=np.full(n, 2, dtype=np.int64),
    )


def scored() -> Scored:
    sq = np.array([
        [3.0, 0.5, 0.5, 1.0, 0.0, 0.0],  # bytes 4, proto 1
        [9.0, 9.0, 9.0, 9.0, 9.0, 9.0],  # not an alert
        [0.0, 1.0, 2.0, 0.0, 3.0, 0.0],  # bytes 0, proto 6
        [0.0] * 6,  # no error at all
    ], dtype=np.float32)
    return Scored(
        score=np.array([5.1234567891, 0.5, 7.0, 3.0]),
        p_value=np.array([0.001, 0.6, 0.0005, 0.004]),
        alert=np.array([True, False, True, True]),
        knn=np.array([1.23456789, 0.1, 2.0, 0.3]),
        recon=np.array([0.5, 0.2, 1.0, 0.0]),
        sq_err=sq,
    )


def test_build_alerts_fields_and_shares():
    before = int(time.time() * 1000)
    alerts = build_alerts(windows(4), scored(), groups=feature_groups(NAMES), model_version="v1",
                          threshold=2.12345678, alpha=0.01, top_features=2)
    after = int(time.time() * 1000)
    assert [a["entity"] for a in alerts] == ["h0", "h2", "h3"]
    a0 = alerts[0]
    assert a0["schema"] == ALERT_SCHEMA
    assert a0["alert_id"] == alert_id("flows", 0, 0, 1, "h0", 0, 500)
    assert (a0["window_start_ms"], a0["window_end_ms"], a0["n_events"]) == (0, 500, 2)
    assert a0["score"] == 5.123457 and a0["p_value"] == 0.001
    assert a0["threshold"] == 2.123457 and a0["alpha"] == 0.01
    assert a0["knn_distance"] == 1.234568 and a0["reconstruction_error"] == 0.5
    assert a0["model_version"] == "v1"
    assert a0["source"] == {"topic": "flows", "partition": 0, "offset_start": 0, "offset_end": 1}
    assert before <= a0["detected_at_ms"] <= after
    assert a0["top_features"] == [{"feature": "bytes", "share": 0.8}, {"feature": "proto", "share": 0.2}]
    assert alerts[1]["top_features"][0] == {"feature": "proto", "share": 1.0}
    assert alerts[1]["source"]["partition"] == 0 and alerts[1]["source"]["offset_start"] == 20
    assert [f["share"] for f in alerts[2]["top_features"]] == [0.0, 0.0]  # no error: no division by zero
    for a in alerts:
        assert sum(f["share"] for f in a["top_features"]) <= 1.0 + 1e-9
        assert len(a["top_features"]) == 2
        orjson.dumps(a)  # serializable as is


def test_an_alert_decided_with_the_change_view_carries_its_tail_and_decision():
    s = scored()
    s.change_p = np.array([1e-6, 0.5, 0.3, 0.2])
    # the ranking's significance (the p-value here) and what the alert was decided on differ
    s.alert_significance = np.array([2e-4, 0.6, 0.0005, 0.004])
    alerts = build_alerts(windows(4), s, groups=feature_groups(NAMES), model_version="v1", threshold=2.0,
                          alpha=0.01, top_features=2)
    assert [a["change_p_value"] for a in alerts] == [1e-6, 0.3, 0.2]
    assert [a["significance"] for a in alerts] == [2e-4, 0.0005, 0.004]
    assert "input_p_value" not in alerts[0] and "entity_p_value" not in alerts[0]
    assert "change_p_value" not in build_alerts(windows(4), scored(), groups=feature_groups(NAMES), model_version="v1",
                                                threshold=2.0, alpha=0.01, top_features=2)[0]


def test_an_alert_from_a_range_break_says_so():
    s = scored()
    s.range_break = np.array([True, False, False, True])
    s.alert_significance = np.array([1e-300, 0.6, 0.0005, 1e-300])
    alerts = build_alerts(windows(4), s, groups=feature_groups(NAMES), model_version="v1", threshold=2.0,
                          alpha=0.01, top_features=2)
    assert [(a["range_break"], a["significance"]) for a in alerts] == [(True, 1e-300), (False, 0.0005), (True, 1e-300)]
    assert all(type(a["range_break"]) is bool for a in alerts) and orjson.dumps(alerts[0])
    assert "range_break" not in build_alerts(windows(4), scored(), groups=feature_groups(NAMES), model_version="v1",
                                             threshold=2.0, alpha=0.01, top_features=2)[0]


def test_build_alerts_top_feature_of_a_random_error_matrix():
    rng = np.random.default_rng(0)
    names = [f"{f}@-{lag}" for lag in (2, 1, 0) for f in ("a", "b", "c", "d")]
    n = 30
    sq = rng.exponential(size=(n, len(names))).astype(np.float32)
    dominant = rng.integers(0, 4, n)
    for i, d in enumerate(dominant):
        sq[i, d::4] += 50.0  # the dominant feature at every lag
    s = Scored(np.ones(n), np.full(n, 1e-4), np.ones(n, bool), np.ones(n), np.ones(n), sq)
    wb = WindowBatch(np.asarray([f"e{i}" for i in range(n)], dtype=object), np.zeros(n, np.int64),
                     np.ones(n, np.int64), np.zeros((n, len(names))), np.asarray(["t"] * n, dtype=object),
                     np.zeros(n, np.int64), np.arange(n), np.arange(n), np.ones(n, np.int64))
    alerts = build_alerts(wb, s, groups=feature_groups(names), model_version="v", threshold=1.0, alpha=0.01,
                          top_features=3)
    assert [a["top_features"][0]["feature"] for a in alerts] == ["abcd"[d] for d in dominant]
    for a, row in zip(alerts, sq.astype(np.float64)):
        shares = [f["share"] for f in a["top_features"]]
        assert shares == sorted(shares, reverse=True) and sum(shares) <= 1.0 + 1e-3
        top = a["top_features"][0]
        cols = [names.index(f"{top['feature']}@-{lag}") for lag in (2, 1, 0)]
        assert top["share"] == pytest.approx(row[cols].sum() / row.sum(), abs=1e-4)


def test_build_alerts_none():
    s = scored()
    s.alert[:] = False
    assert build_alerts(windows(4), s, groups=feature_groups(NAMES), model_version="v", threshold=1.0,
                        alpha=0.01, top_features=3) == []


def test_score_values():
    out = score_values(windows(4), scored(), model_version="v9")
    assert len(out) == 4
    key, value = out[2]
    assert key == b"h2"
    doc = orjson.loads(value)
    assert doc == {"schema": SCORE_SCHEMA, "entity": "h2", "window_start_ms": 2000, "window_end_ms": 2500,
                   "n_events": 2, "score": 7.0, "p_value": 0.0005, "alert": True, "model_version": "v9",
                   "source": {"topic": "flows", "partition": 0, "offset_start": 20, "offset_end": 21}}
    assert [orjson.loads(v)["alert"] for _, v in out] == [True, False, True, True]


def test_dead_letter_value_round_trip():
    raw = b'{"host": \xff broken'
    dl = DeadLetter("unknown_encoding", "the message is not UTF-8 text", Record(raw, "in", 2, 77, 123))
    doc = orjson.loads(dead_letter_value(dl))
    assert doc["schema"] == DEAD_LETTER_SCHEMA
    assert doc["reason"] == "unknown_encoding" and doc["detail"] == "the message is not UTF-8 text"
    assert doc["source"] == {"topic": "in", "partition": 2, "offset": 77, "timestamp_ms": 123}
    assert base64.b64decode(doc["original_b64"]) == raw
    assert doc["original_size"] == len(raw)
    empty = orjson.loads(dead_letter_value(DeadLetter("empty", "no value", Record(None, "in", 0, 1))))
    assert empty["original_b64"] == "" and empty["original_size"] == 0 and empty["source"]["timestamp_ms"] == -1
