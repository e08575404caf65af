"""Unit tests: msgpack segments round-trip every record field byte for byte, are deterministic,
stay plain msgpack that another library reads, keep blocks bounded and name damage."""

from __future__ import annotations

import hashlib
import io
import random
import tracemalloc
from functools import partial

import msgpack
import pytest

from airflow_kafka_backup.engine.errors import IntegrityError
from airflow_kafka_backup.engine.formats import msgpack_format
from airflow_kafka_backup.engine.formats.base import decode_fields
from airflow_kafka_backup.engine.formats.compression import COMPRESSIONS, get_compression
from airflow_kafka_backup.engine.formats.msgpack_format import BLOCK_BYTES, BLOCK_RECORDS, HEADER
from airflow_kafka_backup.engine.formats.segment_codec import get_format
from airflow_kafka_backup.engine.records import TIMESTAMP_TYPE_NUMBERS, Record
from tests.helpers import encode_segment

TRICKY = [
    Record(0, 0, 1, "CreateTime", None, None, []),
    Record(0, 1, 2, "CreateTime", b"", b"", []),
    Record(0, 2, 3, "LogAppendTime", b"\xff\xfe\x00", b"\x00\x80\xc3\x28", [("h", None), ("h", b""), ("h", b"x")]),
    Record(0, 7, 0, "NoTimestampType", "ключ".encode(), b"v" * 5000, [("ü\"\\n", b"\xff"), ("a", None)]),
    Record(3, 2**62, -1, "CreateTime", b"k", None, [("", b"")]),
]


def _random_records(n: int, seed: int, value_size: int = 100) -> list[Record]:
    rng = random.Random(seed)
    return [
        Record(1, 1000 + i, 1_700_000_000_000 + i, rng.choice(["CreateTime", "LogAppendTime"]),
               rng.choice([None, b"", rng.randbytes(8)]), rng.choice([None, b"", rng.randbytes(value_size)]),
               [("h", rng.choice([None, b"", rng.randbytes(3)]))] * rng.randrange(3))
        for i in range(n)
    ]


_encode = partial(encode_segment, "msgpack")


def _decode(data: bytes, compression: str = "none") -> list[Record]:
    return list(get_format("msgpack").decode(io.BytesIO(data), get_compression(compression)))


@pytest.mark.parametrize("compression", sorted(COMPRESSIONS))
def test_round_trip_keeps_null_empty_headers_and_bytes(compression):
    records = TRICKY + _random_records(2500, seed=1)
    decoded = _decode(_encode(records, compression), compression)
    assert decoded == records
    assert decoded[0].key is None and decoded[1].key == b"" and decoded[1].value == b""
    assert decoded[2].headers == [("h", None), ("h", b""), ("h", b"x")]


@pytest.mark.parametrize("compression", sorted(COMPRESSIONS))
def test_decode_fields_is_the_fast_path_and_agrees_with_decode(compression):
    records = TRICKY + _random_records(300, seed=2)
    data, codec = _encode(records, compression), get_compression(compression)
    fields = list(decode_fields(get_format("msgpack"), io.BytesIO(data), codec))
    assert [Record(*f[:6], list(f[6])) for f in fields] == records
    assert all(type(f) is tuple and len(f) == 7 for f in fields)
    # Headers come as a tuple: records without any share the empty one (no object per record).
    assert all(type(f[6]) is tuple for f in fields)
    assert len({id(f[6]) for f in fields if not f[6]}) == 1


@pytest.mark.parametrize("compression", sorted(COMPRESSIONS))
def test_encoding_is_deterministic(compression):
    records = _random_records(3000, seed=3)
    as_lists = [Record(r.partition, r.offset, r.timestamp, r.timestamp_type, r.key, r.value,
                       [list(h) for h in r.headers]) for r in records]  # headers as lists, not tuples
    assert _encode(records, compression) == _encode(as_lists, compression)


def test_the_bytes_are_pinned():
    """A library upgrade that changed a single byte of the encoding would break "same records, same bytes"."""
    data = _encode(TRICKY + _random_records(2500, seed=8))
    assert hashlib.sha256(data).hexdigest() == PINNED_SHA256


PINNED_SHA256 = "f333bc575cec17b038da33f65e63fbdf2505a39355b6735e0a5c194600cb87ee"


def test_write_fields_and_write_give_the_same_bytes():
    raw = io.BytesIO()
    encoder = get_format("msgpack").encoder(raw, get_compression("none"))
    for r in TRICKY:  # as the backup loop passes a confluent Message's fields: headers None when absent
        encoder.write_fields(r.partition, r.offset, r.timestamp, TIMESTAMP_TYPE_NUMBERS[r.timestamp_type], r.key,
                             r.value, r.headers or None)
    encoder.close()
    assert raw.getvalue() == _encode(TRICKY)


def test_file_is_plain_msgpack_that_another_library_reads():
    records = TRICKY + _random_records(1200, seed=4)
    objects = list(msgpack.Unpacker(io.BytesIO(_encode(records)), raw=False, strict_map_key=False))
    assert objects[0] == {"format": "airflow-kafka-backup/msgpack", "version": 1}
    lengths, blocks = objects[1::2], objects[2::2]
    assert all(isinstance(n, int) for n in lengths) and len(blocks) == 2 and lengths[-1] == 0  # the end marker
    read = [Record(p, o, t, tt, k, v, [tuple(h) for h in hs]) for block in blocks for p, o, t, tt, k, v, hs in block]
    assert read == records


