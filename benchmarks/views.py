"""The detector's per-entity views, alone, in-process: cost per window of one batch through the six
views NAB's settings run (entity baseline, input baseline, seasonal baseline, change memory, change
view, alert cooldown), with the batch grouped by entity once for all of them (``EntityGroups``, as
``Detector.score`` does) against each view grouping it itself (as before 2026-11-30; the scan of
the whole batch per step that each view also made then is gone from both ways). Both run in the same
process, in alternating rounds (the best of each kept), on the same batch; the ratio is the figure
to read.

Each view updates per entity in steps of one window per entity, so a batch with few entities (one
sensor) costs far more per window than one spread over many.

    .venv/bin/python benchmarks/views.py --json out/bench-views.json
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchlib as bl  # noqa: E402

from streamer.calibrate import (AlertCooldown, ChangeMemory, EntityBaseline, EntityGroups,  # noqa: E402
                                InputBaseline, SeasonalBaseline)


def make_views(cal: np.ndarray) -> list[Any]:
    return [EntityBaseline(cal, horizon=3000, short=1), InputBaseline(np.zeros(1), np.ones(1), horizon=3000),
            SeasonalBaseline(np.zeros(1), np.ones(1), period_s=86400, buckets=48, horizon=3000),
            ChangeMemory(1, span_s=86400), InputBaseline(np.zeros(1), np.ones(1), horizon=3000), AlertCooldown(100)]


def run_views(views: list[Any], entity: Any, t: np.ndarray, x: np.ndarray, s: np.ndarray) -> None:
    """One batch through the views, in the detector's order."""
    views[0].update(entity, s)
    views[1].update(entity, x)
    views[2].update(entity, t, x)
    judge = views[3].excess(entity, t, x)
    views[4].update(entity, x, judge)
    views[5].update(entity, s / 100.0)


def main() -> int:
    ap = bl.parser(__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=2000, help="windows per batch")
    ap.add_argument("--entities", default="1,50,2000", help="distinct entities in a batch (comma-separated)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds of each way")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    meta = bl.machine_meta()
    bl.say(f"{meta['cores']} cores, load average {meta['load_avg_at_start']}")
    rng = np.random.default_rng(0)
    cal = rng.gamma(2.0, 1.0, 500)
    rows, out = [], {"meta": meta, "batch": args.batch, "results": {}}
    for n_ent in [int(v) for v in args.entities.split(",")]:
        n = args.batch
        ent = np.array([f"e{i}" for i in rng.integers(0, n_ent, n)], dtype=object)
        t = np.sort(rng.integers(0, 10 * 86_400_000, n))
        x = rng.normal(size=(n, 1))
        s = rng.gamma(2.0, 1.0, n)
        ways = {"grouped once": lambda v: run_views(v, EntityGroups(ent), t, x, s),
                "grouped per view": lambda v: run_views(v, ent, t, x, s)}
        views = {name: make_views(cal) for name in ways}
        best = {name: float("inf") for name in ways}
        for _ in range(args.rounds):
            for name, way in ways.items():
                t0 = time.perf_counter()
                way(views[name])
                best[name] = min(best[name], time.perf_counter() - t0)
        us = {name: best[name] / n * 1e6 for name in ways}
        ratio = us["grouped per view"] / us["grouped once"]
        out["results"][str(n_ent)] = {"us_per_window": us, "ratio": ratio}
        rows.append([str(n_ent), bl.fmt(us["grouped once"]), bl.fmt(us["grouped per view"]), bl.fmt(ratio)])
    bl.say(bl.table(rows, ["entities", "once: us/window", "per view: us/window", "per view / once"]))
    bl.write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
