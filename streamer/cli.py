"""The ``streamer`` command: train, run, retrain, models, replay, demo, eval, config.

Every option that maps to a config field shows its environment variable in ``--help``. Bad use
prints one line naming the option or field and what is expected, and exits with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from streamer import __version__
from streamer.config import ENV_PREFIX, StreamerConfig, load_config, reference_markdown
from streamer.errors import ArtifactError, BrokerError, ConfigError, StreamerError

__all__ = ["main", "build_parser"]

log = logging.getLogger("streamer")

# Named flags: (flag, config field, help). Each also accepts the field's environment variable.
_COMMON_FIELDS = [
    ("--bootstrap-servers", "kafka.bootstrap_servers", "Kafka bootstrap servers"),
]
_RUN_FIELDS = [
    ("--input-topics", "topics.input", "input topics, comma separated"),
    ("--alert-topic", "topics.alerts", "alert topic"),
    ("--dead-letter-topic", "topics.dead_letter", "dead-letter topic"),
    ("--group-id", "kafka.group_id", "consumer group"),
    ("--alpha", "detector.alpha", "target false-alarm rate"),
    ("--model-dir", "model.dir", "model artifacts directory"),
    ("--model-name", "model.name", "model name"),
    ("--model-version", "model.version", "model version (default: newest)"),
]
_RETRAIN_FIELDS = [
    ("--input-topics", "topics.input", "input topics, comma separated"),
    ("--models-topic", "topics.models", "compacted topic of model announcements"),
    ("--group-id", "retrain.group_id", "consumer group of the retrainer"),
    ("--model-dir", "model.dir", "model artifacts directory"),
    ("--model-name", "model.name", "model name"),
    ("--interval-s", "retrain.interval_s", "retrain every this many seconds (0: off)"),
]
_MODELS_FIELDS = [
    ("--models-topic", "topics.models", "compacted topic of model announcements"),
    ("--model-dir", "model.dir", "model artifacts directory"),
    ("--model-name", "model.name", "model name"),
]
_TRAIN_FIELDS = [
    ("--model-dir", "model.dir", "model artifacts directory"),
    ("--model-name", "model.name", "model name"),
    ("--epochs", "model.epochs", "most training epochs"),
    ("--window", "window.kind", "record, count or time"),
]


def _env_name(dotted: str) -> str:
    section, name = dotted.split(".", 1)
    return f"{ENV_PREFIX}{section.upper()}__{name.upper()}"


def _add_fields(p: argparse.ArgumentParser, fields: list[tuple[str, str, str]]) -> None:
    for flag, dotted, text in fields:
        p.add_argument(flag, dest=f"field:{dotted}", metavar="VALUE",
                       help=f"{text} (config {dotted}; env {_env_name(dotted)})")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help=f"YAML config file (env {ENV_PREFIX}CONFIG)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override any config field, e.g. --set detector.k=20 (repeatable)")
    p.add_argument("--log-level", default=os.environ.get(ENV_PREFIX + "LOG_LEVEL", "INFO"),
                   help=f"logging level (env {ENV_PREFIX}LOG_LEVEL; default INFO)")
    _add_fields(p, _COMMON_FIELDS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamer", description="Streaming anomaly detection on Kafka.")
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("train", help="fit normalizer and autoencoder; write a model artifact")
    _common(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", metavar="FILE", help="training data: a .jsonl or .csv file")
    src.add_argument("--topic", metavar="TOPIC", help="training data: every event now in this Kafka topic")
    p.add_argument("--version-name", metavar="V", help="artifact version (default: a UTC timestamp)")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    _add_fields(p, _TRAIN_FIELDS)

    p = sub.add_parser("run", help="the detector: consume events, produce alerts")
    _common(p)
    p.add_argument("--until-end", action="store_true",
                   help="stop once every message now in the input partitions is processed (batch jobs, tests)")
    p.add_argument("--idle-flush-s", type=float, default=0.0, metavar="S",
                   help="close open windows after S seconds without input (default 0: never)")
    p.add_argument("--no-follow", action="store_true",
                   help="do not follow model announcements (config model.follow; hot swap off)")
    _add_fields(p, _RUN_FIELDS)

    p = sub.add_parser("retrain", help="the retrainer: keep recent normal windows, detect drift, retrain, gate, "
                                       "announce")
    _common(p)
    p.add_argument("--until-end", action="store_true",
                   help="stop once every message now in the input partitions is read (batch jobs, tests)")
    p.add_argument("--max-publications", type=int, metavar="N", help="stop after publishing N new versions")
    _add_fields(p, _RETRAIN_FIELDS)

    p = sub.add_parser("models", help="list, show, promote or roll back model versions")
    _common(p)
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    for name, text in (("list", "every version on disk and the announced one"),
                       ("show", "one version: checksum, data, training, validation and gate figures"),
                       ("promote", "announce a version (detectors hot-swap to it; a rejected one is moved in)"),
                       ("rollback", "announce the version announced before the current one")):
        mp = msub.add_parser(name, help=text)
        _common(mp)
        if name in ("show", "promote"):
            mp.add_argument("version", metavar="V", help="the version")
        if name in ("list", "show"):
            mp.add_argument("--offline", action="store_true", help="do not read the announcements from Kafka")
        if name == "show":
            mp.add_argument("--full", action="store_true", help="the whole model card")
        _add_fields(mp, _MODELS_FIELDS)

    p = sub.add_parser("replay", help="produce a JSONL or CSV dataset into a topic")
    _common(p)
    p.add_argument("file", metavar="FILE", help="a .jsonl or .csv file")
    p.add_argument("--topic", required=True, help="topic to produce into")
    p.add_argument("--rate", type=float, default=None, metavar="N", help="at most N events per second")
    p.add_argument("--entity-field", dest="field:schema.entity_field", metavar="FIELD",
                   help=f"message key field (config schema.entity_field; env {_env_name('schema.entity_field')})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("demo", help="train and detect on a synthetic flow stream through a local broker")
    _common(p)
    p.add_argument("--port", type=int, default=9092, help="port of the local broker the demo starts (default 9092)")
    p.add_argument("--summary-json", metavar="FILE", help="write the summary (precision, recall, ...) here")
    p.add_argument("--hosts", type=int, default=60, help="hosts in the synthetic network (default 60)")
    p.add_argument("--train-minutes", type=float, default=25.0, help="clean training part (default 25)")
    p.add_argument("--test-minutes", type=float, default=10.0, help="live part with attacks (default 10)")
    p.add_argument("--drift-minutes", type=float, default=12.0,
                   help="then a lasting change of regime, retrained and hot-swapped while the detector runs "
                        "(default 12; 0: no drift phase)")
    p.add_argument("--after-minutes", type=float, default=10.0,
                   help="the new regime after the swap, with a port scan (default 10)")
    p.add_argument("--keep-broker", action="store_true", help="leave the local broker running")

    p = sub.add_parser("eval", help="evaluate ours and the peers on labelled data, in-process (no Kafka)")
    _common(p)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--dataset", choices=["nsl-kdd", "smd", "nab"], help="a built-in dataset")
    what.add_argument("--csv", nargs="+", metavar="FILE", help="your own labelled CSV file(s); each is a series")
    p.add_argument("--root", metavar="DIR", help="datasets directory (env STREAMER_DATASETS)")
    p.add_argument("--detectors", default=",".join(("streamer", "river-hst", "river-loda", "iforest", "knn")),
                   help="comma separated: streamer, river-hst, river-loda, iforest, knn (default: all)")
    p.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    p.add_argument("--plots", metavar="DIR", help="write PNG figures (timelines, ROC, PR)")
    p.add_argument("--nab-results", metavar="DIR", help="nab: write scores in NAB's results layout")
    p.add_argument("--machines", help="smd: comma separated machine names (default: all present)")
    p.add_argument("--limit-series", type=int, metavar="N", help="evaluate only the first N series")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    g = p.add_argument_group("--csv options")
    g.add_argument("--label-col", help="label column (required with --csv)")
    g.add_argument("--sep", default=",", help="field separator (default ,)")
    g.add_argument("--time-col", help="time column: seconds, or ISO 8601 dates (UTC unless they carry an "
                                      "offset); the events' time (time windows, the seasonal baseline). Rows are "
                                      "taken in file order")
    g.add_argument("--entity-col", help="entity column (windows per entity)")
    g.add_argument("--feature-cols", nargs="+", metavar="C", help="feature columns (default: all others)")
    g.add_argument("--drop-cols", nargs="+", default=[], metavar="C", help="columns to ignore")
    g.add_argument("--train-rows", type=int, metavar="N", help="train on the first N rows of each file")
    g.add_argument("--train-frac", type=float, metavar="F", help="train on the first share F of each file")
    g.add_argument("--train-normal-only", action="store_true", help="drop labelled anomalies from the training rows")
    g.add_argument("--label-normal", metavar="VALUE", help="label value of normal rows (default: 0 is normal)")

    p = sub.add_parser("config", help="show the effective configuration or the reference table")
    _common(p)
    p.add_argument("what", choices=["show", "reference"], help="show: effective YAML; reference: markdown table")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    ov: dict[str, Any] = {}
    for item in args.sets:
        if "=" not in item:
            raise ConfigError("--set", "SECTION.FIELD=VALUE", item)
        key, value = item.split("=", 1)
        ov[key.strip()] = value
    for key, value in vars(args).items():
        if key.startswith("field:") and value is not None:
            ov[key[len("field:"):]] = value
    return ov


def _load(args: argparse.Namespace, *, validate: bool = True) -> StreamerConfig:
    return load_config(args.config, overrides=_overrides(args), validate=validate)


def _setup_logging(level: str) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ConfigError("--log-level", "DEBUG, INFO, WARNING or ERROR", level)
    logging.basicConfig(level=numeric, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # librdkafka retries transient broker errors itself; only its errors are worth a line.
    logging.getLogger("streamer.librdkafka").setLevel(max(numeric, logging.ERROR))


def _cmd_train(args: argparse.Namespace) -> int:
    from streamer.kafka_io import read_topic_to_end
    from streamer.sources import read_file_records
    from streamer.train import train_model

    cfg = _load(args)
    if args.input:
        records, source = read_file_records(args.input), f"file:{args.input}"
    else:
        records, source = read_topic_to_end(cfg.kafka, args.topic), f"topic:{args.topic}"
    path = train_model(cfg, records, source=source, version=args.version_name, show_progress=not args.no_progress)
    print(path)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from streamer.artifact import load_artifact
    from streamer.pipeline import Pipeline
    from streamer.runner import Runner

    cfg = _load(args, validate=False)
    model = load_artifact(cfg.model.dir, cfg.model.name, cfg.model.version)
    log.info("model %s/%s (trained on %s)", model.name, model.version, model.card.get("source"))
    # The model decides what its input looks like: schema and window come from its training config.
    if cfg.schema.numeric_fields or cfg.schema.categorical_fields:
        if (cfg.schema, cfg.window) != (model.config.schema, model.config.window):
            log.warning("schema/window of the config differ from the model's; using the model's")
    cfg.schema, cfg.window = model.config.schema, model.config.window
    cfg.validate()
    if args.no_follow:
        cfg.model.follow = False
    runner = Runner(cfg, Pipeline(model, cfg.detector), stop_at_end=args.until_end, idle_flush_s=args.idle_flush_s)
    if runner.follow:
        log.info("following model announcements on %s (hot swap)", cfg.topics.models)
    stats = runner.run()
    print(f"{stats.records} records, {stats.windows} windows, {stats.alerts} alerts, "
          f"{stats.dead_letters} dead letters, {stats.events_per_s:,.0f} events/s")
    return 0


def _cmd_retrain(args: argparse.Namespace) -> int:
    from streamer.retrain import retrainer_from_config

    cfg = _load(args, validate=False)
    if args.max_publications is not None and args.max_publications < 1:
        raise ConfigError("--max-publications", "a positive number", args.max_publications)
    rt = retrainer_from_config(cfg, stop_at_end=args.until_end, max_publications=args.max_publications)
    # The retrainer trains on the windows of the model it starts from (its schema and window).
    rt.cfg.validate()
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: rt.stop())
    stats = rt.run()
    print(f"{stats.records} records, {stats.windows} windows, {stats.drifts} drifts, {stats.trainings} trainings, "
          f"published: {','.join(stats.published) or '-'}, rejected: {','.join(stats.rejected) or '-'}; "
          f"model {rt.model_version}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    import json

    from streamer import modelstore

    cfg = _load(args, validate=False)
    what = args.models_command
    if what is None:
        raise ConfigError("streamer models", "an action: list, show, promote or rollback")
    if what in ("promote", "rollback"):
        ann = modelstore.promote(cfg, args.version) if what == "promote" else modelstore.rollback(cfg)
        print(f"announced {ann.name}/{ann.version} ({ann.action}) on {cfg.topics.models}; "
              f"history {' -> '.join(ann.history[-5:])}")
        return 0
    announced = None if args.offline else modelstore.latest_announcement(cfg)
    rows = modelstore.store_versions(cfg)
    if what == "list":
        if not rows:
            print(f"no versions of model {cfg.model.name!r} under {cfg.model.dir}/")
        print(f"{'version':<22} {'status':<9} {'gate':<7} {'windows':>8} {'FAR':>7}  source")
        for r in rows:
            mark = "announced" if announced is not None and r["version"] == announced.version else r["status"]
            far = r["false_alarm_rate_heldout"]
            print(f"{r['version']:<22} {mark:<9} {r['gate'] or '-':<7} {r['windows'] or '':>8} "
                  f"{'' if far is None else f'{far:.4f}':>7}  {r['source']}")
        if announced is not None:
            print(f"announced: {announced.version} ({announced.action} by {announced.announced_by}); history "
                  f"{' -> '.join(announced.history[-5:])}")
        elif not args.offline:
            print(f"nothing announced on {cfg.topics.models} yet")
        return 0
    from streamer.artifact import checksum, verify_artifact_dir

    path = modelstore.find_version_dir(cfg, args.version)
    if path is None:
        raise ArtifactError(f"no version {args.version!r} of model {cfg.model.name!r} under {cfg.model.dir}/")
    verify_artifact_dir(path)
    card = json.loads((path / "card.json").read_text("utf-8"))
    if not args.full:
        keep = ("created_at", "source", "validation", "gate", "retrain")
        data = {k: v for k, v in (card.get("data") or {}).items() if not k.startswith("feature_")}
        training = {k: v for k, v in (card.get("training") or {}).items() if k not in ("loss", "val_loss")}
        card = {**{k: card[k] for k in keep if k in card}, "data": data, "training": training}
    out = {"name": cfg.model.name, "version": args.version, "path": str(path), "checksum": checksum(path),
           "status": "rejected" if path.parent.name == "rejected" else "stored",
           "announced": None if announced is None else announced.version == args.version, **card}
    print(json.dumps(out, indent=2))
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from streamer.replay import replay_file

    cfg = _load(args, validate=False)
    if args.rate is not None and args.rate <= 0:
        raise ConfigError("--rate", "a positive number of events per second", args.rate)
    stats = replay_file(cfg, args.file, args.topic, rate=args.rate, show_progress=not args.no_progress)
    print(f"{stats.produced} events produced into {args.topic} in {stats.seconds:.1f}s")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from streamer.demo import demo_overrides, run_demo

    given = args.__dict__.get("field:kafka.bootstrap_servers") or os.environ.get(_env_name("kafka.bootstrap_servers"))
    # The demo brings its own schema; validate after the demo's overrides are applied.
    cfg = load_config(args.config, overrides={**demo_overrides(), **_overrides(args)})
    run_demo(cfg, bootstrap_given=bool(given), port=args.port, hosts=args.hosts, train_minutes=args.train_minutes,
             test_minutes=args.test_minutes, summary_json=args.summary_json, keep_broker=args.keep_broker,
             drift_minutes=args.drift_minutes, after_minutes=args.after_minutes)
    return 0


def _finite(obj: Any) -> Any:
    """JSON has no NaN: undefined figures (e.g. ROC-AUC of a series without anomalies) become null."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def _eval_config(path: str | None, dataset: dict[str, Any], flags: dict[str, Any]) -> StreamerConfig:
    """An evaluation's config. The dataset's schema describes its records, so it overrides a config
    file and env (which may describe the user's own topic); the dataset's other settings (window,
    model, detector: those chosen for it) are defaults that the user's config file, env and flags
    override, as everywhere. Flags override both."""
    schema = {k: v for k, v in dataset.items() if k.startswith("schema.")}
    rest = {k: v for k, v in dataset.items() if not k.startswith("schema.")}
    return load_config(path, base=rest, overrides={**schema, **flags})


