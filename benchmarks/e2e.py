"""End-to-end throughput through a real Kafka broker: the detector against a decode-only ceiling
and against River HalfSpaceTrees on the same topic.

Steps: pre-load N network-flow-like JSON events (keyed by entity) into a fresh topic; train a small
model with ``streamer.train.train_model`` on a separate slice of the same kind of events; then run,
one after another, each in its own process and its own fresh consumer group on that same topic:

  ceiling    consume + orjson decode + per-batch synchronous commit (nothing else);
  streamer   the real detector, as ``streamer run --until-end`` runs it (the same Runner);
  river-hst  the same consume + decode + commit, River HalfSpaceTrees per event, alerts produced.

For each: events/s (first message to last commit), CPU seconds per million events (the process's
own getrusage over the loop, all threads), peak RSS. Then streamer/ceiling and streamer/river-hst.

    .venv/bin/python benchmarks/e2e.py --events 300000 --json out/bench-e2e.json
"""

from __future__ import annotations

import pstats
import sys
from pathlib import Path
from typing import Any

import benchlib as bl


def main(argv: list[str] | None = None) -> int:
    p = bl.parser(__doc__.split("\n\n")[0])
    bl.add_kafka_args(p)
    p.add_argument("--events", type=int, default=1_000_000, help="events pre-loaded into the topic (N)")
    p.add_argument("--entities", type=int, default=5_000, help="distinct entities (src_host) in the events")
    p.add_argument("--partitions", type=int, default=3, help="partitions of the input topic")
    p.add_argument("--window", choices=sorted(bl.WINDOWS), default="record",
                   help="window kind of the trained model: record = every flow scored on its own (what a user "
                        "scoring flow records runs, and the only kind where ours and HST score the same "
                        "samples); time = 10 s per host; count = last 4 flows of a host every 2")
    p.add_argument("--train-events", type=int, default=50_000, help="events of the training slice")
    p.add_argument("--epochs", type=int, default=10, help="most training epochs (early stopping)")
    p.add_argument("--hst-events", type=int, default=50_000,
                   help="events river-hst processes (a subsample of N, extrapolated: per-event cost is flat)")
    p.add_argument("--hst-train-events", type=int, default=20_000,
                   help="rows of the training slice used for HST's limits and threshold")
    p.add_argument("--alpha", type=float, default=0.001, help="target false-alarm rate (ours and HST's threshold)")
    p.add_argument("--batch-size", type=int, default=2000, help="kafka.batch_size for every contender")
    p.add_argument("--only", default="ceiling,streamer,river-hst", help="contenders to run, comma separated")
    p.add_argument("--profile", metavar="FILE.prof", default=None,
                   help="after the measured runs, run streamer once more under cProfile (fresh group), save "
                        "the stats here and print where the time goes (not used for the figures)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic events")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (model, worker files)")
    args = p.parse_args(argv)
    only = [c.strip() for c in args.only.split(",") if c.strip()]

    tmp = bl.workdir(args.keep)
    meta: dict[str, Any] = {**bl.machine_meta(), "N": args.events, "entities": args.entities,
                            "partitions": args.partitions, "window": args.window, "batch_size": args.batch_size,
                            "alpha": args.alpha, "workdir": str(tmp)}
    bl.say(f"e2e: N={args.events:,} events, {args.entities:,} entities, {args.partitions} partitions, "
           f"window={args.window}, {meta['cores']} cores, load {meta['load_avg_at_start']}")

    # 1. data generator and model
    gen = bl.FlowGen(args.entities, seed=args.seed)
    train_gen = bl.FlowGen(args.entities, seed=args.seed + 1)
    train_records = train_gen.records(args.train_events)
    t0 = bl.time.monotonic()
    model_path = bl.train_flow_model(train_records, window=bl.WINDOWS[args.window], model_dir=tmp / "models",
                                     epochs=args.epochs, extra={"detector.alpha": args.alpha})
    meta["train_seconds"] = round(bl.time.monotonic() - t0, 1)
    meta["model"] = str(model_path)
    bl.say(f"trained {args.window}-window model on {args.train_events:,} events in {meta['train_seconds']}s")
    # HST: the same decoded features of (part of) the training slice, for its limits and threshold.
    from streamer.config import SchemaConfig
    from streamer.decode import Decoder

    schema = SchemaConfig(**bl.DEMO_SCHEMA)
    ev, _, _ = Decoder(schema).decode(train_records[: args.hst_train_events])
    train_features = tmp / "hst-train.npy"
    bl.np.save(train_features, ev.x)

    results: dict[str, dict[str, Any]] = {}
    with bl.kafka(args) as bootstrap:
        topic = bl.unique("bench.e2e.events")
        bl.create_topic(bootstrap, topic, args.partitions)
        secs = bl.preload(bootstrap, topic, gen, args.events)
        meta["preload_events_per_s"] = round(args.events / secs)
        bl.say(f"pre-loaded {args.events:,} events into {topic} in {secs:.1f}s ({args.events / secs:,.0f}/s)")
        broker_pid = None if args.bootstrap_servers else bl.local_broker_pid(args.port)
        created = [topic]

        def run(kind: str, expected: int, **extra: Any) -> dict[str, Any]:
            alerts = bl.unique(f"bench.e2e.{kind}.alerts")
            spec = {"bootstrap": bootstrap, "topic": topic, "group": bl.unique(f"bench-e2e-{kind}"),
                    "alerts_topic": alerts, "dlq_topic": alerts + ".dlq", "expected": expected,
                    "batch_size": args.batch_size, "alpha": args.alpha, **extra}
            created.extend([alerts, alerts + ".dlq"])
            w = bl.Worker("streamer" if kind.startswith("streamer") else kind, spec, tmp)
            w.wait_ready()
            b0 = bl.proc_cpu_s(broker_pid) if broker_pid else float("nan")
            out = w.wait()
            out["broker_cpu_s"] = (bl.proc_cpu_s(broker_pid) - b0) if broker_pid else None
            return out

        for kind in ("ceiling", "streamer", "river-hst"):
            if kind not in only:
                continue
            bl.say(f"running {kind} ...")
            if kind == "ceiling":
                out = run(kind, args.events)
            elif kind == "streamer":
                out = run(kind, args.events, model_path=str(model_path),
                          overrides={"kafka.batch_size": args.batch_size})
            else:
                out = run(kind, min(args.hst_events, args.events), schema=bl.DEMO_SCHEMA,
                          train_features=str(train_features))
            results[kind] = out
            bl.say(f"  {kind}: {out['events']:,} events in {out['seconds']:.1f}s = "
                   f"{out['events'] / max(out['seconds'], 1e-9):,.0f} events/s, CPU {out['cpu_s']:.1f}s, "
                   f"peak RSS {out['peak_rss_mb']:.0f} MB")

        if args.profile:
            bl.say("profiling streamer (cProfile; slower than the measured run) ...")
            Path(args.profile).resolve().parent.mkdir(parents=True, exist_ok=True)
            try:
                results_prof = run("streamer-profile", args.events, model_path=str(model_path),
                                   overrides={"kafka.batch_size": args.batch_size},
                                   profile=str(Path(args.profile).resolve()))
                meta["profile"] = {"file": args.profile, "events_per_s_under_profiler":
                                   round(results_prof["events"] / max(results_prof["seconds"], 1e-9))}
            except Exception as exc:  # noqa: BLE001 - the measured figures stand without the profile
                meta["profile"] = {"file": args.profile, "error": str(exc)}
                bl.say(f"  profile run failed: {exc}")
        if args.bootstrap_servers:
            bl.delete_topics(bootstrap, created)

    report = build_report(results, meta, args)
    print_report(report, results)
    if args.profile and "error" not in meta["profile"]:
        print_profile(args.profile)
    bl.write_json(args.json, report)
    return 0


