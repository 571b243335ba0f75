"""Embed and score alone, in-process (no Kafka, no decode, no windows): how fast the model side is
for each batch size and reservoir size, and what a 10x larger reservoir costs.

For every batch size b and reservoir size m:
  embed     ``streamer.embed.Embedder.embed`` on b windows (latent vector + per-feature error);
  knn       ``streamer.score.Reservoir.knn`` (exact kNN, k = 10) of b embeddings against m;
  detector  ``streamer.detector.Detector.score`` on b raw windows: normalize, embed, kNN,
            combine, p-values, reservoir admission (what the pipeline calls per batch).
``--data flows`` (default): the model is trained (as ``streamer train`` does, default sizes:
hidden 64,32, latent 8) on synthetic flow events of the e2e benchmark, the windows are other flows
of the same kind, and the reservoirs hold their embeddings: what a running detector searches.
``--data gaussian``: an untrained autoencoder with ``--features`` inputs, lognormal inputs and
reservoirs of standard normal 8-d noise, the worst case for a k-d tree (no structure to exploit).
Works with any Keras backend (KERAS_BACKEND=jax ...).

kNN cells larger than ``--max-entries`` distance entries (b x m) are timed on a subset of the
queries and scaled: the search runs in independent blocks of the same shape, so its time is
linear in the number of queries once b exceeds one block. A detector cell that large is estimated
as detector(b, smallest m) - knn(b, smallest m) + knn(b, m), and marked "est".

    .venv/bin/python benchmarks/model.py --json out/bench-model.json
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import benchlib as bl

np = bl.np

DEFAULT_BATCHES = [64, 1024, 8192, 65536]
FULL_BATCHES = [64, 256, 1024, 4096, 16384, 65536]
DEFAULT_RESERVOIRS = [1_000, 10_000, 100_000]
FULL_RESERVOIRS = [1_000, 10_000, 100_000, 1_000_000]


def timed(fn: Any, min_s: float) -> float:
    """Seconds per call: one warm call, then calls until ``min_s`` has passed."""
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        el = time.perf_counter() - t0
        if el >= min_s:
            return el / n


def make_detector(embedder: Any, normalizer: Any, seed: Any, rng: Any) -> Any:
    from streamer.artifact import ModelArtifact
    from streamer.config import DetectorConfig, StreamerConfig
    from streamer.detector import Detector

    m = len(seed)
    art = ModelArtifact(
        name="bench", version="bench", path=Path("."), embedder=embedder, normalizer=normalizer,
        reservoir_seed=seed, calibration=rng.gamma(2.0, 1.0, 2000),
        scoring={"k": 10, "recon_weight": 0.5, "knn_scale": 1.0, "recon_scale": 1.0,
                 "feature_error_scale": [1.0] * embedder.n_inputs},  # read by detectors that have it
        config=StreamerConfig(),
        card={},
    )
    return Detector(art, DetectorConfig(reservoir_size=m))


def flow_model(n_queries: int, n_pool: int, meta: dict[str, Any], members: int = 1) -> tuple[Any, Any, Any, Any]:
    """Train a record-window model on synthetic flows (as the e2e benchmark does); return its
    embedder and normalizer, ``n_queries`` windows to score and ``n_pool`` other windows whose
    embeddings fill the reservoirs."""
    from streamer.artifact import load_artifact_dir
    from streamer.config import SchemaConfig
    from streamer.decode import Decoder

    tmp = bl.workdir()
    t0 = time.monotonic()
    path = bl.train_flow_model(bl.FlowGen(5_000, seed=1).records(50_000), window=bl.WINDOWS["record"],
                               model_dir=tmp / "models", epochs=10, extra={"model.members": members})
    model = load_artifact_dir(path)
    meta["train_seconds"] = round(time.monotonic() - t0, 1)
    decoder = Decoder(SchemaConfig(**bl.DEMO_SCHEMA))
    events, _, _ = decoder.decode(bl.FlowGen(5_000, seed=2).records(n_queries + n_pool))
    return model.embedder, model.normalizer, events.x[:n_queries], events.x[n_queries:]


def _blas_threads() -> Any:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return [{"api": i.get("internal_api"), "threads": i.get("num_threads")} for i in threadpool_info()]


def _devices(backend: str) -> list[str]:
    """The devices the backend computes on (``cpu`` alone on a machine without an accelerator)."""
    if backend == "jax":
        import jax

        return [f"{d.platform}:{getattr(d, 'device_kind', '')}" for d in jax.devices()]
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return [f"gpu:{g.name}" for g in gpus] or ["cpu"]
    return [backend]


def main(argv: list[str] | None = None) -> int:
    p = bl.parser(__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true",
                   help=f"full grid: batches {FULL_BATCHES}, reservoirs {FULL_RESERVOIRS} (default grid: "
                        f"batches {DEFAULT_BATCHES}, reservoirs {DEFAULT_RESERVOIRS})")
    p.add_argument("--batches", default=None, help="batch sizes, comma separated (overrides the grid)")
    p.add_argument("--reservoirs", default=None, help="reservoir sizes, comma separated (overrides the grid)")
    p.add_argument("--data", choices=["flows", "gaussian"], default="flows",
                   help="flows: a model trained on synthetic flows, their embeddings in the reservoirs; gaussian: "
                        "untrained model, reservoirs of 8-d normal noise (a k-d tree's worst case)")
    p.add_argument("--features", type=int, default=13,
                   help="--data gaussian: window features (13 = the flow schema's record windows: 5 numeric + 2 x 4 "
                        "buckets)")
    p.add_argument("--members", type=int, default=1,
                   help="autoencoders in the model (model.members): what an ensemble costs per window")
    p.add_argument("--min-seconds", type=float, default=0.3, help="timing per cell and round: calls until this long")
    p.add_argument("--repeats", type=int, default=3, help="rounds over the whole grid; each cell keeps its best")
    p.add_argument("--max-entries", type=float, default=1.5e8,
                   help="largest b x m kNN distance matrix timed whole; larger ones on a subset of queries")
    p.add_argument("--json", metavar="FILE", default=None, help="write the figures as JSON to FILE")
    args = p.parse_args(argv)
    batches = [int(x) for x in args.batches.split(",")] if args.batches else (
        FULL_BATCHES if args.full else DEFAULT_BATCHES)
    reservoirs = [int(x) for x in args.reservoirs.split(",")] if args.reservoirs else (
        FULL_RESERVOIRS if args.full else DEFAULT_RESERVOIRS)

    from streamer.embed import Embedder, build_autoencoder, keras
    from streamer.normalize import Normalizer
    from streamer.score import BLOCK_ENTRIES, Reservoir

    backend = str(keras.backend.backend())
    meta = {**bl.machine_meta(), "blas_threads": _blas_threads(), "keras_backend": backend, "keras": keras.__version__,
            "devices": _devices(backend), "features": args.features,
            "hidden": [64, 32], "latent_dim": 8, "members": args.members, "k": 10, "batches": batches,
            "reservoirs": reservoirs}
    bl.say(f"model: keras backend {backend} on {', '.join(meta['devices'])}, {args.features} features, "
           f"batches {batches}, reservoirs {reservoirs}, {meta['cores']} cores, "
           f"load {meta['load_avg_at_start']}")
    rng = np.random.default_rng(0)
    if args.data == "flows":
        embedder, normalizer, x_all, x_pool = flow_model(max(batches), max(reservoirs), meta, args.members)
    else:
        embedder = Embedder(build_autoencoder(args.features, hidden=[64, 32], latent_dim=8, noise_std=0.1, seed=7,
                                              members=args.members))
        x_all = rng.lognormal(2.0, 1.0, size=(max(batches), args.features))
        normalizer = Normalizer.fit(x_all[:5000], [f"f{i}" for i in range(args.features)])
        x_pool = None
    meta["data"] = args.data
    xn_all = normalizer.transform(x_all)
    z_pool = embedder.embed(normalizer.transform(x_pool))[0] if x_pool is not None else None

    def reservoir_data(m: int) -> Any:
        if z_pool is not None:
            return z_pool[:m].astype(np.float32)
        return rng.normal(size=(m, embedder.latent_dim)).astype(np.float32)

    # Trace the compiled call for every padded size first (a running detector has).
    from workers import warm_up

    warm_up(embedder)

    # Every cell is timed in each of ``--repeats`` rounds over the whole grid and its best (least)
    # time kept: on a shared machine the other load comes and goes, and interleaving the rounds
    # keeps a burst of it from landing on one reservoir size only (which would skew the ratios).
    z_all, _ = embedder.embed(xn_all)
    stores = {}
    for m in reservoirs:
        res = Reservoir(m, embedder.latent_dim, seed=1)
        res.add(reservoir_data(m))
        stores[m] = res
    dets: dict[int, Any] = {}
    plan: list[tuple[str, int, int, int, Any]] = []  # (what, batch, reservoir, queries timed, call)
    for b in batches:
        plan.append(("embed", b, 0, b, lambda b=b: embedder.embed(xn_all[:b])))
    for m in reservoirs:
        step = max(1, BLOCK_ENTRIES // m)
        for b in batches:
            q = b
            if b * m > args.max_entries and b > step:  # time whole blocks only, then scale
                q = max(step, int(args.max_entries // m) // step * step)
            plan.append(("knn", b, m, q, lambda m=m, q=q: stores[m].knn(z_all[:q], 10)))
            if b * m <= args.max_entries:
                if m not in dets:
                    dets[m] = make_detector(embedder, normalizer, reservoir_data(m), rng)
                plan.append(("detector", b, m, b, lambda m=m, b=b: dets[m].score(x_all[:b])))
    best: dict[tuple[str, int, int], float] = {}
    for r in range(args.repeats):
        t0 = time.monotonic()
        for what, b, m, q, call in plan:
            t = timed(call, args.min_seconds) * (b / q)
            best[(what, b, m)] = min(best.get((what, b, m), float("inf")), t)
        bl.say(f"  round {r + 1}/{args.repeats}: {len(plan)} cells in {time.monotonic() - t0:.0f}s")
    embed_s = {b: best[("embed", b, 0)] for b in batches}

    cells: list[dict[str, Any]] = []
    for m in reservoirs:
        step = max(1, BLOCK_ENTRIES // m)
        for b in batches:
            t_knn = best[("knn", b, m)]
            q = next(pq for what, pb, pm, pq, _ in plan if (what, pb, pm) == ("knn", b, m))
            cell = {"batch": b, "reservoir": m, "embed_samples_per_s": b / embed_s[b],
                    "knn_samples_per_s": b / t_knn, "knn_queries_timed": q}
            if ("detector", b, m) in best:
                t_det = best[("detector", b, m)]
                cell["detector_estimated"] = False
            else:
                m0 = next((mm for mm in reservoirs if ("detector", b, mm) in best), None)
                t_det = (float("nan") if m0 is None
                         else best[("detector", b, m0)] - best[("knn", b, m0)] + t_knn)
                cell["detector_estimated"] = True
            cell["detector_samples_per_s"] = b / t_det
            cells.append(cell)

    ratios = {}
    for b in batches:
        c10 = next((c for c in cells if c["batch"] == b and c["reservoir"] == 10_000), None)
        c100 = next((c for c in cells if c["batch"] == b and c["reservoir"] == 100_000), None)
        if c10 and c100:
            ratios[str(b)] = {
                "knn": round(c10["knn_samples_per_s"] / c100["knn_samples_per_s"], 2),
                "detector": round(c10["detector_samples_per_s"] / c100["detector_samples_per_s"], 2),
            }
    report = {"cells": cells, "embed_samples_per_s": {str(b): b / embed_s[b] for b in batches},
              "cost_ratio_100k_vs_10k": ratios,
              "meta": {**meta, "notes": [
                  ("samples/s = batch size / wall seconds per call (best of the rounds), one process, BLAS and "
                  "TF threads at their defaults (OPENBLAS_NUM_THREADS etc. in the environment apply)"),
                  "cost_ratio_100k_vs_10k: time per sample with a 100k reservoir / with 10k (target < 2)",
                  "cells with detector_estimated: see the module docstring",
              ]}}
    print_report(report, batches, reservoirs)
    bl.write_json(args.json, report)
    return 0


def print_report(r: dict[str, Any], batches: list[int], reservoirs: list[int]) -> None:
    print(f"\nkeras backend: {r['meta']['keras_backend']}\n\nsamples/s (embed alone | knn alone | detector.score), "
          "per batch size and reservoir size")
    header = ["batch", "embed"] + [f"knn m={m:,}" for m in reservoirs] + [f"detector m={m:,}" for m in reservoirs]
    rows = []
    for b in batches:
        row = [f"{b:,}", bl.fmt_int(r["embed_samples_per_s"][str(b)])]
        cs = {c["reservoir"]: c for c in r["cells"] if c["batch"] == b}
        row += [bl.fmt_int(cs[m]["knn_samples_per_s"]) + ("*" if cs[m]["knn_queries_timed"] < b else "")
                for m in reservoirs]
        row += [bl.fmt_int(cs[m]["detector_samples_per_s"]) + (" est" if cs[m]["detector_estimated"] else "")
                for m in reservoirs]
        rows.append(row)
    print(bl.table(rows, header))
    print("* timed on a subset of the queries and scaled (whole blocks); est: estimated, see --help")
    if r["cost_ratio_100k_vs_10k"]:
        print("\ncost of a 100k reservoir vs 10k (time per sample ratio; target < 2x):")
        for b, v in r["cost_ratio_100k_vs_10k"].items():
            print(f"  batch {int(b):>6,}: knn {v['knn']:.1f}x, detector.score {v['detector']:.1f}x")


if __name__ == "__main__":
    sys.exit(main())
