"""Unit tests: record sizes from the backup to the restore (manifest field, producer sizing, target checks)."""

from __future__ import annotations

import json

import pytest

from airflow_kafka_backup.engine.backup.partition_writer import TopicPartitionWriter
from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.record_size import (
    MIN_FRAMING_BYTES,
    PRODUCER_HEADROOM_BYTES,
    created_topic_size_config,
    producer_size_config,
    record_size_problems,
)
from airflow_kafka_backup.engine.records import Record, record_bytes
from airflow_kafka_backup.engine.restore.planning import PartitionRestore, PlannedSegment
from airflow_kafka_backup.engine.restore.target_topics import check_targets_take_records, largest_records
from airflow_kafka_backup.engine.storage.checksums import SHA256, Checksum
from airflow_kafka_backup.engine.storage.manifest import RunManifest, SegmentInfo, SegmentSettings

MB = 1 << 20


def test_record_bytes_counts_key_value_and_header_names_in_utf8_and_values():
    assert record_bytes(None, None, None) == 0
    assert record_bytes(b"", b"", []) == 0
    assert record_bytes(b"k", b"vv", [("ü", b"123"), ("n", None)]) == 1 + 2 + (2 + 3) + (1 + 0)


def _info(**extra) -> SegmentInfo:
    return SegmentInfo("p/t/partition=0/t+0+0.jsonl", "t", 0, 0, 9, 10, 1, 2, 100, Checksum(SHA256, "ab"), **extra)


def _manifest(*segments: SegmentInfo) -> RunManifest:
    return RunManifest("r1", SegmentSettings("jsonl", "none", 10, 10), segments=list(segments))


def test_a_manifest_without_record_sizes_keeps_its_bytes_and_loads():
    old = _manifest(_info()).to_json()
    assert b"max_record_bytes" not in old  # what manifests written before the field hold, byte for byte
    loaded = RunManifest.from_json(old)
    assert loaded.segments[0].max_record_bytes is None
    assert loaded.to_json() == old


def test_a_manifest_with_record_sizes_round_trips_them():
    data = _manifest(_info(max_record_bytes=5 * MB)).to_json()
    assert json.loads(data)["segments"][0]["max_record_bytes"] == 5 * MB
    assert RunManifest.from_json(data).segments[0].max_record_bytes == 5 * MB


def test_the_writer_records_each_segments_largest_record(tmp_path):
    closed = []
    writer = TopicPartitionWriter("t", 0, "pre", SegmentSettings("jsonl", "gzip", 2, 6), closed.append,
                                  spool_dir=str(tmp_path))
    sizes = [(b"k", b"v" * 10, []), (None, b"v" * 3, [("hé", b"x" * 20)]), (b"", None, None)]
    for offset, (key, value, headers) in enumerate(sizes):
        writer.write(Record(0, offset, offset, "CreateTime", key, value, headers))
    writer.finish()
    assert [s.info.max_record_bytes for s in closed] == [3 + 3 + 20, 0]


def test_a_topic_name_of_249_characters_gets_a_spool_file(tmp_path):
    """A spool file named after the whole topic would be longer than a file name may be (255 bytes)."""
    topic = ("a.b_c-" * 42)[:249]
    closed = []
    writer = TopicPartitionWriter(topic, 0, "pre", SegmentSettings("jsonl", "none", 10, 6), closed.append,
                                  spool_dir=str(tmp_path))
    writer.write(Record(0, 0, 0, "CreateTime", b"k", b"v", []))
    writer.finish()
    assert closed[0].info.key == f"pre/{topic}/partition=0/{topic}+0+000000.jsonl"


def _segment(size: int | None) -> PlannedSegment:
    return PlannedSegment("k", 0, 9, 10, 1, Checksum(SHA256, "x"), "jsonl", "none", max_record_bytes=size)


def test_the_largest_record_of_a_partition_and_a_topic_leaves_unknown_sizes_out():
    assert PartitionRestore("s", "t", 0, []).largest_record_bytes() is None
    assert PartitionRestore("s", "t", 0, [_segment(None)]).largest_record_bytes() is None
    assert PartitionRestore("s", "t", 0, [_segment(3), _segment(None), _segment(7)]).largest_record_bytes() == 7
    units = [PartitionRestore("s", "t", 0, [_segment(5)]), PartitionRestore("s", "t", 1, [_segment(None)]),
             PartitionRestore("s2", "u", 0, [_segment(None)])]
    assert largest_records(units) == {"t": 5, "u": None}
    # Work units planned before the field existed still load.
    data = units[0].to_dict()
    del data["segments"][0]["max_record_bytes"]
    assert PartitionRestore.from_dict(data).largest_record_bytes() is None


