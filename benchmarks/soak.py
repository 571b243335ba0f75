"""Soak: many events over many distinct entities through the real detector; does memory level off
and does throughput hold?

The events sweep the entity space: at any time about ``--active`` entities are sending, and the
window of active entities moves so that every one of ``--entities`` entities appears, lives a while
and goes idle (churn, as hosts and flows do). The model uses per-entity windows (count windows by
default: the last 4 flows of an entity every 2, so state exists per entity between events), and the
detector runs with ``window.idle_timeout_s`` / ``window.max_entities`` so idle entities must be
evicted. All events are pre-loaded, then the detector (the Runner of ``streamer run``, own process)
reads them to the end while a thread samples its RSS, records done, open entities and CPU.

Reported: RSS over time and its slope (MB per million events) in the first and the last half, the
throughput per interval (events/s, and events per CPU-second, which the other load on the machine
disturbs less) in the first and the last quarter, and open entity state over time.

    .venv/bin/python benchmarks/soak.py --events 200000 --entities 20000 --json out/bench-soak-quick.json
"""

from __future__ import annotations

import itertools
import math
import sys
from typing import Any

import benchlib as bl


def main(argv: list[str] | None = None) -> int:
    p = bl.parser(__doc__.split("\n\n")[0])
    bl.add_kafka_args(p)
    p.add_argument("--events", type=int, default=10_000_000, help="events through the detector")
    p.add_argument("--entities", type=int, default=1_000_000, help="distinct entities over the whole run")
    p.add_argument("--active", type=int, default=None,
                   help="entities sending at any time (default: entities / 50, at least 100)")
    p.add_argument("--event-rate", type=float, default=1_000.0,
                   help="event-time rate of the stream, events per second of event time (10M events span "
                        "~2.8 h of event time; idle timeouts are in event time)")
    p.add_argument("--window", choices=["count", "time"], default="count",
                   help="count: last 4 flows of an entity every 2 (state per entity until evicted); time: "
                        "10 s tumbling windows per entity (state until the window closes)")
    p.add_argument("--idle-timeout-s", type=float, default=60.0, help="window.idle_timeout_s of the detector")
    p.add_argument("--max-entities", type=int, default=200_000, help="window.max_entities of the detector")
    p.add_argument("--partitions", type=int, default=3, help="partitions of the input topic")
    p.add_argument("--train-events", type=int, default=100_000, help="events of the training slice")
    p.add_argument("--epochs", type=int, default=5, help="most training epochs (early stopping)")
    p.add_argument("--sample-s", type=float, default=2.0, help="sampling interval of RSS and progress")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic events")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    active = args.active or max(100, args.entities // 50)

    tmp = bl.workdir(args.keep)
    meta: dict[str, Any] = {**bl.machine_meta(), "events": args.events, "entities": args.entities, "active": active,
                            "event_rate": args.event_rate, "window": args.window,
                            "idle_timeout_s": args.idle_timeout_s, "max_entities": args.max_entities,
                            "partitions": args.partitions}
    span_s = args.events / args.event_rate
    life_s = active / args.entities * span_s
    bl.say(f"soak: {args.events:,} events over {args.entities:,} entities (~{active:,} active at a time, each "
           f"active ~{life_s:,.0f}s of the {span_s:,.0f}s event-time span), {args.window} windows, idle timeout "
           f"{args.idle_timeout_s:g}s, max entities {args.max_entities:,}; {meta['cores']} cores, load "
           f"{meta['load_avg_at_start']}")

    gen = bl.FlowGen(args.entities, seed=args.seed, event_rate=args.event_rate, active=active, total=args.events)
    # Training slice with the same events per entity (so count windows fill the same way).
    n_train = min(args.train_events, args.events)
    train_entities = max(60, int(args.entities * n_train / args.events))
    train_gen = bl.FlowGen(train_entities, seed=args.seed + 1, event_rate=args.event_rate)
    model_path = bl.train_flow_model(train_gen.records(n_train), window=bl.WINDOWS[args.window],
                                     model_dir=tmp / "models", epochs=args.epochs)
    bl.say(f"trained a {args.window}-window model on {n_train:,} events ({train_entities:,} entities)")

    with bl.kafka(args) as bootstrap:
        topic = bl.unique("bench.soak.events")
        bl.create_topic(bootstrap, topic, args.partitions)
        secs = bl.preload(bootstrap, topic, gen, args.events)
        bl.say(f"pre-loaded {args.events:,} events in {secs:.0f}s; running the detector ...")
        alerts = topic + ".alerts"
        spec = {"bootstrap": bootstrap, "topic": topic, "group": bl.unique("bench-soak"), "alerts_topic": alerts,
                "dlq_topic": alerts + ".dlq", "model_path": str(model_path), "until_end": True,
                "sample_s": args.sample_s,
                "window_overrides": {"window.idle_timeout_s": args.idle_timeout_s,
                                     "window.max_entities": args.max_entities}}
        out = bl.Worker("streamer", spec, tmp).wait()
        if args.bootstrap_servers:
            bl.delete_topics(bootstrap, [topic, alerts, alerts + ".dlq"])

    report = analyse(out, meta)
    print_report(report)
    bl.write_json(args.json, report)
    return 0


