"""Unit tests: the segment codec round-trips every record field byte for byte."""

from __future__ import annotations

import io
import json
import random
from functools import partial

import pytest

from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.formats.compression import COMPRESSIONS, get_compression
from airflow_kafka_backup.engine.formats.segment_codec import get_format
from airflow_kafka_backup.engine.records import Record
from tests.helpers import encode_segment

TRICKY = [
    Record(0, 0, 1, "CreateTime", None, None, []),
    Record(0, 1, 2, "CreateTime", b"", b"", []),
    Record(0, 2, 3, "LogAppendTime", b"\xff\xfe\x00", b"\x00\x80\xc3\x28", [("h", None), ("h", b""), ("h", b"x")]),
    Record(0, 7, 0, "NoTimestampType", "ключ".encode(), b"v" * 5000, [("ü\"\\n", b"\xff"), ("a", None)]),
]


_encode = partial(encode_segment, "jsonl")


@pytest.mark.parametrize("compression", sorted(COMPRESSIONS))
def test_round_trip_keeps_null_empty_headers_and_bytes(compression):
    data = _encode(TRICKY, compression)
    decoded = list(get_format("jsonl").decode(io.BytesIO(data), get_compression(compression)))
    assert decoded == TRICKY
    assert decoded[0].key is None and decoded[1].key == b""


@pytest.mark.parametrize("compression", sorted(COMPRESSIONS))
def test_encoding_is_deterministic(compression):
    rng = random.Random(3)
    records = [Record(1, i, i, "CreateTime", rng.randbytes(8), rng.randbytes(100), []) for i in range(2000)]
    assert _encode(records, compression) == _encode(records, compression)


def test_lines_are_plain_json_readable_by_jq():
    line = _encode(TRICKY[2:3]).decode()
    obj = json.loads(line)
    assert list(obj) == ["partition", "offset", "timestamp", "timestamp_type", "key", "value", "headers"]
    assert obj["headers"] == [["h", None], ["h", ""], ["h", "eA=="]]


def test_unknown_format_and_compression_are_named():
    with pytest.raises(ConfigurationError, match="'avro2'"):
        get_format("avro2")
    with pytest.raises(ConfigurationError, match="'lz4'.*gzip"):
        get_compression("lz4")


@pytest.mark.parametrize("compression", sorted(COMPRESSIONS))
def test_avro_round_trip_is_byte_exact_and_deterministic(compression):
    data = encode_segment("avro", TRICKY, compression)
    assert data == encode_segment("avro", TRICKY, compression)
    assert list(get_format("avro").decode(io.BytesIO(data), get_compression(compression))) == TRICKY
    import fastavro

    assert fastavro.reader(io.BytesIO(data)).codec == {"none": "null", "gzip": "deflate",
                                                                  "zstd": "zstandard"}[compression]
