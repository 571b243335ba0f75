"""streamer.config: defaults, YAML, environment, overrides, validation and the reference table."""

from __future__ import annotations

import dataclasses

import pytest

from streamer.config import (
    AGGREGATES,
    StreamerConfig,
    apply_overrides,
    config_from_dict,
    env_overrides,
    load_config,
    reference_markdown,
)
from streamer.errors import ConfigError

NUM = {"schema.numeric_fields": "bytes,packets"}


def _load(path=None, *, environ=None, **overrides):
    ov = dict(NUM)
    ov.update({k.replace("__", "."): v for k, v in overrides.items()})
    return load_config(path, overrides=ov, environ={} if environ is None else environ)


def _raises(match_field: str, fn, *args, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    assert match_field in str(info.value), str(info.value)
    return info.value


# -- defaults ---------------------------------------------------------------------------------------


def test_defaults_need_a_feature_field():
    err = _raises("schema.numeric_fields", load_config, environ={})
    assert err.field == "schema.numeric_fields"


def test_defaults_are_valid_once_numeric_fields_are_set():
    cfg = load_config(overrides=NUM, environ={})
    assert cfg.schema.numeric_fields == ["bytes", "packets"]
    assert cfg.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert cfg.kafka.batch_size == 2000
    assert cfg.kafka.settings == {}
    assert cfg.topics.input == ["streamer.events"]
    assert cfg.topics.scores is None
    assert cfg.window.kind == "record"
    assert cfg.window.aggregates == list(AGGREGATES)
    assert cfg.model.hidden == [64, 32]
    assert cfg.detector.alpha == 0.001
    # default containers are not shared between instances
    a, b = StreamerConfig(), StreamerConfig()
    a.model.hidden.append(1)
    a.kafka.settings["x"] = "y"
    assert b.model.hidden == [64, 32] and b.kafka.settings == {}


def test_validate_false_skips_cross_field_checks():
    cfg = load_config(environ={}, validate=False)
    assert cfg.schema.numeric_fields == []


# -- YAML -------------------------------------------------------------------------------------------


def test_yaml_file_loading(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(
        "kafka:\n  bootstrap_servers: broker:29092\n  batch_size: 17\n  settings:\n    security.protocol: SSL\n"
        "topics:\n  input: [a, b]\n  scores: ''\n"
        "schema:\n  numeric_fields: [x, y]\n  categorical_fields: proto\n"
        "window:\n  kind: time\n  seconds: 5\n  hop_seconds: 2.5\n  aggregates: [mean, max]\n"
        "model:\n  hidden: [16, 4]\n"
        "detector:\n  alpha: 0.02\n",
        encoding="utf-8",
    )
    cfg = load_config(p, environ={})
    assert cfg.kafka.bootstrap_servers == "broker:29092"
    assert cfg.kafka.batch_size == 17
    assert cfg.kafka.settings == {"security.protocol": "SSL"}
    assert cfg.topics.input == ["a", "b"]
    assert cfg.topics.scores is None
    assert cfg.schema.numeric_fields == ["x", "y"]
    assert cfg.schema.categorical_fields == ["proto"]
    assert (cfg.window.kind, cfg.window.seconds, cfg.window.hop_seconds) == ("time", 5.0, 2.5)
    assert cfg.window.aggregates == ["mean", "max"]
    assert cfg.model.hidden == [16, 4]
    assert cfg.detector.alpha == 0.02


def test_yaml_path_from_streamer_config_env(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("schema:\n  numeric_fields: [q]\nkafka:\n  group_id: from-file\n", encoding="utf-8")
    cfg = load_config(environ={"STREAMER_CONFIG": str(p)})
    assert cfg.kafka.group_id == "from-file"
    assert cfg.schema.numeric_fields == ["q"]


def test_empty_yaml_file_means_defaults(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("", encoding="utf-8")
    assert _load(p).kafka.group_id == "streamer-detector"


def test_missing_yaml_file(tmp_path):
    err = _raises("--config", _load, tmp_path / "nope.yaml")
    assert "nope.yaml" in str(err)


def test_invalid_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("kafka: [unclosed\n", encoding="utf-8")
    err = _raises("valid YAML", _load, p)
    assert "bad.yaml" in str(err)


def test_yaml_top_level_must_be_mapping(tmp_path):
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n", encoding="utf-8")
    _raises("a mapping of sections", _load, p)


def test_yaml_unknown_section_and_field(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("kafak:\n  group_id: x\n", encoding="utf-8")
    err = _raises("kafak", _load, p)
    assert "a section" in str(err)
    p.write_text("kafka:\n  gruop_id: x\n", encoding="utf-8")
    _raises("kafka.gruop_id", _load, p)
    p.write_text("kafka: 3\n", encoding="utf-8")
    _raises("a mapping of fields", _load, p)


# -- environment ------------------------------------------------------------------------------------


def test_env_bootstrap_servers():
    cfg = _load(environ={"STREAMER_KAFKA__BOOTSTRAP_SERVERS": "k1:9092,k2:9092"})
    assert cfg.kafka.bootstrap_servers == "k1:9092,k2:9092"


def test_env_list_coercion_from_comma_string():
    cfg = _load(environ={"STREAMER_TOPICS__INPUT": " a, b ,,c ", "STREAMER_MODEL__HIDDEN": "12,6"})
    assert cfg.topics.input == ["a", "b", "c"]
    assert cfg.model.hidden == [12, 6]


def test_env_numbers_and_none():
    cfg = _load(environ={"STREAMER_KAFKA__BATCH_SIZE": "300", "STREAMER_DETECTOR__ALPHA": "0.05",
                         "STREAMER_WINDOW__HOP_SECONDS": "", "STREAMER_TOPICS__SCORES": "none"})
    assert cfg.kafka.batch_size == 300 and isinstance(cfg.kafka.batch_size, int)
    assert cfg.detector.alpha == 0.05
    assert cfg.window.hop_seconds is None
    assert cfg.topics.scores is None


def test_env_settings_passthrough():
    env = {"STREAMER_KAFKA__SETTINGS__SASL_MECHANISM": "PLAIN",
           "STREAMER_KAFKA__SETTINGS__SECURITY_PROTOCOL": "SASL_SSL"}
    assert env_overrides(env) == {"kafka.settings.sasl.mechanism": "PLAIN",
                                  "kafka.settings.security.protocol": "SASL_SSL"}
    cfg = _load(environ=env)
    assert cfg.kafka.settings == {"sasl.mechanism": "PLAIN", "security.protocol": "SASL_SSL"}


def test_env_ignores_unrelated_variables():
    env = {"PATH": "/bin", "STREAMER_CONFIG": "", "STREAMER_NOSECTION__X": "1", "STREAMER_KAFKA": "x",
           "OTHER_KAFKA__GROUP_ID": "no"}
    assert env_overrides(env) == {}
    assert _load(environ=env).kafka.group_id == "streamer-detector"


def test_env_bad_field_names_the_variable_field():
    _raises("kafka.gruop_id", _load, environ={"STREAMER_KAFKA__GRUOP_ID": "x"})


# -- precedence -------------------------------------------------------------------------------------


def test_precedence_defaults_yaml_env_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("kafka:\n  group_id: yaml\n  batch_size: 11\n  batch_timeout_s: 1.5\n"
                 "  settings: {sasl.mechanism: SCRAM, client.id: yaml}\n", encoding="utf-8")
    env = {"STREAMER_KAFKA__GROUP_ID": "env", "STREAMER_KAFKA__BATCH_SIZE": "22",
           "STREAMER_KAFKA__SETTINGS__SASL_MECHANISM": "PLAIN"}
    cfg = load_config(p, environ=env, overrides={**NUM, "kafka.batch_size": 33})
    assert cfg.kafka.auto_offset_reset == "earliest"  # default untouched
    assert cfg.kafka.batch_timeout_s == 1.5  # yaml beats default
    assert cfg.kafka.group_id == "env"  # env beats yaml
    assert cfg.kafka.batch_size == 33  # override beats env
    assert cfg.kafka.settings == {"sasl.mechanism": "PLAIN", "client.id": "yaml"}


# -- bad values -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, value, field",
    [
        ("kafka.batch_size", "lots", "kafka.batch_size"),
        ("kafka.batch_size", 2.5, "kafka.batch_size"),
        ("kafka.batch_size", True, "kafka.batch_size"),
        ("kafka.batch_timeout_s", "soon", "kafka.batch_timeout_s"),
        ("kafka.batch_timeout_s", "nan", "kafka.batch_timeout_s"),
        ("kafka.batch_timeout_s", float("inf"), "kafka.batch_timeout_s"),
        ("kafka.auto_offset_reset", "middle", "kafka.auto_offset_reset"),
        ("window.kind", "hopping", "window.kind"),
        ("schema.time_unit", "us", "schema.time_unit"),
        ("model.hidden", "8,x", "model.hidden"),
        ("model.hidden", 5, "model.hidden"),
        ("kafka.settings", "sasl=PLAIN", "kafka.settings"),
        ("kafka.group_id", ["a"], "kafka.group_id"),
        ("nosection.x", 1, "nosection.x"),
        ("kafka.nofield", 1, "kafka.nofield"),
        ("kafka", 1, "kafka"),
        ("kafka.group_id.sub", 1, "kafka.group_id.sub"),
    ],
)
def test_bad_values_name_the_field(key, value, field):
    err = _raises(field, _load, **{key.replace(".", "__"): value})
    assert str(err).startswith("config error: ")


def test_bad_literal_lists_choices():
    err = _raises("window.kind", _load, window__kind="hopping")
    assert "record, count, time" in str(err)
    assert "'hopping'" in str(err)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9, -0.1])
def test_alpha_out_of_range(alpha):
    err = _raises("detector.alpha", _load, detector__alpha=alpha)
    assert err.field == "detector.alpha"


def test_alpha_in_range_is_fine():
    assert _load(detector__alpha=0.49).detector.alpha == 0.49


def test_count_slide_larger_than_size():
    err = _raises("window.slide", _load, window__kind="count", window__size=4, window__slide=5)
    assert "size (4)" in str(err)
    _raises("window.slide", _load, window__kind="count", window__size=4, window__slide=0)
    cfg = _load(window__kind="count", window__size=4, window__slide=4)
    assert (cfg.window.size, cfg.window.slide) == (4, 4)
    # irrelevant for other window kinds
    assert _load(window__kind="record", window__size=4, window__slide=5).window.slide == 5


def test_hash_functions_must_fit_in_the_buckets():
    assert _load(schema__hash_buckets=16, schema__hash_functions=3).schema.hash_functions == 3
    _raises("schema.hash_functions", _load, schema__hash_buckets=4, schema__hash_functions=5)
    _raises("schema.hash_functions", _load, schema__hash_functions=0)
    _raises("schema.hash_buckets", _load, schema__hash_buckets=0)


def test_bad_aggregates():
    err = _raises("window.aggregates", _load, window__kind="time", window__aggregates="mean,median")
    assert "median" in str(err)
    _raises("window.aggregates", _load, window__kind="time", window__aggregates=[])


def test_bad_hop():
    _raises("window.hop_seconds", _load, window__kind="time", window__seconds=10, window__hop_seconds=11)
    _raises("window.hop_seconds", _load, window__kind="time", window__seconds=0)
    assert _load(window__kind="time", window__seconds=10, window__hop_seconds=10).window.hop_seconds == 10.0


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"detector.recon_weight": 1.5}, "detector.recon_weight"),
        ({"detector.admit_p": 1.5}, "detector.admit_p"),
        ({"detector.recon_top": -1}, "detector.recon_top"),
        ({"detector.entity_baseline_short": 0}, "detector.entity_baseline_short"),
        ({"detector.alert_cooldown": -1}, "detector.alert_cooldown"),
        ({"detector.alert_cooldown": 10_001}, "detector.alert_cooldown"),
        ({"detector.incident_gap": -1}, "detector.incident_gap"),
        ({"detector.incident_gap": 10_001}, "detector.incident_gap"),
        ({"detector.seasonal_period_s": -1}, "detector.seasonal_period_s"),
        ({"window.kind": "count", "window.size": 2, "detector.change_horizon": 1}, "detector.change_horizon"),
        ({"window.kind": "count", "window.size": 1, "detector.change_horizon": 100}, "detector.change_horizon"),
        ({"window.kind": "time", "detector.change_horizon": 100}, "detector.change_horizon"),
        ({"detector.change_share": 0.0}, "detector.change_share"),
        ({"detector.change_memory_s": -1}, "detector.change_memory_s"),
        ({"detector.change_memory_s": "inf"}, "detector.change_memory_s"),
        ({"detector.change_share": 1.0}, "detector.change_share"),
        ({"detector.range_tolerance": -0.1}, "detector.range_tolerance"),
        ({"detector.range_tolerance": "nan"}, "detector.range_tolerance"),
        ({"detector.range_warmup": -1}, "detector.range_warmup"),
        ({"detector.transition_levels": -1}, "detector.transition_levels"),
        ({"window.kind": "count", "window.size": 1, "detector.transition_levels": 5}, "detector.transition_levels"),
        ({"window.kind": "record", "detector.transition_levels": 5}, "detector.transition_levels"),
        ({"detector.transition_warmup": -0.5}, "detector.transition_warmup"),
        ({"detector.transition_warmup": "inf"}, "detector.transition_warmup"),
        ({"detector.view_incidents": "separate"}, "detector.view_incidents"),
        ({"detector.seasonal_buckets": 0}, "detector.seasonal_buckets"),
        ({"detector.seasonal_horizon": 1}, "detector.seasonal_horizon"),
        ({"detector.seasonal_clip": -1}, "detector.seasonal_clip"),
        ({"detector.k": 50, "detector.reservoir_size": 10}, "detector.reservoir_size"),
        ({"model.validation_split": 0.95}, "model.validation_split"),
        ({"model.hidden": "8,0"}, "model.hidden"),
        ({"model.members": 0}, "model.members"),
        ({"model.members": 17}, "model.members"),
        ({"model.dropout": 1.0}, "model.dropout"),
        ({"model.dropout": -0.1}, "model.dropout"),
        ({"model.weight_decay": -1e-4}, "model.weight_decay"),
        ({"model.weight_decay": "nan"}, "model.weight_decay"),
        ({"model.loss": "mae"}, "model.loss"),
        ({"model.lr_plateau": -1}, "model.lr_plateau"),
        ({"model.ema_momentum": 1.0}, "model.ema_momentum"),
        ({"model.ema_momentum": -0.1}, "model.ema_momentum"),
        ({"model.ema_momentum": "nan"}, "model.ema_momentum"),
        ({"topics.input": ""}, "topics.input"),
    ],
)
def test_cross_field_rules(overrides, field):
    _raises(field, load_config, overrides={**NUM, **overrides}, environ={})