def _figures(out: dict[str, Any]) -> dict[str, float]:
    n = max(out["events"], 1)
    return {
        "events_per_s": round(out["events"] / max(out["seconds"], 1e-9), 1),
        "cpu_s_per_million": round(out["cpu_s"] / n * 1e6, 2),
        "peak_rss_mb": round(out["peak_rss_mb"], 1),
    }


def build_report(results: dict[str, dict[str, Any]], meta: dict[str, Any], args: Any) -> dict[str, Any]:
    report: dict[str, Any] = {k: _figures(v) for k, v in results.items()}
    s = report.get("streamer", {}).get("events_per_s")
    c = report.get("ceiling", {}).get("events_per_s")
    h = report.get("river-hst", {}).get("events_per_s")
    report["ratios"] = {
        "streamer_vs_ceiling": round(s / c, 4) if s and c else None,
        "streamer_vs_river_hst": round(s / h, 2) if s and h else None,
    }
    # The same comparison in CPU per event, which the other load on a shared machine disturbs less
    # than events/s (each contender runs at a different moment).
    cs = report.get("streamer", {}).get("cpu_s_per_million")
    cc = report.get("ceiling", {}).get("cpu_s_per_million")
    ch = report.get("river-hst", {}).get("cpu_s_per_million")
    meta["cpu_cost_ratios"] = {
        "ceiling_vs_streamer": round(cc / cs, 4) if cs and cc else None,
        "river_hst_vs_streamer": round(ch / cs, 3) if cs and ch else None,
    }
    notes = [
        f"window kind {args.window}: " + ("every event is one sample for the model"
                                          if args.window == "record" else "the model scores windows, not events"),
        ("events_per_s: events over the time from the first message read to the last batch committed "
        "(alerts acknowledged first); each contender in its own process, fresh consumer group, same topic"),
        ("cpu_s_per_million: user+system CPU of the contender's process over that loop (all its threads), per "
        "million events; the broker's CPU is not included (see details.*.broker_cpu_s)"),
        "peak_rss_mb: the contender process's peak RSS (VmHWM), start-up and model included",
        ("CPU share: the contender's CPU seconds / its seconds (below 1 on a busy 2-core machine: it waited "
        "for the broker or for other processes)"),
        ("streamer: the compiled model was traced for batch sizes 64..8192 before the clock started "
        "(details.streamer.warmup_s)"),
    ]
    if "river-hst" in results:
        hst = results["river-hst"]
        notes.append(
            f"river-hst ran on the first {hst['events']:,} of the {args.events:,} events and is extrapolated: "
            f"its per-event cost does not depend on N (fixed trees and window); at its rate N would take "
            f"{args.events / max(report['river-hst']['events_per_s'], 1e-9):,.0f}s")
    details = {k: {kk: vv for kk, vv in v.items() if kk != "samples"} for k, v in results.items()}
    return {**report, "meta": {**meta, "notes": notes, "details": details}}


