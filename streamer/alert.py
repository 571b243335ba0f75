"""Alert and dead-letter records, as JSON bytes for the sink.

An alert's ``alert_id`` is derived from its input coordinates (topic, partition, offset range,
entity, window bounds), so a window re-scored after a restart produces the same id and consumers can
de-duplicate at-least-once delivery.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import numpy as np
import orjson

from streamer.detector import Scored
from streamer.records import DeadLetter, WindowBatch

__all__ = ["alert_id", "feature_groups", "build_alerts", "score_values", "dead_letter_value"]

ALERT_SCHEMA = "streamer.alert/1"
DEAD_LETTER_SCHEMA = "streamer.deadletter/1"
SCORE_SCHEMA = "streamer.score/1"


def alert_id(topic: str, partition: int, offset_lo: int, offset_hi: int, entity: str, start_ms: int,
             end_ms: int) -> str:
    key = f"{topic}\x1f{partition}\x1f{offset_lo}\x1f{offset_hi}\x1f{entity}\x1f{start_ms}\x1f{end_ms}"
    return hashlib.blake2b(key.encode("utf-8"), digest_size=16).hexdigest()


def _feature_of(column: str) -> str:
    """The input feature a window column comes from: drop the lag (``@-3``) and the hash bucket
    (``#5``), keep an aggregate suffix (``.mean``)."""
    column = column.split("@")[0]
    if "#" not in column:
        return column
    field, rest = column.split("#", 1)
    return field + ("." + rest.split(".", 1)[1] if "." in rest else "")


def feature_groups(names: list[str]) -> tuple[list[str], np.ndarray]:
    """Group window columns by the input feature they come from (``bytes@-3`` -> ``bytes``,
    ``proto#5`` -> ``proto``, ``bytes.mean`` stays). Returns the group names and a (F, G) 0/1 matrix."""
    base = [_feature_of(n) for n in names]
    groups = list(dict.fromkeys(base))
    index = {g: i for i, g in enumerate(groups)}
    m = np.zeros((len(names), len(groups)), dtype=np.float64)
    m[np.arange(len(names)), [index[b] for b in base]] = 1.0
    return groups, m


def build_alerts(
    windows: WindowBatch,
    scored: Scored,
    *,
    groups: tuple[list[str], np.ndarray],
    model_version: str,
    threshold: float,
    alpha: float,
    top_features: int,
) -> list[dict[str, Any]]:
    """One alert dict per window with ``scored.alert`` set."""
    idx = np.nonzero(scored.alert)[0]
    if len(idx) == 0:
        return []
    names, m = groups
    g_err = scored.sq_err[idx].astype(np.float64) @ m
    total = g_err.sum(axis=1, keepdims=True)
    share = np.divide(g_err, total, out=np.zeros_like(g_err), where=total > 0)
    top = np.argsort(-share, axis=1)[:, :top_features]
    now_ms = int(time.time() * 1000)
    out = []
    for row, i in enumerate(idx):
        topic, part = str(windows.topic[i]), int(windows.partition[i])
        lo, hi = int(windows.offset_lo[i]), int(windows.offset_hi[i])
        ent, start, end = str(windows.entity[i]), int(windows.start_ms[i]), int(windows.end_ms[i])
        out.append({
            "schema": ALERT_SCHEMA,
            "alert_id": alert_id(topic, part, lo, hi, ent, start, end),
            "entity": ent,
            "window_start_ms": start,
            "window_end_ms": end,
            "n_events": int(windows.n_events[i]),
            "score": round(float(scored.score[i]), 6),
            "p_value": float(scored.p_value[i]),
            "threshold": round(float(threshold), 6),
            "alpha": alpha,
            "knn_distance": round(float(scored.knn[i]), 6),
            "reconstruction_error": round(float(scored.recon[i]), 6),
            "model_version": model_version,
            "top_features": [{"feature": names[j], "share": round(float(share[row, j]), 4)} for j in top[row]],
            "source": {"topic": topic, "partition": part, "offset_start": lo, "offset_end": hi},
            "detected_at_ms": now_ms,
        })
        # the entity-baseline, input-baseline and change-view tail probabilities, the range break, the new transition,
        # and what the alert was decided on (their combination with p_value: streamer.calibrate.significance)
        if scored.entity_p is not None:
            out[-1]["entity_p_value"] = float(scored.entity_p[i])
        if scored.input_p is not None:
            out[-1]["input_p_value"] = float(scored.input_p[i])
        if scored.change_p is not None:
            out[-1]["change_p_value"] = float(scored.change_p[i])
        if scored.range_break is not None:
            out[-1]["range_break"] = bool(scored.range_break[i])
        if scored.new_transition is not None:
            out[-1]["new_transition"] = bool(scored.new_transition[i])
        if (scored.entity_p is not None or scored.input_p is not None or scored.change_p is not None
                or scored.range_break is not None or scored.new_transition is not None):
            out[-1]["significance"] = float(scored.alert_significance[i])
    return out


def score_values(windows: WindowBatch, scored: Scored, *, model_version: str) -> list[tuple[bytes, bytes]]:
    """(key, value) of a score record per window, for downstream classifiers and audits."""
    cols = zip(windows.entity.tolist(), windows.start_ms.tolist(), windows.end_ms.tolist(), windows.topic.tolist(),
               windows.partition.tolist(), windows.offset_lo.tolist(), windows.offset_hi.tolist(),
               windows.n_events.tolist(), scored.score.tolist(), scored.p_value.tolist(), scored.alert.tolist())
    return [
        (str(ent).encode("utf-8"), orjson.dumps({
            "schema": SCORE_SCHEMA, "entity": ent, "window_start_ms": s, "window_end_ms": e, "n_events": n,
            "score": sc, "p_value": p, "alert": a, "model_version": model_version,
            "source": {"topic": t, "partition": part, "offset_start": lo, "offset_end": hi},
        }))
        for ent, s, e, t, part, lo, hi, n, sc, p, a in cols
    ]


def dead_letter_value(dl: DeadLetter) -> bytes:
    """The dead-letter record: reason, original bytes (base64) and source coordinates."""
    rec = dl.record
    return orjson.dumps({
        "schema": DEAD_LETTER_SCHEMA,
        "reason": dl.reason,
        "detail": dl.detail,
        "source": {"topic": rec.topic, "partition": rec.partition, "offset": rec.offset,
                   "timestamp_ms": rec.timestamp_ms},
        "original_b64": base64.b64encode(rec.value or b"").decode("ascii"),
        "original_size": len(rec.value or b""),
    })