def _cmd_eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from streamer import datasets
    from streamer.evaluate import DETECTORS, evaluate_dataset
    from streamer.report import table, write_plots

    detectors = [d.strip() for d in args.detectors.split(",") if d.strip()]
    unknown = [d for d in detectors if d not in DETECTORS]
    if unknown or not detectors:
        raise ConfigError("--detectors", "a comma separated subset of " + ", ".join(DETECTORS), args.detectors)
    if args.csv:
        if not args.label_col:
            raise ConfigError("--label-col", "the label column of the CSV files")
        ds = datasets.load_csv(
            args.csv, label_col=args.label_col, sep=args.sep, time_col=args.time_col, entity_col=args.entity_col,
            feature_cols=args.feature_cols, drop_cols=args.drop_cols, train_rows=args.train_rows,
            train_frac=args.train_frac, train_normal_only=args.train_normal_only, label_normal=args.label_normal,
        )
    else:
        root = datasets.dataset_root(args.root)
        if args.dataset == "nsl-kdd":
            ds = datasets.load_nsl_kdd(root)
        elif args.dataset == "smd":
            ds = datasets.load_smd(root, machines=args.machines.split(",") if args.machines else None)
        else:
            ds = datasets.load_nab(root)
    if args.limit_series:
        import itertools

        ds.series = itertools.islice(ds.series, args.limit_series)
        ds.n_series = min(ds.n_series, args.limit_series)
    cfg = _eval_config(args.config, ds.overrides, _overrides(args))
    result = evaluate_dataset(ds, cfg, detectors, show_progress=not args.no_progress)
    figures = {ds.name: result.figures}
    if args.dataset == "nab":
        from streamer.nab_eval import nab_figures

        if cfg.detector.incident_gap:
            log.warning("detector.incident_gap groups alerts at alpha (%s), while NAB's scoring sweeps a threshold "
                        "over the score: at any other threshold its detections are not grouped as the detector "
                        "would group them (see docs/evaluation-log.md)", cfg.detector.alpha)

        nab_figures(ds, result, detectors, results_dir=args.nab_results)
    print(table(figures), end="")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(_finite(figures), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    if args.plots:
        for path in write_plots(result, args.plots):
            log.info("wrote %s", path)
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    import yaml

    if args.what == "reference":
        print(reference_markdown())
    else:
        print(yaml.safe_dump(_load(args, validate=False).public_dict(), sort_keys=False), end="")
    return 0


_COMMANDS = {"train": _cmd_train, "run": _cmd_run, "retrain": _cmd_retrain, "models": _cmd_models,
             "replay": _cmd_replay, "demo": _cmd_demo, "eval": _cmd_eval, "config": _cmd_config}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return 2
    try:
        _setup_logging(args.log_level)
        return _COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"streamer {args.command}: {exc}", file=sys.stderr)
        return 2
    except (BrokerError, ArtifactError) as exc:
        print(f"streamer {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except StreamerError as exc:
        print(f"streamer {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"streamer {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