def test_a_record_larger_than_a_block_gets_a_block_of_its_own():
    records = [Record(0, 0, 0, "CreateTime", None, b"s", []),
               Record(0, 1, 0, "CreateTime", b"k", b"L" * (BLOCK_BYTES * 3), [("h", b"x")]),
               Record(0, 2, 0, "CreateTime", None, b"t", [])]
    data = _encode(records)
    assert _block_sizes(data) == [2, 1]
    assert _decode(data) == records


def test_blocks_close_on_record_count_and_on_bytes():
    many_small = _random_records(BLOCK_RECORDS * 2 + 1, seed=5, value_size=10)
    assert _block_sizes(_encode(many_small)) == [BLOCK_RECORDS, BLOCK_RECORDS, 1]
    value_size = 300_000  # four of these pass BLOCK_BYTES
    few_large = [Record(0, i, i, "CreateTime", None, b"x" * value_size, []) for i in range(9)]
    sizes = _block_sizes(_encode(few_large))
    per_block = -(-BLOCK_BYTES // value_size)
    assert sizes == [per_block, per_block, 9 - 2 * per_block]


def _block_sizes(data: bytes) -> list[int]:
    return [len(block) for block in list(msgpack.Unpacker(io.BytesIO(data), raw=False))[2::2]]


def test_a_file_that_is_not_a_msgpack_segment_is_named():
    with pytest.raises(IntegrityError, match="Not an airflow-kafka-backup msgpack segment of version 1"):
        _decode(b'{"partition":0}\n')


def test_truncated_and_damaged_blocks_are_named():
    data = _encode(TRICKY)
    with pytest.raises(IntegrityError, match="truncated: block 0"):
        _decode(data[:-10])
    with pytest.raises(IntegrityError, match="block 0 has no length prefix"):
        _decode(HEADER + b"\x01\x02")
    damaged = bytearray(data)
    damaged[len(HEADER) + 5] = 0xC1  # a byte msgpack never uses, where the block's array starts
    with pytest.raises(IntegrityError, match="damaged: block 0"):
        _decode(bytes(damaged))
    with pytest.raises(IntegrityError, match="data after its end marker"):
        _decode(data + b"\x00")


def test_a_file_cut_at_a_block_boundary_is_told_from_a_whole_one():
    data = _encode(_random_records(BLOCK_RECORDS + 5, seed=9))
    without_end = data[:-5]
    with pytest.raises(IntegrityError, match="ends after block 1 without its end marker"):
        _decode(without_end)
    first_length = int.from_bytes(data[len(HEADER) + 1:len(HEADER) + 5], "big")
    with pytest.raises(IntegrityError, match="ends after block 0 without its end marker"):
        _decode(data[:len(HEADER) + 5 + first_length])


def test_a_damaged_length_prefix_does_not_reserve_its_length_in_memory():
    tracemalloc.start()
    try:
        with pytest.raises(IntegrityError, match="truncated: block 0 has 10 of its 4294967280 bytes"):
            _decode(HEADER + b"\xce\xff\xff\xff\xf0" + b"x" * 10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_a_cut_or_damaged_compressed_file_is_named(compression):
    data = _encode(_random_records(3000, seed=10), compression)
    with pytest.raises(IntegrityError, match="truncated|damaged"):
        _decode(data[: len(data) // 2], compression)
    garbage = data[:20] + bytes(200) + data[220:]
    with pytest.raises(IntegrityError, match="truncated|damaged|Not an airflow-kafka-backup msgpack segment"):
        _decode(garbage, compression)


@pytest.mark.parametrize(("key", "value", "headers", "named"), [
    ("text", b"v", None, "key and value must be bytes or None, not str and bytes"),
    (b"k", bytearray(b"v"), None, "not bytes and bytearray"),
    (b"k", b"v", [(b"name", b"x")], r"a header must be \(str, bytes or None\), not \(bytes, bytes\)"),
    (b"k", b"v", [("name", "x")], r"not \(str, str\)"),
    (b"k", b"v", [(1, None)], r"not \(int, NoneType\)"),
])
def test_fields_of_the_wrong_type_fail_at_backup_time_naming_the_record(key, value, headers, named):
    encoder = get_format("msgpack").encoder(io.BytesIO(), get_compression("none"))
    with pytest.raises(TypeError, match=f"offset 42: .*{named}"):
        encoder.write_fields(0, 42, 0, 1, key, value, headers)
    encoder.close()


def test_an_unknown_timestamp_type_is_refused_not_passed_on():
    block = msgpack.packb([[0, 1, 2, "WallClock", None, None, []]])
    with pytest.raises(IntegrityError, match="damaged: block 0"):
        _decode(HEADER + b"\xce" + len(block).to_bytes(4, "big") + block)


def test_memory_is_one_block(monkeypatch):
    """Decoding never holds more than one block: a stream of many blocks is read incrementally."""
    monkeypatch.setattr(msgpack_format, "BLOCK_RECORDS", 10)
    records = _random_records(1000, seed=6)
    stream = _CountingReader(_encode(records))
    decoded = get_format("msgpack").decode(stream, get_compression("none"))
    first = [next(decoded) for _ in range(5)]
    assert first == records[:5]
    assert stream.position < len(stream.data) // 4  # far from having read the whole file


class _CountingReader(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self.data, self.position = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self.data[self.position:self.position + min(len(buffer), 4096)]
        buffer[:len(chunk)] = chunk
        self.position += len(chunk)
        return len(chunk)
