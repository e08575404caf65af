"""Unit tests: writing a batch of messages gives the very segments and bytes of writing them one by one.

``write_messages`` (the backup hot path) builds a batch's records in one comprehension and
hands them to msgpack's ``write_rows``; ``write_message`` goes record by record. The
segments (their infos: offsets, counts, timestamps, sizes, sha256) and the spooled bytes
must be the same however the records are cut into batches.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from airflow_kafka_backup.engine.backup.partition_writer import TopicPartitionWriter
from airflow_kafka_backup.engine.backup.spool import SpoolBudget
from airflow_kafka_backup.engine.formats.compression import get_compression
from airflow_kafka_backup.engine.formats.msgpack_format import BLOCK_BYTES, BLOCK_RECORDS
from airflow_kafka_backup.engine.formats.segment_codec import get_format
from airflow_kafka_backup.engine.storage.manifest import SegmentSettings
from tests.unit.fake_message import FakeMessage as Message


def FakeMessage(offset, ts_type, ts, key, value, headers=None) -> Message:  # noqa: N802 (reads as the class it builds)
    """A fake ``confluent_kafka.Message`` in this module's argument order."""
    return Message(offset, key, value, headers, (ts_type, ts))


def _messages(count: int, seed: int = 7, with_headers_at: int | None = None) -> list[FakeMessage]:
    """Gaps in offsets, null and empty keys and values, timestamps out of order, and sizes that cut blocks by bytes."""
    rng = random.Random(seed)
    messages, offset = [], 100
    for i in range(count):
        offset += rng.choice((1, 1, 1, 2, 7))
        size = rng.choice((0, 10, 1024, 50_000, BLOCK_BYTES // 3))
        value = None if i % 17 == 0 else rng.randbytes(size)
        key = None if i % 5 == 0 else (b"" if i % 7 == 0 else i.to_bytes(4, "big"))
        headers = [("h", b"v"), ("h", None)] if i == with_headers_at else None
        messages.append(FakeMessage(offset, 1 + i % 2, 1_700_000_000_000 + rng.randint(-5000, 5000), key, value,
                                    headers))
    return messages


def _back_up(messages, tmp_path: Path, batch_sizes, segment_format="msgpack", compression="zstd", flush_size=700,
             spool_budget: SpoolBudget | None = None):
    """The closed segments' infos and bytes, writing ``messages`` in batches of the given sizes (0: one by one)."""
    closed = []
    settings = SegmentSettings(segment_format, compression, flush_size, 10, compression_level=1 if compression != "none"
                               else None)
    writer = TopicPartitionWriter("t", 0, "pre", settings, closed.append, spool_dir=str(tmp_path),
                                  spool_budget=spool_budget)
    start, sizes = 0, list(batch_sizes)
    while start < len(messages):
        size = sizes.pop(0) if sizes else 500
        if size == 0:
            writer.write_message(messages[start])
            start += 1
        else:
            writer.write_messages(messages[start:start + size])
            start += size
    writer.finish()
    return [(segment.info, _spooled_bytes(segment.spool)) for segment in closed]


def _spooled_bytes(spool) -> bytes:
    with spool.opened() as body:
        return body if isinstance(body, bytes) else body.read()


@pytest.mark.parametrize("compression", ["zstd", "none"])
def test_batches_give_the_bytes_of_one_by_one(tmp_path, compression):
    messages = _messages(2600)
    (tmp_path / "one").mkdir()
    one_by_one = _back_up(messages, tmp_path / "one", [0] * len(messages), compression=compression)
    assert len(one_by_one) == 4  # flush_size 700
    for cut, sizes in enumerate(([500] * 6, [1, 999, 3, 2000], [2600], [BLOCK_RECORDS + 1] * 3, [699, 2, 1900])):
        (tmp_path / str(cut)).mkdir()
        assert _back_up(messages, tmp_path / str(cut), sizes, compression=compression) == one_by_one


def test_a_batch_with_headers_gives_the_same_bytes(tmp_path):
    messages = _messages(1200, with_headers_at=650)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert _back_up(messages, tmp_path / "a", [500] * 3) == _back_up(messages, tmp_path / "b", [0] * 1200)


def test_formats_without_write_rows_take_batches_too(tmp_path):
    messages = _messages(900)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    batched = _back_up(messages, tmp_path / "a", [400] * 3, segment_format="jsonl")
    assert batched == _back_up(messages, tmp_path / "b", [0] * 900, segment_format="jsonl")


def test_blocks_close_by_bytes_in_the_middle_of_a_batch(tmp_path):
    """Large values: blocks close on BLOCK_BYTES, not on BLOCK_RECORDS, and the segment still reads back."""
    messages = [FakeMessage(i, 1, i, b"k", bytes(BLOCK_BYTES // 4 + i)) for i in range(30)]
    ((info, data),) = _back_up(messages, tmp_path, [30], compression="none", flush_size=100)
    assert info.records == 30 and info.max_record_bytes == 1 + BLOCK_BYTES // 4 + 29
    path = tmp_path / "segment"
    path.write_bytes(data)
    with path.open("rb") as raw:
        records = list(get_format("msgpack").decode(raw, get_compression("none")))
    assert [(r.offset, r.key, len(r.value)) for r in records] == [(i, b"k", BLOCK_BYTES // 4 + i) for i in range(30)]


@pytest.mark.parametrize("segment_format", ["msgpack", "jsonl"])
def test_segments_held_in_memory_have_the_bytes_of_spool_files(tmp_path, segment_format):
    """In memory, on disk, or moved to disk part way (a budget smaller than a segment): the same bytes."""
    messages = _messages(1500)
    for folder in ("disk", "memory", "part_way"):
        (tmp_path / folder).mkdir()
    on_disk = _back_up(messages, tmp_path / "disk", [500] * 3, segment_format)
    budget = SpoolBudget(1 << 30)  # these records are large: 118 MB in all
    in_memory = _back_up(messages, tmp_path / "memory", [500] * 3, segment_format, spool_budget=budget)
    assert in_memory == on_disk and budget.used == sum(len(data) for _, data in in_memory)
    assert not list((tmp_path / "memory").iterdir())  # nothing went to disk
    part_way = _back_up(messages, tmp_path / "part_way", [500] * 3, segment_format,
                        spool_budget=SpoolBudget(len(on_disk[0][1]) // 2))
    assert part_way == on_disk
