"""Unit tests: a run of more than PART_RANGES ranges commits a parted manifest (format 3), read back whole or in
the wanted topics' parts only; smaller runs keep the single-object manifest.

The store is an in-memory fake; tests/integration/backup/test_manifest_parts.py backs up and restores a parted
run against the moto server and the real broker.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from airflow_kafka_backup.engine.errors import IntegrityError
from airflow_kafka_backup.engine.restore.held_manifests import read_manifests
from airflow_kafka_backup.engine.storage.checksums import CRC64NVME, Checksum
from airflow_kafka_backup.engine.storage.key_layout import manifest_key
from airflow_kafka_backup.engine.storage.manifest import (
    PART_RANGES,
    PartitionRange,
    RunManifest,
    SegmentInfo,
    SegmentSettings,
    load_manifests,
    parse_manifest,
    read_manifest,
    write_manifest,
)


class MemoryStore:
    bucket = "b"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.gets: Counter[str] = Counter()

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self.objects[key] = data

    def get_bytes(self, key: str) -> bytes:
        self.gets[key] += 1
        return self.objects[key]

    def get_bytes_if_exists(self, key: str) -> bytes | None:
        return self.get_bytes(key) if key in self.objects else None

    def list_keys(self, prefix: str, start_after: str | None = None):
        return sorted(k for k in self.objects if k.startswith(prefix))


def _run(partitions: dict[str, int], run_id: str = "scheduled__1") -> RunManifest:
    ranges, segments = [], []
    for topic, count in partitions.items():
        for p in range(count):
            ranges.append(PartitionRange(topic, p, 0, 10, topic_id=f"id-{topic}"))
            segments.append(SegmentInfo(f"kb/{topic}/partition={p}/{topic}+{p}+0000000000.msgpack.zst", topic, p,
                                        0, 9, 10, 1, 2, 300, Checksum(CRC64NVME, "AAAAAAAAAAA="),
                                        max_record_bytes=20, topic_id=f"id-{topic}"))
    return RunManifest(
        run_id, SegmentSettings("msgpack", "zstd", 10000, 10, segment_checksum=CRC64NVME), ranges, segments,
        topics=[{"topic": t, "partitions": n, "replication_factor": 1, "configs": {}} for t, n in partitions.items()],
        consumer_groups={"billing": {t: {"0": 5} for t in partitions}, "idle": {}},
        incarnations={t: [f"id-{t}"] for t in partitions})


def test_a_run_of_up_to_part_ranges_ranges_keeps_the_single_object_manifest():
    manifest = _run({"orders": PART_RANGES})
    assert manifest.objects("kb") == [(manifest_key("kb", "scheduled__1"), manifest.to_json())]
    assert json.loads(manifest.to_json())["format_version"] == 2


def test_a_larger_run_is_written_in_parts_of_whole_topics_and_read_back_the_same():
    manifest = _run({"a": 400, "b": 400, "c": 400, "huge": 1500})
    store = MemoryStore()
    key = write_manifest(store, "kb", manifest)
    written = list(store.objects)
    assert written[-1] == key, "the parts first, the manifest (the commit point) last"
    index = json.loads(store.objects[key])
    assert index["format_version"] == 3 and "segments" not in index and "ranges" not in index
    assert [p["topics"] for p in index["parts"]] == [{"a": 400, "b": 400}, {"c": 400}, {"huge": 1500}]
    assert [p["ranges"] for p in index["parts"]] == [800, 400, 1500]
    assert all(k.startswith("kb/_manifest_parts/run=scheduled__1/part=") for k in written[:-1])

    again = read_manifest(store, "kb", "scheduled__1")
    assert again == RunManifest(**{**manifest.__dict__, "format_version": 3})
    assert again.objects("kb") == [(k, store.objects[k]) for k in written], "a re-run writes the same bytes"
    assert [m.run_id for m in load_manifests(store, "kb")] == ["scheduled__1"], "parts are not manifests"


def test_a_reader_of_some_topics_reads_only_their_parts_and_still_knows_every_topic():
    store = MemoryStore()
    write_manifest(store, "kb", _run({"a": 400, "b": 400, "c": 400, "huge": 1500}))
    vetted = []
    held = read_manifests(store, "kb", {"c"}.__contains__, vetted.append)
    assert [m.run_id for m in vetted] == ["scheduled__1"] and not vetted[0].segments, "vetted on the index"
    (manifest,) = held.manifests
    assert {r.topic for r in manifest.ranges} == {"c"} and len(manifest.segments) == 400
    assert manifest.consumer_groups == {"billing": {"c": {"0": 5}}}
    assert held.topics == {"a", "b", "c", "huge"}
    assert [k.rsplit("/", 1)[-1] for k in store.gets if "_manifest_parts" in k] == ["part=00001.json"]


def test_a_part_changed_after_the_commit_is_refused_naming_it():
    store = MemoryStore()
    key = write_manifest(store, "kb", _run({"a": 700, "b": 700}))
    part = json.loads(store.objects[key])["parts"][1]["key"]
    store.objects[part] = store.objects[part].replace(b'"end": 10', b'"end": 11', 1)
    with pytest.raises(IntegrityError, match=f"Part {part} of run scheduled__1's manifest is not the one"):
        read_manifest(store, "kb", "scheduled__1")
    parse_manifest(store, store.objects[key], wanted={"a"}.__contains__)  # the other part is still readable


def test_a_topic_with_metadata_but_no_range_in_a_part_is_not_offered_for_restore():
    store = MemoryStore()
    manifest = _run({"a": 700, "b": 700})
    manifest.topics.append({"topic": "metadata-only", "partitions": 1, "replication_factor": 1, "configs": {}})
    write_manifest(store, "kb", manifest)
    assert read_manifests(store, "kb", {"a"}.__contains__).topics == {"a", "b"}


def test_a_re_run_of_a_large_run_committed_in_one_object_keeps_that_format():
    store = MemoryStore()
    old = RunManifest(**{**_run({"a": 700, "b": 700}).__dict__, "format_version": 2})
    store.objects[manifest_key("kb", "scheduled__1")] = old.to_json()
    again = read_manifest(store, "kb", "scheduled__1")
    assert again.objects("kb") == [(manifest_key("kb", "scheduled__1"), old.to_json())]