def test_change_view_needs_count_windows_of_two_events():
    cfg = _load(window__kind="count", window__size=2, detector__change_horizon=3000)
    assert (cfg.detector.change_horizon, cfg.detector.change_share, cfg.detector.change_memory_s) == (3000, 0.1, 0.0)
    err = _raises("detector.change_horizon", _load, window__kind="record", detector__change_horizon=3000)
    assert "window.size >= 2" in str(err)


def test_apply_overrides_in_place_and_config_from_dict_round_trip():
    cfg = _load()
    apply_overrides(cfg, {"kafka.settings.ssl.ca.location": "/ca.pem", "window.kind": "count"})
    assert cfg.kafka.settings == {"ssl.ca.location": "/ca.pem"}
    back = config_from_dict(cfg.to_dict())
    assert back == cfg
    assert back.to_dict() == cfg.to_dict()


# -- reference --------------------------------------------------------------------------------------


def test_reference_markdown_contains_every_field():
    md = reference_markdown()
    lines = md.splitlines()
    assert lines[0] == "| field | default | env | meaning |"
    cfg = StreamerConfig()
    n = 0
    for section in ("kafka", "topics", "schema", "window", "model", "detector", "retrain"):
        for f in dataclasses.fields(getattr(cfg, section)):
            n += 1
            row = [ln for ln in lines if ln.startswith(f"| `{section}.{f.name}` |")]
            assert len(row) == 1, f"{section}.{f.name} missing"
            assert f"`STREAMER_{section.upper()}__{f.name.upper()}`" in row[0]
            assert f.metadata["help"] in row[0]
    assert len(lines) == n + 2
    assert "| `kafka.bootstrap_servers` | `127.0.0.1:9092` |" in md
    assert "| `model.hidden` | `64,32` |" in md
    assert "| `topics.scores` | `` |" in md


def test_public_dict_redacts_kafka_credentials():
    from streamer.config import StreamerConfig, apply_overrides

    cfg = apply_overrides(StreamerConfig(), {"kafka.settings.sasl.password": "hunter2",
                                             "kafka.settings.sasl.mechanism": "PLAIN",
                                             "kafka.settings.ssl.key.password": "k"})
    public = cfg.public_dict()["kafka"]["settings"]
    assert public == {"sasl.password": "<redacted>", "sasl.mechanism": "PLAIN", "ssl.key.password": "<redacted>"}
    assert cfg.kafka.settings["sasl.password"] == "hunter2"  # the running config keeps it
