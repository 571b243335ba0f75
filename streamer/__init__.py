"""streamer: streaming anomaly detection on Kafka.

The package follows the data: ``source -> decode -> window -> normalize -> embed -> score ->
calibrate -> alert -> sink``. Each stage is a small module usable without Kafka; the Kafka runner
(:mod:`streamer.runner`) only wires them.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