def analyse(out: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    s = [x for x in out["samples"] if x["records"] > 0][:-1] or out["samples"]  # last: after close (state dropped)
    total = out["events"]
    # Throughput per sampling interval.
    iv = []
    for a, b in itertools.pairwise(s):
        dt, dn, dc = b["t"] - a["t"], b["records"] - a["records"], b["cpu_s"] - a["cpu_s"]
        if dt > 0:
            iv.append({"t": b["t"], "records": b["records"], "events_per_s": dn / dt,
                       "events_per_cpu_s": dn / dc if dc > 0 else float("nan"), "cpu_share": dc / dt})
    # Quarters of the run by events processed. RSS swings by the size of one batch's temporaries
    # (the kNN distance blocks are tens of MB), so each quarter's min/median/max is compared, not
    # single samples.
    med = lambda xs: float(bl.np.nanmedian(xs)) if len(xs) else float("nan")  # noqa: E731
    quarters = []
    for k in range(4):
        lo, hi = total * k / 4, total * (k + 1) / 4
        qs = [x for x in s if lo < x["records"] <= hi]
        qi = [x for x in iv if lo < x["records"] <= hi]
        rss = [x["rss_mb"] for x in qs]
        quarters.append({
            "events_to": int(hi), "samples": len(qs),
            "rss_min_mb": min(rss, default=float("nan")), "rss_median_mb": med(rss),
            "rss_max_mb": max(rss, default=float("nan")),
            "open_entities_max": max((x["entities"] for x in qs), default=0),
            "events_per_s": med([x["events_per_s"] for x in qi]),
            "events_per_cpu_s": med([x["events_per_cpu_s"] for x in qi]),
            "cpu_share": med([x["cpu_share"] for x in qi]),
        })
    q2, q4, q1 = quarters[1], quarters[3], quarters[0]
    growth_median = q4["rss_median_mb"] - q2["rss_median_mb"]
    growth_max = q4["rss_max_mb"] - q2["rss_max_mb"]
    allowed = max(10.0, 0.02 * q2["rss_median_mb"])
    flat = bool(not math.isnan(growth_median) and growth_median < allowed and growth_max < allowed)
    per_m = lambda xs: bl.slope([x["records"] / 1e6 for x in xs], [x["rss_mb"] for x in xs])  # noqa: E731
    ratio_cpu = q4["events_per_cpu_s"] / q1["events_per_cpu_s"] if q1["events_per_cpu_s"] else float("nan")
    ratio_wall = q4["events_per_s"] / q1["events_per_s"] if q1["events_per_s"] else float("nan")
    return {
        "events": total,
        "seconds": out["seconds"],
        "events_per_s": total / max(out["seconds"], 1e-9),
        "cpu_s_per_million": out["cpu_s"] / max(total, 1) * 1e6,
        "peak_rss_mb": out["peak_rss_mb"],
        "rss": {
            "before_loop_mb": out["rss_before_loop_mb"],
            "slope_first_half_mb_per_million": per_m([x for x in s if x["records"] <= total / 2]),
            "slope_last_half_mb_per_million": per_m([x for x in s if x["records"] > total / 2]),
            "growth_q2_to_q4_median_mb": growth_median, "growth_q2_to_q4_max_mb": growth_max,
            "levels_off": flat,
        },
        "throughput": {
            "last_vs_first_quarter_events_per_s": ratio_wall,
            "last_vs_first_quarter_events_per_cpu_s": ratio_cpu,
            "decays": bool(not math.isnan(ratio_cpu) and ratio_cpu < 0.8),
        },
        "quarters": quarters,
        "entities": {"max_open": max((x["entities"] for x in s), default=0),
                     "open_before_close": s[-1]["entities"] if s else None,
                     "unwindowed_events": out.get("unwindowed_events")},
        "windows": out["windows"], "alerts": out["alerts"], "dead_letters": out["dead_letters"],
        "samples": out["samples"], "intervals": iv,
        "meta": {**meta, "notes": [
            ("levels_off: from the 2nd to the 4th quarter of the events, the median and the max RSS grew by less "
            "than max(10 MB, 2% of the 2nd quarter's median RSS)"),
            ("decays: median events per CPU-second in the last quarter < 0.8 x the first quarter (per CPU-second "
            "because other work on this machine moves events/s; both are reported)"),
            ("RSS sampled from /proc/self/status by a thread in the detector process every sample_s; slopes are "
            "least-squares fits over the raw samples (noisy: batch temporaries)"),
        ]},
    }


def print_report(r: dict[str, Any]) -> None:
    rows = [[f"{i + 1} (to {q['events_to']:,})", bl.fmt_int(q["samples"]), bl.fmt_int(q["rss_min_mb"]),
             bl.fmt_int(q["rss_median_mb"]), bl.fmt_int(q["rss_max_mb"]), bl.fmt_int(q["open_entities_max"]),
             bl.fmt_int(q["events_per_s"]), bl.fmt_int(q["events_per_cpu_s"]), bl.fmt(q["cpu_share"], 2)]
            for i, q in enumerate(r["quarters"])]
    print("\nper quarter of the events")
    print(bl.table(rows, ["quarter", "samples", "RSS min", "RSS median", "RSS max", "open entities",
                          "events/s", "events/CPU-s", "CPU share"]))
    rss, th, en = r["rss"], r["throughput"], r["entities"]
    print(f"\n{r['events']:,} events in {r['seconds']:.0f}s = {r['events_per_s']:,.0f} events/s, "
          f"{r['cpu_s_per_million']:.0f} CPU s per million, peak RSS {r['peak_rss_mb']:.0f} MB "
          f"({rss['before_loop_mb']:.0f} MB before the loop); {r['windows']:,} windows, {r['alerts']:,} alerts")
    print(f"RSS growth from quarter 2 to 4: median {bl.fmt(rss['growth_q2_to_q4_median_mb'], 1)} MB, max "
          f"{bl.fmt(rss['growth_q2_to_q4_max_mb'], 1)} MB (slopes {bl.fmt(rss['slope_first_half_mb_per_million'], 1)} "
          f"-> {bl.fmt(rss['slope_last_half_mb_per_million'], 1)} MB per million events, 1st -> 2nd half) -> "
          f"levels off: {rss['levels_off']}")
    print(f"throughput last vs first quarter: {bl.fmt(th['last_vs_first_quarter_events_per_s'], 2)}x events/s, "
          f"{bl.fmt(th['last_vs_first_quarter_events_per_cpu_s'], 2)}x events per CPU-second -> decays: {th['decays']}")
    print(f"open entities: max {en['max_open']:,}, {en['open_before_close']:,} before the consumer closed; events "
          f"of entities evicted before a full window: {en['unwindowed_events']}")
    for n in r["meta"]["notes"]:
        print(f"note: {n}")


if __name__ == "__main__":
    sys.exit(main())
