"""The command line: bad use gives one clear line and exit status 2; an unreachable broker a clear
message, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from streamer.cli import main


def _streamer(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamer.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})})


def test_bad_set_value_names_the_field(capsys):
    assert main(["config", "show", "--set", "detector.alpha=lots"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "detector.alpha" in err[0] and "number" in err[0]


def test_unknown_field_is_refused(capsys):
    assert main(["config", "show", "--set", "detector.nope=1"]) == 2
    assert "detector.nope" in capsys.readouterr().err


def test_set_without_equals(capsys):
    assert main(["config", "show", "--set", "detector.alpha"]) == 2
    assert "SECTION.FIELD=VALUE" in capsys.readouterr().err


def test_bad_env_variable_names_the_field(capsys, monkeypatch):
    monkeypatch.setenv("STREAMER_KAFKA__BATCH_SIZE", "many")
    assert main(["config", "show"]) == 2
    assert "kafka.batch_size" in capsys.readouterr().err


def test_missing_config_file(capsys, tmp_path):
    assert main(["config", "show", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "--config" in capsys.readouterr().err


def test_cross_field_validation_on_train(capsys, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"host": "a", "x": 1}\n')
    assert main(["train", "--input", str(data), "--set", "schema.numeric_fields=x", "--set", "window.kind=count",
                 "--set", "window.size=4", "--set", "window.slide=9"]) == 2
    assert "window.slide" in capsys.readouterr().err


def test_argparse_errors_exit_2():
    with pytest.raises(SystemExit) as exc:
        main(["replay"])
    assert exc.value.code == 2


def test_config_show_reflects_overrides(capsys):
    assert main(["config", "show", "--bootstrap-servers", "k1:9092,k2:9092", "--set", "kafka.settings.sasl.mechanism=PLAIN"]) == 0
    out = capsys.readouterr().out
    assert "k1:9092,k2:9092" in out and "sasl.mechanism: PLAIN" in out


def test_config_reference_lists_fields(capsys):
    assert main(["config", "reference"]) == 0
    out = capsys.readouterr().out
    assert "`detector.alpha`" in out and "STREAMER_KAFKA__BOOTSTRAP_SERVERS" in out


def test_help_shows_environment_variables():
    out = _streamer("run", "--help").stdout
    assert "STREAMER_KAFKA__BOOTSTRAP_SERVERS" in out and "STREAMER_TOPICS__ALERTS" in out


def test_run_without_model_is_a_clear_error(tmp_path):
    res = _streamer("run", "--model-dir", str(tmp_path))
    assert res.returncode == 1
    assert "streamer train" in res.stderr and "Traceback" not in res.stderr


def test_unreachable_broker_retries_then_fails_clearly(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"host": "a", "x": 1}\n')
    res = _streamer("replay", str(data), "--topic", "t", "--bootstrap-servers", "127.0.0.1:1",
                    "--set", "kafka.connect_timeout_s=3", "--no-progress")
    assert res.returncode == 1
    assert "unreachable" in res.stderr and "retrying" in res.stderr
    assert "Traceback" not in res.stderr


def test_replay_rejects_bad_rate(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text('{"host": "a", "x": 1}\n')
    assert main(["replay", str(data), "--topic", "t", "--rate", "-5"]) == 2
    assert "--rate" in capsys.readouterr().err


def test_replay_missing_file(capsys, tmp_path):
    assert main(["replay", str(tmp_path / "none.jsonl"), "--topic", "t"]) == 2
    assert "FILE" in capsys.readouterr().err


def test_eval_config_layers_dataset_settings_under_the_users(tmp_path, monkeypatch):
    """An evaluation's dataset brings its schema (which the user's config cannot replace: it
    describes the records) and its chosen settings (which the user's config file, env and flags
    override, as the README's precedence says)."""
    from streamer.cli import _eval_config

    yaml = tmp_path / "mine.yaml"
    yaml.write_text("schema: {entity_field: host, numeric_fields: [bytes]}\n"
                    "window: {size: 4}\ndetector: {alpha: 0.05, entity_baseline: 500}\n")
    dataset = {"schema.entity_field": "series", "schema.numeric_fields": ["value"], "schema.categorical_fields": [],
               "window.kind": "count", "window.size": 8, "detector.entity_baseline": 3000,
               "detector.alert_cooldown": 100}
    monkeypatch.delenv("STREAMER_CONFIG", raising=False)
    monkeypatch.setenv("STREAMER_DETECTOR__ALERT_COOLDOWN", "7")
    cfg = _eval_config(str(yaml), dataset, {"detector.alpha": "0.02"})
    assert cfg.schema.entity_field == "series" and cfg.schema.numeric_fields == ["value"]  # the dataset's
    assert cfg.window.kind == "count"  # the dataset's, where the user says nothing
    assert cfg.window.size == 4 and cfg.detector.entity_baseline == 500  # the file over the dataset
    assert cfg.detector.alert_cooldown == 7  # env over the dataset
    assert cfg.detector.alpha == 0.02  # flags over the file
    # flags override the dataset's schema too (the user's explicit choice)
    assert _eval_config(None, dataset, {"schema.numeric_fields": "value,extra"}).schema.numeric_fields == ["value", "extra"]
    # without a file or env, the dataset's settings stand
    monkeypatch.delenv("STREAMER_DETECTOR__ALERT_COOLDOWN")
    plain = _eval_config(None, dataset, {})
    assert (plain.window.size, plain.detector.entity_baseline, plain.detector.alert_cooldown) == (8, 3000, 100)
