"""docker-compose.yml and deploy/Dockerfile cannot run here (no Docker engine): check that they
name the real CLI commands, flags and config fields."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streamer.cli import build_parser
from streamer.config import StreamerConfig, apply_overrides, env_overrides

ROOT = Path(__file__).resolve().parents[1]
NON_FIELD_ENV = {"STREAMER_LOG_LEVEL", "STREAMER_CONFIG"}


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_four_services(compose):
    services = compose["services"]
    assert {"kafka", "topics", "detector", "replayer"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    env = services["kafka"]["environment"]
    assert "broker" in env["KAFKA_PROCESS_ROLES"] and "controller" in env["KAFKA_PROCESS_ROLES"]
    assert services["detector"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert services["replayer"]["image"] == services["detector"]["image"]


def test_topic_creator_creates_the_configured_topics(compose):
    script = "\n".join(compose["services"]["topics"]["command"])
    env = compose["services"]["detector"]["environment"]
    for key in ("STREAMER_TOPICS__INPUT", "STREAMER_TOPICS__ALERTS", "STREAMER_TOPICS__DEAD_LETTER"):
        assert env[key] in script
    assert compose["services"]["replayer"]["command"][3] == env["STREAMER_TOPICS__INPUT"]
    # the models topic: compacted, and the one the detector and the retrainer follow
    assert f"--topic {env['STREAMER_TOPICS__MODELS']} " in script and "cleanup.policy=compact" in script
    assert compose["services"]["retrainer"]["environment"]["STREAMER_TOPICS__MODELS"] == env["STREAMER_TOPICS__MODELS"]


@pytest.mark.parametrize("service", ["detector", "retrainer", "replayer"])
def test_commands_parse_with_the_real_cli(compose, service):
    args = build_parser().parse_args(compose["services"][service]["command"])
    assert args.command in {"run", "retrain", "replay"}


@pytest.mark.parametrize("service", ["detector", "retrainer", "replayer"])
def test_environment_names_real_config_fields(compose, service):
    env = {k: str(v) for k, v in compose["services"][service]["environment"].items()}
    streamer_vars = {k for k in env if k.startswith("STREAMER_")}
    mapped = env_overrides(env)
    # every STREAMER_ variable is either a known non-field variable or maps to a field...
    assert len(mapped) == len(streamer_vars - NON_FIELD_ENV)
    # ...and every mapped field exists and accepts the value
    cfg = apply_overrides(StreamerConfig(), mapped)
    assert cfg.kafka.bootstrap_servers == "kafka:9092"


def test_dockerfile_installs_the_package_and_runs_the_cli():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert text.startswith("#") and "FROM python:3.11" in text
    assert "COPY streamer ./streamer" in text and "pip install" in text
    # the image installs the versions the published figures were measured with
    assert "-c constraints.txt" in text and "constraints.txt ./" in text
    pins = [ln for ln in (ROOT / "constraints.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert pins and all("==" in ln for ln in pins)
    assert {ln.split("==")[0].lower() for ln in pins} >= {"keras", "tensorflow", "numpy", "river", "confluent-kafka"}
    assert 'ENTRYPOINT ["streamer"]' in text
    cmd = text.split("CMD ", 1)[1].splitlines()[0]
    args = build_parser().parse_args(yaml.safe_load(cmd))
    assert args.command == "run"
