"""Start and stop the project's local Kafka broker (``deploy/kafka/broker.sh``) from Python."""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from streamer.errors import BrokerError

__all__ = ["broker_script", "start_local_broker", "stop_local_broker"]

log = logging.getLogger(__name__)


def broker_script() -> Path:
    """The launcher of a source checkout (``STREAMER_BROKER_SCRIPT`` overrides)."""
    env = os.environ.get("STREAMER_BROKER_SCRIPT")
    path = Path(env) if env else Path(__file__).resolve().parents[1] / "deploy" / "kafka" / "broker.sh"
    if not path.is_file():
        raise BrokerError(
            f"no local broker launcher at {path}: run from a source checkout, or pass --bootstrap-servers"
        )
    return path


def _call(action: str, port: int, timeout_s: float) -> str:
    script = broker_script()
    env = {**os.environ, "STREAMER_KAFKA_PORT": str(port)}
    try:
        out = subprocess.run(["bash", str(script), action, "--port", str(port)], env=env, capture_output=True,
                             text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise BrokerError(f"local broker {action} on port {port} did not finish in {timeout_s:.0f}s") from None
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-5:]
        raise BrokerError(f"local broker {action} failed (exit {out.returncode}): " + " | ".join(tail))
    return out.stdout.strip()


def start_local_broker(port: int = 9092, *, timeout_s: float = 600.0) -> str:
    """Start (or find running) the local KRaft broker; returns its bootstrap address."""
    msg = _call("start", port, timeout_s)
    log.info("%s", msg.splitlines()[-1] if msg else f"local broker on port {port}")
    return f"127.0.0.1:{port}"


def stop_local_broker(port: int = 9092) -> None:
    _call("stop", port, 120.0)
