"""Unit tests: gzip through ISA-L is standard gzip, levels are validated, old manifests keep their encoder."""

from __future__ import annotations

import gzip
import io
import json

import pytest
import zstandard

from airflow_kafka_backup.engine.backup.manual_ranges import _describe
from airflow_kafka_backup.engine.backup.settings import BackupSettings
from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.formats.compression import (
    DEFAULT_LEVEL,
    LEGACY,
    get_compression,
    new_run_compression,
)
from airflow_kafka_backup.engine.formats.segment_codec import get_format
from airflow_kafka_backup.engine.records import Record
from airflow_kafka_backup.engine.storage.manifest import RunManifest, SegmentSettings

RECORDS = [Record(0, i, 1_700_000_000_000 + i, "CreateTime", b"k%d" % i, b"value %d " % i * 20, [("h", b"x")])
           for i in range(500)]


def _segment(fmt: str, codec) -> bytes:
    raw = io.BytesIO()
    encoder = get_format(fmt).encoder(raw, codec)
    for record in RECORDS:
        encoder.write(record)
    encoder.close()
    return raw.getvalue()


@pytest.mark.parametrize("level", [0, 1, 2, 3])
@pytest.mark.parametrize("fmt", ["jsonl", "msgpack"])
def test_isal_gzip_segments_are_standard_gzip_that_the_stdlib_reads(fmt, level):
    isal = get_compression("gzip", level, "isal")
    data = _segment(fmt, isal)
    # The plain bytes, as the standard library's gzip decodes them, are the very bytes of an uncompressed segment.
    assert gzip.decompress(data) == _segment(fmt, get_compression("none"))
    assert data[3] == 0 and data[4:8] == b"\0\0\0\0"  # no file name, mtime 0: output depends on the input only
    assert _segment(fmt, isal) == data  # deterministic
    assert list(get_format(fmt).decode(io.BytesIO(data), get_compression("gzip"))) == RECORDS


def test_segments_of_the_old_zlib_encoder_are_still_written_byte_for_byte_and_read():
    """A manifest without level and library re-runs with the standard library's zlib at level 6, as before."""
    settings = SegmentSettings("jsonl", "gzip", 100, 10)
    legacy = get_compression(settings.compression, settings.compression_level, settings.compression_library)
    assert legacy is LEGACY["gzip"] and (legacy.library, legacy.level) == ("zlib", 6)
    plain = _segment("jsonl", get_compression("none"))
    expected = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=expected, compresslevel=6, mtime=0) as f:
        f.write(plain)
    assert _segment("jsonl", legacy) == expected.getvalue()
    assert list(get_format("jsonl").decode(io.BytesIO(expected.getvalue()), get_compression("gzip"))) == RECORDS
    # and the ISA-L bytes differ: which is why the library is recorded
    assert _segment("jsonl", get_compression("gzip", 6 - 5, "isal")) != expected.getvalue()


def test_zstd_levels_and_the_legacy_zstd_level():
    assert (LEGACY["zstd"].level, LEGACY["zstd"].library) == (3, None)
    for level in (1, 3, 19):
        data = _segment("msgpack", get_compression("zstd", level))
        assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read() == \
            _segment("msgpack", get_compression("none"))


@pytest.mark.parametrize(
    ("compression", "level", "message"),
    [
        ("gzip", 4, "compression_level for compression 'gzip' must be a whole number from 0 to 3 .default 1., got 4"),
        ("gzip", -1, "from 0 to 3"),
        ("zstd", 0, "compression_level for compression 'zstd' must be a whole number from 1 to 22"),
        ("zstd", 23, "from 1 to 22"),
        ("zstd", "fast", "got 'fast'"),
        ("zstd", True, "got True"),
        ("none", 1, "compression_level must be empty with compression 'none', got 1"),
    ],
)
def test_levels_are_validated_per_codec_naming_the_param(compression, level, message):
    with pytest.raises(ConfigurationError, match=message):
        BackupSettings.create(topics=["t"], bucket="b", compression=compression, compression_level=level)


def test_new_runs_record_their_level_and_library():
    assert new_run_compression("gzip") == (DEFAULT_LEVEL["gzip"], "isal")
    assert new_run_compression("zstd", "7") == (7, None)
    assert new_run_compression("zstd", "None") == (DEFAULT_LEVEL["zstd"], None)
    assert new_run_compression("none") == (None, None)
    segments = BackupSettings.create(topics=["t"], bucket="b", compression="gzip", compression_level=2).segments
    assert (segments.compression_level, segments.compression_library) == (2, "isal")
    assert "gzip level 2 (isal)" in _describe(segments)


def test_settings_round_trip_and_old_manifests_keep_their_bytes():
    old = json.dumps({"format_version": 1, "run_id": "r", "encryption": {}, "topics": [], "consumer_groups": {},
                      "ranges": [], "segments": [],
                      "settings": {"segment_format": "jsonl", "compression": "gzip", "flush_size": 10,
                                   "offset_pad_width": 10, "rotate_interval_ms": None,
                                   "rotate_schedule_interval_ms": None, "timezone": "UTC"}},
                     sort_keys=True, indent=1).encode() + b"\n"
    manifest = RunManifest.from_json(old)
    assert (manifest.settings.compression_level, manifest.settings.compression_library) == (None, None)
    assert manifest.to_json() == old  # rewritten, an old manifest is the same bytes
    new = RunManifest("r2", SegmentSettings("msgpack", "gzip", 10, 10, compression_level=1,
                                            compression_library="isal"))
    assert RunManifest.from_json(new.to_json()).settings == new.settings
    assert b'"compression_library": "isal"' in new.to_json()


def test_the_shipped_defaults_are_msgpack_and_zstd_level_1_everywhere():
    import inspect

    from airflow_kafka_backup.dag_factories import backup_params
    from airflow_kafka_backup.operators.backup import KafkaBackupPlanOperator

    segments = BackupSettings.create(topics=["t"], bucket="b").segments
    assert (segments.segment_format, segments.compression, segments.compression_level,
            segments.compression_library) == ("msgpack", "zstd", 1, None)
    params = backup_params(topics=["t"], bucket="b")
    operator = inspect.signature(KafkaBackupPlanOperator.__init__).parameters
    for name, value in (("segment_format", "msgpack"), ("compression", "zstd"), ("compression_level", None)):
        assert params[name].value == operator[name].default == value
