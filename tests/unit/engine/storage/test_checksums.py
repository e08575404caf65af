"""Unit tests: segment checksums (CRC64-NVME for new backups, sha256 for older ones) and the manifest format."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os

import pytest
from botocore.httpchecksum import CrtCrc64NvmeChecksum

from airflow_kafka_backup.engine.errors import ConfigurationError, IntegrityError
from airflow_kafka_backup.engine.storage.checksums import (
    CRC64NVME,
    SHA256,
    Checksum,
    ChecksumReader,
    ChecksumWriter,
    checksum_of,
    disagree,
    from_fields,
    pop_checksum,
    stored_checksum,
    validate_algorithm,
)
from airflow_kafka_backup.engine.storage.manifest import RunManifest, SegmentInfo, SegmentSettings

DATA = os.urandom(300_000)


def test_crc64nvme_is_the_standard_crc_in_s3s_form():
    # CRC-64/NVME's check value (the CRC of "123456789"), as the catalogue of parametrised CRCs gives it.
    check = checksum_of(CRC64NVME, b"123456789")
    assert base64.b64decode(check.value) == bytes.fromhex("ae8b14860a799888")
    theirs = CrtCrc64NvmeChecksum()  # what botocore would send as ChecksumCRC64NVME
    theirs.update(DATA)
    assert checksum_of(CRC64NVME, DATA).value == theirs.b64digest()
    assert checksum_of(CRC64NVME, b"").value == "AAAAAAAAAAA="


@pytest.mark.parametrize("algorithm", [CRC64NVME, SHA256])
def test_streaming_in_any_pieces_gives_the_one_shot_checksum(algorithm):
    whole = checksum_of(algorithm, DATA)
    raw = io.BytesIO()
    writer = ChecksumWriter(raw, algorithm)
    for start in range(0, len(DATA), 7_777):
        writer.write(memoryview(DATA)[start:start + 7_777])
    assert raw.getvalue() == DATA and writer.size == len(DATA) and writer.checksum() == whole
    assert checksum_of(algorithm, io.BytesIO(DATA)) == whole  # a file, read to its end
    reader = ChecksumReader(io.BytesIO(DATA), [algorithm])
    assert reader.read() == DATA
    assert reader.checksum() == whole and reader.mismatch(whole, len(DATA)) is None


def test_sha256_keeps_the_form_older_manifests_recorded():
    checksum = checksum_of(SHA256, DATA)
    assert checksum == Checksum(SHA256, hashlib.sha256(DATA).hexdigest())
    assert checksum.s3_value() == base64.b64encode(hashlib.sha256(DATA).digest()).decode()
    assert (checksum.s3_algorithm, checksum.s3_argument, checksum.s3_header) == (
        "SHA256", "ChecksumSHA256", "x-amz-checksum-sha256")
    crc = checksum_of(CRC64NVME, DATA)
    assert (crc.s3_value(), crc.s3_algorithm, crc.s3_argument) == (crc.value, "CRC64NVME", "ChecksumCRC64NVME")


def test_one_read_checks_several_algorithms_and_says_what_it_read_instead():
    reader = ChecksumReader(io.BytesIO(DATA), [CRC64NVME, SHA256, CRC64NVME])
    while reader.read(65_536):
        pass
    assert reader.checksum(SHA256) == checksum_of(SHA256, DATA)
    assert reader.checksum() == checksum_of(CRC64NVME, DATA)
    wrong = Checksum(CRC64NVME, "AAAAAAAAAAA=")
    assert reader.mismatch(wrong) == f"{len(DATA)} bytes with {checksum_of(CRC64NVME, DATA)}"
    assert reader.mismatch(checksum_of(CRC64NVME, DATA), size=len(DATA) + 1) is not None  # truncated


def test_documents_record_one_field_named_after_the_algorithm():
    crc = Checksum(CRC64NVME, "AAECAwQFBgc=")
    assert crc.as_field() == {"crc64nvme": "AAECAwQFBgc="} and str(crc) == "crc64nvme AAECAwQFBgc="
    assert from_fields({"key": "k", "sha256": "ab"}) == Checksum(SHA256, "ab")
    assert pop_checksum({"key": "k", "crc64nvme": "AAECAwQFBgc="}) == ({"key": "k"}, crc)
    for bad in ({"key": "k"}, {"sha256": "ab", "crc64nvme": "AAECAwQFBgc="}):
        with pytest.raises(ValueError, match="exactly one segment checksum"):
            from_fields(bad, "segment 'k'")


def test_only_checksums_of_one_algorithm_can_disagree():
    a, b = Checksum(SHA256, "ab"), Checksum(SHA256, "cd")
    assert disagree(a, b) and not disagree(a, a)
    assert not disagree(a, Checksum(CRC64NVME, "AAECAwQFBgc="))  # not comparable: the download decides


def test_the_stored_checksum_is_read_from_the_objects_metadata():
    assert stored_checksum({"Metadata": {"sha256": "ab"}}) == Checksum(SHA256, "ab")
    assert stored_checksum({"Metadata": {"crc64nvme": "AAECAwQFBgc="}}) == Checksum(CRC64NVME, "AAECAwQFBgc=")
    assert stored_checksum({"Metadata": {}}) is None and stored_checksum(None) is None


def test_the_setting_is_validated_naming_the_choices():
    assert validate_algorithm(None) == validate_algorithm("None") == CRC64NVME
    assert validate_algorithm("sha256") == SHA256
    with pytest.raises(ConfigurationError, match="segment_checksum must be one of crc64nvme, sha256, got 'md5'"):
        validate_algorithm("md5")


# --- the manifest format ---------------------------------------------------------------------------------------

# A manifest as the versions before CRC64-NVME wrote it: format 1, a sha256 per segment, no checksum setting.
FORMAT_1 = json.dumps({
    "format_version": 1, "run_id": "scheduled__1", "encryption": {}, "topics": [], "consumer_groups": {},
    "settings": {"segment_format": "msgpack", "compression": "zstd", "flush_size": 10, "offset_pad_width": 10,
                 "rotate_interval_ms": None, "rotate_schedule_interval_ms": None, "timezone": "UTC",
                 "compression_level": 1},
    "ranges": [{"topic": "t", "partition": 0, "start": 0, "end": 10, "lost_start": None, "lost_end": None}],
    "segments": [{"key": "p/t/partition=0/t+0+0000000000.msgpack.zst", "topic": "t", "partition": 0,
                  "first_offset": 0, "last_offset": 9, "records": 10, "min_timestamp": 1, "max_timestamp": 2,
                  "bytes": 100, "sha256": "ab" * 32, "max_record_bytes": 9}],
}, sort_keys=True, indent=1).encode() + b"\n"


def _segment(checksum: Checksum) -> SegmentInfo:
    return SegmentInfo("p/t/partition=0/t+0+0000000000.msgpack.zst", "t", 0, 0, 9, 10, 1, 2, 100, checksum, 9)


def test_a_format_1_manifest_reads_with_its_sha256s_and_keeps_its_bytes():
    manifest = RunManifest.from_json(FORMAT_1)
    (segment,) = manifest.segments
    assert segment.checksum == Checksum(SHA256, "ab" * 32)
    assert manifest.settings.segment_checksum == SHA256 and manifest.format_version == 1
    assert manifest.to_json() == FORMAT_1


def test_new_manifests_record_crc64nvme_as_format_2():
    crc = Checksum(CRC64NVME, "AAECAwQFBgc=")
    settings = SegmentSettings("msgpack", "zstd", 10, 10, compression_level=1, segment_checksum=CRC64NVME)
    manifest = RunManifest("scheduled__2", settings, segments=[_segment(crc)])
    body = json.loads(manifest.to_json())
    assert body["format_version"] == 2 and body["settings"]["segment_checksum"] == "crc64nvme"
    assert body["segments"][0]["crc64nvme"] == "AAECAwQFBgc=" and "sha256" not in body["segments"][0]
    again = RunManifest.from_json(manifest.to_json())
    assert again.segments == manifest.segments and again.settings == settings
    assert again.to_json() == manifest.to_json()


def test_a_new_run_that_chose_sha256_writes_format_1_which_older_versions_read():
    settings = SegmentSettings("msgpack", "zstd", 10, 10, compression_level=1, segment_checksum=SHA256)
    manifest = RunManifest("scheduled__1", settings, [], [_segment(Checksum(SHA256, "ab" * 32))])
    from_older = RunManifest.from_json(FORMAT_1)
    manifest.ranges = from_older.ranges
    assert manifest.to_json() == FORMAT_1


def test_a_manifest_of_a_newer_format_is_refused_naming_it():
    newer = FORMAT_1.replace(b'"format_version": 1', b'"format_version": 4')
    with pytest.raises(IntegrityError, match="run 'scheduled__1' has format version 4; .* up to 3. Upgrade"):
        RunManifest.from_json(newer)


def test_new_backups_default_to_crc64nvme_everywhere_and_sha256_can_be_chosen():
    import inspect

    from airflow_kafka_backup.dag_factories import backup_params
    from airflow_kafka_backup.engine.backup.settings import BackupSettings
    from airflow_kafka_backup.operators.backup import KafkaBackupPlanOperator

    assert BackupSettings.create(topics=["t"], bucket="b").segments.segment_checksum == CRC64NVME
    chosen = BackupSettings.create(topics=["t"], bucket="b", segment_checksum="sha256").segments
    assert chosen.segment_checksum == SHA256 and "segment_checksum" not in chosen.to_dict()  # format 1's settings
    with pytest.raises(ConfigurationError, match="segment_checksum must be one of"):
        BackupSettings.create(topics=["t"], bucket="b", segment_checksum="crc32")
    operator = inspect.signature(KafkaBackupPlanOperator.__init__).parameters
    assert backup_params(topics=["t"], bucket="b")["segment_checksum"].value == operator["segment_checksum"].default
    assert operator["segment_checksum"].default == CRC64NVME
    assert "segment_checksum" in KafkaBackupPlanOperator.template_fields