def test_the_producer_is_sized_from_the_largest_record_and_the_connection_wins():
    assert producer_size_config(None, {}) == {"queue.buffering.max.kbytes": 65_536}
    assert producer_size_config(1000, {}) == {"queue.buffering.max.kbytes": 65_536}  # librdkafka's 1 MB is enough
    ten = producer_size_config(10 * MB, {})
    assert ten["message.max.bytes"] == 10 * MB + PRODUCER_HEADROOM_BYTES
    assert ten["queue.buffering.max.kbytes"] == 65_536
    big = producer_size_config(100 * MB, {})
    assert big["queue.buffering.max.kbytes"] * 1024 >= 2 * big["message.max.bytes"]  # else produce() waits for ever
    own = producer_size_config(10 * MB, {"message.max.bytes": "2000000"})
    assert "message.max.bytes" not in own  # the connection's setting stays


def test_a_created_topic_gets_max_message_bytes_for_its_records_unless_topic_configs_say():
    broker = {"max.message.bytes": "1048588"}
    assert created_topic_size_config(None, {}, broker, {}) == {}
    assert created_topic_size_config(1000, {"retention.ms": "-1"}, broker, {}) == {"retention.ms": "-1"}
    raised = created_topic_size_config(5 * MB, {"retention.ms": "-1"}, broker, {})
    assert raised == {"retention.ms": "-1", "max.message.bytes": str(5 * MB + PRODUCER_HEADROOM_BYTES)}
    recorded = {"max.message.bytes": str(6 * MB)}  # the source topic's own: big enough already
    assert created_topic_size_config(5 * MB, recorded, broker, {}) == recorded
    users = {"max.message.bytes": "1000"}
    assert created_topic_size_config(5 * MB, users, broker, users) == users  # checked, not changed


def test_a_target_too_small_for_the_largest_record_is_named_with_its_fix():
    fits_exactly = str(5 * MB + MIN_FRAMING_BYTES)
    assert record_size_problems("t", 5 * MB, {"max.message.bytes": fits_exactly}, created=False) == []
    assert record_size_problems("t", None, {"max.message.bytes": "10"}, created=False) == []
    (problem,) = record_size_problems("t", 5 * MB, {"max.message.bytes": "1048588"}, created=False)
    assert problem.startswith(f"the largest record to restore into t is {5 * MB} bytes (key + value + headers), "
                              "more than its max.message.bytes=1048588")
    assert f"--entity-name t --add-config max.message.bytes={5 * MB + PRODUCER_HEADROOM_BYTES}" in problem
    (created,) = record_size_problems("t", 5 * MB, {"max.message.bytes": "1000"}, created=True)
    assert 'in topic_configs' in created
    (socket,) = record_size_problems("t", 5 * MB, {}, created=True, socket_request_max_bytes=MB)
    assert "socket.request.max.bytes=1048576" in socket


class _Admin:
    """describe_configs of existing topics; the check reads nothing else when broker defaults are given."""

    def __init__(self, configs: dict[str, dict[str, str]]) -> None:
        self.configs = configs

    def describe_configs(self, resources, request_timeout=None):
        from concurrent.futures import Future
        from types import SimpleNamespace

        out = {}
        for resource in resources:
            future: Future = Future()
            future.set_result({k: SimpleNamespace(value=v) for k, v in self.configs[resource.name].items()})
            out[resource] = future
        return out


def test_the_plan_refuses_before_writing_unless_the_producer_compresses():
    admin = _Admin({"old": {"max.message.bytes": "1048588"}})
    with pytest.raises(ConfigurationError, match=r"^Cannot restore: the largest record to restore into old is 5242880"):
        check_targets_take_records(admin, {"old": 5 * MB, "new": 5 * MB}, {"new": {"max.message.bytes": "9999999"}},
                                   broker_defaults={})
    check_targets_take_records(admin, {"old": 5 * MB}, {}, broker_defaults={}, compressed=lambda: True)  # a warning
    check_targets_take_records(admin, {"old": None}, {}, broker_defaults={})  # unknown sizes: nothing to check
    check_targets_take_records(admin, {"old": 1000}, {}, broker_defaults={})


def test_a_header_name_that_is_not_utf8_is_refused_by_the_backup_naming_the_record(tmp_path):
    """Such a name (a lone surrogate, as a lenient decoder would give for non-UTF-8 bytes) cannot be produced
    by confluent-kafka: it crashes the client. The backup refuses it rather than write an unrestorable segment."""
    from airflow_kafka_backup.engine.errors import KafkaBackupError

    writer = TopicPartitionWriter("t", 2, "pre", SegmentSettings("jsonl", "none", 10, 6), [].append,
                                  spool_dir=str(tmp_path))
    writer.write(Record(2, 6, 0, "CreateTime", b"k", b"v", [("fine", b"1")]))
    with pytest.raises(KafkaBackupError, match=r"^t\[2\] offset 7 has a header name that is not valid UTF-8 "
                                               r"\('\\udcff'\)"):
        writer.write(Record(2, 7, 0, "CreateTime", b"k", b"v", [("ok", None), ("\udcff", b"1")]))
    writer.abort()
    assert list(tmp_path.iterdir()) == []