def print_report(report: dict[str, Any], results: dict[str, dict[str, Any]]) -> None:
    rows = []
    for k in ("ceiling", "streamer", "river-hst"):
        if k not in results:
            continue
        f, d = report[k], results[k]
        rows.append([k, bl.fmt_int(d["events"]), bl.fmt(d["seconds"], 1), bl.fmt_int(f["events_per_s"]),
                     bl.fmt(f["cpu_s_per_million"], 1), bl.fmt(d["cpu_s"] / max(d["seconds"], 1e-9), 2),
                     bl.fmt_int(f["peak_rss_mb"]), bl.fmt(d.get("broker_cpu_s"), 1)])
    print("\n" + bl.table(rows, ["contender", "events", "seconds", "events/s", "CPU s/M events", "CPU share",
                                 "peak RSS MB", "broker CPU s"]))
    r = report["ratios"]
    print()
    if r["streamer_vs_ceiling"] is not None:
        print(f"streamer / ceiling   events/s: {r['streamer_vs_ceiling']:.3f}x   (target >= 0.5x)")
    if r["streamer_vs_river_hst"] is not None:
        print(f"streamer / river-hst events/s: {r['streamer_vs_river_hst']:.1f}x   (target >= 50x)")
    cr = report["meta"]["cpu_cost_ratios"]
    if cr["ceiling_vs_streamer"] is not None or cr["river_hst_vs_streamer"] is not None:
        print(f"in CPU per event (less disturbed by other load): streamer costs {bl.fmt(1 / cr['ceiling_vs_streamer'], 1) if cr['ceiling_vs_streamer'] else '-'}x "
              f"the ceiling and {bl.fmt(1 / cr['river_hst_vs_streamer'], 2) if cr['river_hst_vs_streamer'] else '-'}x river-hst")
    if "streamer" in results:
        s = results["streamer"]
        print(f"streamer: {s['windows']:,} windows ({s['window']}), {s['alerts']:,} alerts, "
              f"{s['dead_letters']} dead letters, {s['batches']:,} batches, warm-up {s['warmup_s']:.1f}s")
    for n in report["meta"]["notes"]:
        print(f"note: {n}")


# Stages of the detector loop, for the summary of the profile: (label, file suffix, function).
STAGES = [
    ("Runner.run (whole loop)", "streamer/runner.py", "run"),
    ("consume (librdkafka, waiting included)", "~", "<method 'consume' of 'cimpl.Consumer' objects>"),
    ("messages to a record batch", "streamer/kafka_io.py", "split_messages"),
    ("decode", "streamer/decode.py", "decode"),
    ("window push", "streamer/window.py", "push"),
    ("detector.score", "streamer/detector.py", "score"),
    ("  normalize", "streamer/normalize.py", "transform"),
    ("  embed (Keras)", "streamer/embed.py", "embed"),
    ("  kNN (k-d tree, pending block)", "streamer/score.py", "knn"),
    ("  reservoir add", "streamer/score.py", "add"),
    ("build_alerts", "streamer/alert.py", "build_alerts"),
    ("producer flush (acks)", "~", "<method 'flush' of 'cimpl.Producer' objects>"),
    ("commit", "streamer/runner.py", "_commit"),
    ("_at_end checks", "streamer/runner.py", "_at_end"),
]


def print_profile(path: str, top: int = 25) -> None:
    st = pstats.Stats(path)
    by = {}
    for (fname, _line, func), (_cc, _nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        by.setdefault((fname, func), [0.0, 0.0])
        by[(fname, func)][0] += tt
        by[(fname, func)][1] += ct
    total = next((v[1] for (f, fn), v in by.items() if f.endswith("streamer/runner.py") and fn == "run"), None)
    print(f"\nwhere the time of streamer goes (cProfile, cumulative seconds; {path})")
    rows = []
    for label, suffix, func in STAGES:
        ct = sum(v[1] for (f, fn), v in by.items() if fn == func and (f == suffix or f.endswith(suffix)))
        rows.append([label, bl.fmt(ct, 2), f"{ct / total:.0%}" if total else "-"])
    print(bl.table(rows, ["stage", "seconds", "share"]))
    print(f"\nprofile of streamer: top {top} by own time")
    st.stream = sys.stdout  # type: ignore[attr-defined]
    st.sort_stats("tottime").print_stats(top)
    print(f"top {top} by cumulative time")
    st.sort_stats("cumulative").print_stats(top)


if __name__ == "__main__":
    sys.exit(main())
