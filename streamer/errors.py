"""One exception hierarchy for the whole package."""

from __future__ import annotations

__all__ = ["StreamerError", "ConfigError", "ArtifactError", "BrokerError"]


class StreamerError(Exception):
    """Base class of every error raised on purpose by streamer."""


class ConfigError(StreamerError):
    """Bad configuration or command-line use. The message names the field and what is expected."""

    def __init__(self, field: str, expected: str, got: object = None) -> None:
        message = f"config error: {field}: expected {expected}"
        if got is not None:
            message += f", got {got!r}"
        super().__init__(message)
        self.field = field
        self.expected = expected


class ArtifactError(StreamerError):
    """A model artifact is missing, incomplete, or fails its checksum."""


class BrokerError(StreamerError):
    """The Kafka broker could not be reached or refused an operation."""
