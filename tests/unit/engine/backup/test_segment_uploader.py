"""Unit tests: the uploader's "same bytes already there" check, across checksum algorithms.

A re-run over offsets that an older version backed up finds objects whose stored checksum is
a sha256, while this run's segments carry CRC64-NVMEs: the bytes are compared through a sha256
of the segment, and the segment is recorded as the object and its manifest record it.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace

import pytest

from airflow_kafka_backup.engine.backup.partition_writer import ClosedSegment
from airflow_kafka_backup.engine.backup.segment_uploader import SegmentUploader
from airflow_kafka_backup.engine.backup.spool import SegmentSpool, SpoolBudget
from airflow_kafka_backup.engine.errors import ConflictError
from airflow_kafka_backup.engine.storage.checksums import CRC64NVME, SHA256, checksum_of, metadata
from airflow_kafka_backup.engine.storage.manifest import SegmentInfo

KEY = "p/t/partition=0/t+0+0000000000.msgpack.zst"
DATA = os.urandom(50_000)


class HeadStore:
    """Answers HeadObject from ``objects`` (key -> (bytes, metadata)); records the uploads."""

    bucket = "b"

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, dict]] = {}
        self.puts: list[tuple[str, bytes, object]] = []

    def head(self, key: str) -> dict | None:
        if key not in self.objects:
            return None
        data, meta = self.objects[key]
        return {"ContentLength": len(data), "Metadata": meta}

    def put_body(self, key, body, size, checksum) -> None:
        data = body if isinstance(body, bytes) else body.read()
        self.puts.append((key, data, checksum))
        self.objects[key] = (data, metadata(checksum))


def _segment(data: bytes = DATA, algorithm: str = CRC64NVME) -> ClosedSegment:
    spool = SegmentSpool("t+0+", None, SpoolBudget())
    spool.write(data)
    spool.close()
    info = SegmentInfo(KEY, "t", 0, 0, 9, 10, 1, 2, len(data), checksum_of(algorithm, data))
    return ClosedSegment(spool, info)


def _upload(store: HeadStore, segment: ClosedSegment, committed: bool = True) -> SegmentUploader:
    uploader = SegmentUploader(store, is_committed=lambda key: committed)
    uploader.submit(segment)
    uploader.drain()
    return uploader


def test_a_new_segment_goes_up_with_its_crc64nvme():
    store = HeadStore()
    uploader = _upload(store, segment := _segment())
    assert store.puts == [(KEY, DATA, segment.info.checksum)] and uploader.uploaded == [segment.info]


@pytest.mark.parametrize(("ours", "theirs"), [(CRC64NVME, CRC64NVME), (CRC64NVME, SHA256), (SHA256, CRC64NVME)])
def test_the_same_bytes_under_either_checksum_are_skipped_and_recorded_as_stored(ours, theirs):
    store = HeadStore()
    stored = checksum_of(theirs, DATA)
    store.objects[KEY] = (DATA, metadata(stored))
    uploader = _upload(store, segment := _segment(algorithm=ours))
    assert store.puts == [] and uploader.skipped == 1
    # As the object (and the manifest that committed it) records it: a re-run writes the same manifest.
    assert uploader.uploaded == [replace(segment.info, checksum=stored)]


@pytest.mark.parametrize("theirs", [CRC64NVME, SHA256])
def test_different_committed_bytes_are_refused_naming_both_checksums(theirs):
    store = HeadStore()
    other = DATA[:-1] + bytes([DATA[-1] ^ 1])
    store.objects[KEY] = (other, metadata(checksum_of(theirs, other)))
    with pytest.raises(ConflictError, match=re.escape(f"{KEY} is part of a committed backup and holds different "
                                                      f"bytes ({theirs} ") + f".*than this run produced \\({theirs} "):
        _upload(store, _segment())
    assert store.puts == []


def test_an_uncommitted_leftover_with_other_bytes_is_replaced():
    store = HeadStore()
    store.objects[KEY] = (b"leftover", metadata(checksum_of(SHA256, b"leftover")))
    _upload(store, segment := _segment(), committed=False)
    assert store.puts == [(KEY, DATA, segment.info.checksum)]
    assert store.head(KEY)["Metadata"] == {"crc64nvme": segment.info.checksum.value}
