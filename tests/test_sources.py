"""streamer.sources: JSONL and CSV files as records."""

from __future__ import annotations

import orjson
import pytest

from streamer.config import SchemaConfig
from streamer.decode import Decoder
from streamer.errors import ConfigError
from streamer.sources import iter_file_values, read_file_records, records_from_objects


def test_jsonl_blank_lines_skipped_and_lines_untouched(tmp_path):
    p = tmp_path / "events.jsonl"
    p.write_bytes(b'{"a": 1}\n\n   \n{"a": 2}\r\nnot json\n{"a": 3}')
    assert list(iter_file_values(p)) == [b'{"a": 1}', b'{"a": 2}', b"not json", b'{"a": 3}']
    recs = read_file_records(p)
    assert [(r.topic, r.partition, r.offset) for r in recs] == [("events.jsonl", 0, i) for i in range(4)]
    assert recs[2].value == b"not json"  # the detector dead-letters it, the reader does not judge
    assert [r.topic for r in read_file_records(p, topic="in")] == ["in"] * 4


@pytest.mark.parametrize("suffix", [".json", ".ndjson", ".JSONL"])
def test_other_json_suffixes(tmp_path, suffix):
    p = tmp_path / f"e{suffix}"
    p.write_text('{"x": 1}\n{"x": 2}\n')
    assert [orjson.loads(v) for v in iter_file_values(p)] == [{"x": 1}, {"x": 2}]


def test_csv_with_bom_and_crlf(tmp_path):
    p = tmp_path / "flows.csv"
    p.write_bytes("\ufeffhost,bytes,ratio,proto,note\r\n"
                  "h1,100,0.5,tcp,\"a, b\"\r\n"
                  "h2,-7,1e3,17,\r\n".encode("utf-8"))
    docs = [orjson.loads(v) for v in iter_file_values(p)]
    assert docs == [
        {"host": "h1", "bytes": 100, "ratio": 0.5, "proto": "tcp", "note": "a, b"},
        {"host": "h2", "bytes": -7, "ratio": 1000.0, "proto": 17},  # empty cell: absent
    ]
    assert isinstance(docs[0]["bytes"], int) and isinstance(docs[1]["ratio"], float)
    assert "\ufeffhost" not in docs[0]
    recs = read_file_records(p)
    assert [r.offset for r in recs] == [0, 1] and recs[0].topic == "flows.csv"


def test_csv_rows_decode(tmp_path):
    p = tmp_path / "flows.csv"
    p.write_text("host,ts,bytes\nh1,1000,5\nh2,2000,x\nh3,3000,\n", encoding="utf-8")
    dec = Decoder(SchemaConfig(numeric_fields=["bytes"]))
    batch, dead, kept = dec.decode(read_file_records(p))
    assert kept.tolist() == [0]
    assert batch.entity.tolist() == ["h1"] and batch.x.tolist() == [[5.0]] and batch.time_ms.tolist() == [1000]
    assert [d.reason for d in dead] == ["wrong_type", "missing_field"]


def test_csv_short_and_long_rows(tmp_path):
    p = tmp_path / "ragged.csv"
    p.write_text("host,a,b\nh1,1\nh2,1,2,3\nh3,4,5\n", encoding="utf-8")
    docs = [orjson.loads(v) for v in iter_file_values(p)]
    # a short row's missing cells are absent; the cells of a long row beyond the header are dropped
    assert docs == [{"host": "h1", "a": 1}, {"host": "h2", "a": 1, "b": 2}, {"host": "h3", "a": 4, "b": 5}]


def test_csv_non_finite_cells_stay_text(tmp_path):
    p = tmp_path / "nf.csv"
    p.write_text("host,ts,v,cat\nh1,1,nan,NaN\nh2,2,inf,Infinity\n", encoding="utf-8")
    docs = [orjson.loads(v) for v in iter_file_values(p)]
    # JSON has no NaN: a number would silently become null; the text reaches the decoder instead
    assert docs == [{"host": "h1", "ts": 1, "v": "nan", "cat": "NaN"},
                    {"host": "h2", "ts": 2, "v": "inf", "cat": "Infinity"}]
    dec = Decoder(SchemaConfig(numeric_fields=["v"]))
    _, dead, _ = dec.decode(read_file_records(p))
    assert [d.reason for d in dead] == ["wrong_type", "wrong_type"]
    # and a category that happens to read "NaN" is a category, not a missing value
    batch, dead, _ = Decoder(SchemaConfig(categorical_fields=["cat"], hash_buckets=4)).decode(read_file_records(p))
    assert dead == [] and batch.entity.tolist() == ["h1", "h2"]


def test_unsupported_suffix(tmp_path):
    p = tmp_path / "events.txt"
    p.write_text("{}\n")
    with pytest.raises(ConfigError) as info:
        list(iter_file_values(p))
    assert info.value.field == "FILE" and "events.txt" in str(info.value) and ".csv" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="an existing JSONL or CSV file"):
        read_file_records(tmp_path / "nope.jsonl")


def test_records_from_objects():
    recs = records_from_objects([{"a": 1}, {"b": "x"}], topic="mem")
    assert [(orjson.loads(r.value), r.topic, r.offset) for r in recs] == [({"a": 1}, "mem", 0), ({"b": "x"}, "mem", 1)]
