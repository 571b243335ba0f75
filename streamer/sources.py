"""Read events from files (JSONL or CSV) as records, the same shape a Kafka source hands over."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from pathlib import Path

import orjson

from streamer.errors import ConfigError
from streamer.records import Record

__all__ = ["iter_file_values", "read_file_records"]


def _number(text: str | None) -> object:
    """CSV cells: numbers become numbers, empty cells (and the missing cells of a short row, None)
    are absent, everything else stays text (``nan``/``inf`` too: JSON has no such number)."""
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def iter_file_values(path: str | Path) -> Iterator[bytes]:
    """Each event of a ``.jsonl``/``.json`` (one object per line) or ``.csv`` file as JSON bytes.

    JSONL lines are passed through untouched (a bad line is the detector's to dead-letter), blank
    lines are skipped. CSV rows become objects keyed by the header (a byte-order mark is ignored).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError("FILE", "an existing JSONL or CSV file", str(p))
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        with p.open("rb") as f:
            for line in f:
                line = line.strip()
                if line:
                    yield line
    elif suffix == ".csv":
        with p.open("r", encoding="utf-8-sig", newline="") as f:
            for row in csv.DictReader(f):
                yield orjson.dumps({k: v for k, v in ((k, _number(v)) for k, v in row.items() if k) if v is not None})
    else:
        raise ConfigError("FILE", "a .jsonl, .ndjson or .csv file", str(p))


def read_file_records(path: str | Path, *, topic: str | None = None) -> list[Record]:
    """All events of a file as records; offsets are the event's position in the file."""
    name = topic or Path(path).name
    return [Record(v, name, 0, i) for i, v in enumerate(iter_file_values(path))]


def records_from_objects(objs: list[dict], topic: str = "memory") -> list[Record]:
    """Records from in-memory dicts (tests, the demo)."""
    return [Record(orjson.dumps(o), topic, 0, i) for i, o in enumerate(objs)]


