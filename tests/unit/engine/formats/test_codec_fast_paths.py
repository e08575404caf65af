"""Unit tests: the JSON Lines fast paths give exactly what the plain JSON / binascii code gives.

The reference here is the decoder as it was before the fast path: ``json.loads`` of the
line and ``base64.b64decode(..., validate=True)`` of every bytes field. The encoder's
reference is ``binascii`` (what it used before ``pybase64``).
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import io
import json
import random
import sys
from functools import partial

import pytest

from airflow_kafka_backup.engine.formats import segment_codec
from airflow_kafka_backup.engine.formats.base import decode_fields
from airflow_kafka_backup.engine.formats.compression import COMPRESSIONS, get_compression
from airflow_kafka_backup.engine.formats.segment_codec import _parse_line, get_format
from airflow_kafka_backup.engine.records import Record
from tests.helpers import encode_segment

TRICKY = [
    Record(0, 0, 1, "CreateTime", None, None, []),
    Record(0, 1, 2, "CreateTime", b"", b"", []),
    Record(0, 2, 3, "CreateTime", None, b"", []),
    Record(0, 3, 4, "CreateTime", b"", None, []),
    Record(0, 4, 5, "LogAppendTime", b"\xff\xfe\x00", b"\x00\x80\xc3\x28", [("h", None), ("h", b""), ("h", b"x")]),
    Record(0, 7, 0, "NoTimestampType", "ключ".encode(), b"v" * 5000, [("ü\"\\n", b"\xff"), ("a", None)]),
    Record(0, 8, -1, "NoTimestampType", b"k", b"v", [("\u2603 snow\u00a0man", b"\x00" * 3), ("", None)]),
    Record(12, 2**62, 1_700_000_000_000, "CreateTime", b"\"},{", b"\\\n\r\t", [("\x00\x1f", b"\"")]),
    Record(3, 9, 10, "CreateTime", b"k", b"v", [("dup", b"1"), ("dup", None), ("dup", b"1"), ("dup", b"")]),
]


def _reference_decode(line: bytes) -> tuple:
    """The decoder before the fast path existed."""
    def unb64(text):
        return None if text is None else base64.b64decode(text, validate=True)

    obj = json.loads(line)
    return (obj["partition"], obj["offset"], obj["timestamp"], obj["timestamp_type"], unb64(obj["key"]),
            unb64(obj["value"]), [(name, unb64(value)) for name, value in obj["headers"]])


_encode = partial(encode_segment, "jsonl")


def _random_records(count: int, seed: int) -> list[Record]:
    rng = random.Random(seed)
    records = []
    for i in range(count):
        key = None if rng.random() < 0.1 else rng.randbytes(rng.randrange(0, 40))
        value = None if rng.random() < 0.1 else rng.randbytes(rng.randrange(0, 3000))
        headers = [(rng.choice(["a", "b", "ä", "\u2603"]), None if rng.random() < 0.3 else rng.randbytes(5))
                   for _ in range(rng.randrange(3))]
        records.append(Record(rng.randrange(100), i, rng.randrange(-1, 2**41), rng.choice(
            ["NoTimestampType", "CreateTime", "LogAppendTime"]), key, value, headers))
    return records


@pytest.mark.parametrize("records", [TRICKY, _random_records(500, seed=7)], ids=["tricky", "random"])
def test_fast_path_takes_every_line_the_encoder_writes_and_equals_the_reference(records):
    lines = _encode(records).splitlines(keepends=True)
    assert len(lines) == len(records)
    for line, record in zip(lines, records, strict=True):
        fast = _parse_line(line)
        assert fast is not None, line  # the encoder's own lines never need the JSON parser
        assert fast == _reference_decode(line)
        assert Record(*fast) == record
        assert [type(v) for v in fast] == [type(v) for v in _reference_decode(line)]


def test_last_line_without_newline_still_takes_the_fast_path():
    line = _encode(TRICKY[4:5]).rstrip(b"\n")
    assert _parse_line(line) == _reference_decode(line)


def _json_line(obj: dict, **dumps_options) -> bytes:
    return json.dumps(obj, **dumps_options).encode() + b"\n"


_OBJ = {"partition": 1, "offset": 5, "timestamp": 7, "timestamp_type": "CreateTime", "key": "a2V5",
        "value": "dmFsdWU=", "headers": [["h", "eA=="], ["h", None]]}
_COMPACT = {"separators": (",", ":")}
# Valid JSON with the same fields, spelled otherwise than the encoder writes it: whichever
# path takes each line (msgspec, or the JSON parser when msgspec refuses it), it must
# decode exactly as before.
OTHER_SPELLINGS = [
    _json_line(_OBJ),  # json.dumps' default separators (spaces)
    _json_line(dict(reversed(list(_OBJ.items()))), **_COMPACT),  # another field order
    _json_line(_OBJ, **_COMPACT).replace(b"dmFsdWU=", b"dmF\\u0073dWU="),  # a \\u escape in the value
    _json_line({**_OBJ, "value": "a/b+"}, **_COMPACT).replace(b"a/b+", b"a\\/b+"),  # escaped solidus
    _json_line({**_OBJ, "timestamp": 7.0}, **_COMPACT),  # a float
    _json_line({**_OBJ, "timestamp": 7}, **_COMPACT).replace(b'"timestamp":7', b'"timestamp":7e0'),  # exponent
    _json_line({**_OBJ, "timestamp_type": "SomethingElse"}, **_COMPACT),  # unknown type name
    _json_line({**_OBJ, "extra": 1}, **_COMPACT),  # an extra field after the headers
    _json_line(_OBJ, **_COMPACT).replace(b"}\n", b"}\r\n"),  # CRLF
    _json_line(_OBJ, **_COMPACT).replace(b"}\n", b"} \n"),  # trailing space
    b"\xef\xbb\xbf" + _json_line(_OBJ, **_COMPACT),  # UTF-8 byte order mark
    _json_line(_OBJ, **_COMPACT).replace(b'"offset":5', b'"offset":4,"offset":5'),  # a duplicate key: the last
    _json_line({**_OBJ, "partition": True}, **_COMPACT),  # a boolean where an integer belongs
    _json_line({**_OBJ, "headers": [["\ud800", None]]}, **_COMPACT),  # a lone surrogate in a header name
]
# Headers are parsed as JSON even on the fast path, so any JSON spelling of them works there.
HEADER_SPELLINGS = [
    _json_line({**_OBJ, "headers": [["\u00fc\u2603", "eA=="]]}, **_COMPACT),  # ASCII-escaped header name
    _json_line(_OBJ, **_COMPACT).replace(b'[["h"', b'[ ["h" '),  # whitespace inside the array
    _json_line({**_OBJ, "headers": [["h", "eA=="]]}, **_COMPACT).replace(b'"eA=="', b'"\\u0065A=="'),
]


@pytest.mark.parametrize("line", OTHER_SPELLINGS)
def test_other_spellings_of_a_record_decode_as_before(line):
    reference = _reference_decode(line)
    assert _parse_line(line) in (None, reference)
    (decoded,) = decode_fields(get_format("jsonl"), io.BytesIO(line), get_compression("none"))
    assert decoded == reference
    assert [type(v) for v in decoded] == [type(v) for v in reference]


def test_msgspec_accepts_no_base64_the_reference_refuses_and_decodes_the_same_bytes():
    rng = random.Random(5)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
    refused_by_both = 0
    for _ in range(40_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(13)))
        line = _json_line({**_OBJ, "value": text}, **_COMPACT)
        fast = _parse_line(line)
        try:
            reference = _reference_decode(line)
        except binascii.Error:
            assert fast is None, text
            refused_by_both += 1
            continue
        assert fast in (None, reference), text
    assert refused_by_both > 1000  # the sample did hold invalid base64


@pytest.mark.parametrize("line", HEADER_SPELLINGS)
def test_any_json_spelling_of_the_headers_decodes_as_before(line):
    assert _parse_line(line) == _reference_decode(line)


@pytest.mark.parametrize("line", [
    _json_line(_OBJ, **_COMPACT).replace(b'"offset":5', b'"offset":05'),  # leading zero: not JSON
    _json_line(_OBJ, **_COMPACT).replace(b"a2V5", b"a2V"),  # bad padding
    _json_line(_OBJ, **_COMPACT).replace(b"a2V5", b"a2V5\\n"),  # newline escape inside base64
    _json_line(_OBJ, **_COMPACT).replace(b'"eA=="', b'"e A=="'),  # space inside a header value
    _json_line(_OBJ, **_COMPACT).replace(b"]]}\n", b"]]"),  # truncated
    _json_line(_OBJ, **_COMPACT).replace(b'"key":"a2V5"', b'"key":"a2V5'),  # unbalanced quote
    _json_line({**_OBJ, "headers": {"h": "eA=="}}, **_COMPACT),  # headers not a list
    _json_line({**_OBJ, "headers": [["h", 1]]}, **_COMPACT),  # a header value not a string
])
def test_lines_the_reference_rejects_are_rejected(line):
    with pytest.raises((ValueError, TypeError)) as reference:
        _reference_decode(line)
    with pytest.raises(reference.type):
        list(decode_fields(get_format("jsonl"), io.BytesIO(line), get_compression("none")))


@pytest.mark.parametrize("compression", sorted(COMPRESSIONS))
def test_decode_and_decode_fields_agree(compression):
    records = TRICKY + _random_records(200, seed=11)
    data = _encode(records, compression)
    fmt, codec = get_format("jsonl"), get_compression(compression)
    assert list(fmt.decode(io.BytesIO(data), codec)) == records
    assert [Record(*f) for f in decode_fields(fmt, io.BytesIO(data), codec)] == records


def test_decode_fields_adapts_formats_without_a_fast_path():
    data = encode_segment("avro", TRICKY)
    decoded = decode_fields(get_format("avro"), io.BytesIO(data), get_compression("none"))
    assert [Record(*f) for f in decoded] == TRICKY


def test_binascii_fallback_writes_the_same_bytes_and_reads_them_back(monkeypatch):
    records = TRICKY + _random_records(300, seed=5)
    with_default = _encode(records)
    monkeypatch.setattr(segment_codec, "_b64encode", segment_codec._binascii_b64encode)
    monkeypatch.setattr(segment_codec, "_b64decode", segment_codec._binascii_b64decode)
    assert _encode(records) == with_default
    assert list(get_format("jsonl").decode(io.BytesIO(with_default), get_compression("none"))) == records


def test_base64_functions_agree_on_every_length():
    rng = random.Random(2)
    for n in [*range(0, 130), 1023, 1024, 1025, 4096, 65_537]:
        data = rng.randbytes(n)
        encoded = segment_codec._b64encode(data)
        assert encoded == segment_codec._binascii_b64encode(data) == base64.b64encode(data)
        assert segment_codec._b64decode(encoded) == segment_codec._binascii_b64decode(encoded) == data


def test_the_codec_works_without_pybase64(monkeypatch):
    """A fresh copy of the module, imported with pybase64 unavailable, falls back to binascii."""
    monkeypatch.setitem(sys.modules, "pybase64", None)  # makes `import pybase64` raise ImportError
    spec = importlib.util.spec_from_file_location("segment_codec_without_pybase64", segment_codec.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.pybase64 is None and module._b64encode is module._binascii_b64encode
    raw = io.BytesIO()
    encoder = module.JsonLinesEncoder(raw, get_compression("none"))
    for r in TRICKY:
        encoder.write(r)
    encoder.close()
    assert raw.getvalue() == _encode(TRICKY)
    assert list(module.JsonLinesFormat().decode(io.BytesIO(raw.getvalue()), get_compression("none"))) == TRICKY


def _reference_headers_json(headers) -> bytes:
    """How the encoder wrote headers before :func:`segment_codec._headers_json`."""
    return json.dumps([[name, None if v is None else base64.b64encode(v).decode("ascii")] for name, v in headers],
                      separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("headers", [
    [("h", None)],
    [("h", b""), ("h", b"x"), ("h", None), ("h", b"x")],
    [("", b"\x00\xff")],
    [('quote " and backslash \\', b"1"), ("slash / solidus", b"2")],
    [("".join(map(chr, range(0x20))) + "\x7f", b"3")],  # every control character
    [("ü ключ 雪 \U0001f600", b"4"), ("\u2028\u2029", None)],  # non-ASCII, emoji, JSON-unsafe separators
    [("tuple", b"5")] * 50,
    [["list", b"6"]],
    [(1, b"7"), ("after a non-str name", None)],  # not a Kafka header, still written as before
])
def test_headers_are_written_byte_for_byte_as_json_dumps_wrote_them(headers):
    assert segment_codec._headers_json(headers) == _reference_headers_json(headers)


def _reference_line(r: Record) -> bytes:
    """A line as the encoder wrote it before this change (binascii, json.dumps, head and tail templates)."""
    head = b'{"partition":%d,"offset":%d,"timestamp":%d,"timestamp_type":"%s",' % (
        r.partition, r.offset, r.timestamp, r.timestamp_type.encode())
    tail = {
        (False, False): b'"key":"%s","value":"%s","headers":%s}\n',
        (True, False): b'"key":%snull,"value":"%s","headers":%s}\n',
        (False, True): b'"key":"%s","value":null%s,"headers":%s}\n',
        (True, True): b'"key":%snull,"value":null%s,"headers":%s}\n',
    }[r.key is None, r.value is None]
    return head + tail % (
        b"" if r.key is None else binascii.b2a_base64(r.key, newline=False),
        b"" if r.value is None else binascii.b2a_base64(r.value, newline=False),
        _reference_headers_json(r.headers) if r.headers else b"[]",
    )


def test_segments_are_byte_identical_to_what_the_encoder_wrote_before():
    records = TRICKY + _random_records(500, seed=13)
    assert _encode(records) == b"".join(_reference_line(r) for r in records)
