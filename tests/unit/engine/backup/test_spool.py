"""Unit tests: a segment waits for upload in memory within the run's budget, else in a spool file, same bytes."""

from __future__ import annotations

import os

import pytest

from airflow_kafka_backup.engine.backup.spool import SegmentSpool, SpoolBudget


def _bytes_of(spool: SegmentSpool) -> bytes:
    with spool.opened() as body:
        return body if isinstance(body, bytes) else body.read()


def test_within_the_budget_a_segment_stays_in_memory_and_gives_its_budget_back(tmp_path):
    budget = SpoolBudget(100)
    spool = SegmentSpool("t+0+", str(tmp_path), budget)
    spool.write(b"a" * 30)
    spool.write(bytearray(b"b" * 30))  # a mutable chunk is copied, not kept
    spool.close()
    assert spool.in_memory and spool.size == 60 and budget.used == 60 and not os.listdir(tmp_path)
    assert _bytes_of(spool) == b"a" * 30 + b"b" * 30
    spool.discard()
    assert budget.used == 0


def test_past_the_budget_a_segment_moves_to_a_file_with_what_it_held(tmp_path):
    budget = SpoolBudget(100)
    other = SegmentSpool("t+1+", str(tmp_path), budget)
    other.write(b"x" * 50)  # another segment holds half the budget
    spool = SegmentSpool("t+0+", str(tmp_path), budget)
    spool.write(b"a" * 40)
    assert budget.used == 90
    spool.write(b"b" * 40)  # would pass 100: the segment goes to disk, its 40 bytes given back
    spool.write(b"c" * 5)
    spool.close()
    assert not spool.in_memory and budget.used == 50 and os.path.getsize(spool.path) == spool.size == 85
    assert _bytes_of(spool) == b"a" * 40 + b"b" * 40 + b"c" * 5
    spool.discard()
    assert not os.path.exists(spool.path)
    other.discard()
    assert budget.used == 0


def test_without_a_budget_every_segment_spools_to_a_file(tmp_path):
    spool = SegmentSpool("t+0+", str(tmp_path), None)
    spool.write(b"abc")
    spool.close()
    assert not spool.in_memory and os.path.dirname(spool.path) == str(tmp_path)
    assert _bytes_of(spool) == b"abc"
    spool.discard()
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("in_memory", [True, False])
def test_discarding_an_open_spool_frees_it(tmp_path, in_memory):
    """What a failed run's writer does with its open segment."""
    budget = SpoolBudget(100 if in_memory else 0)
    spool = SegmentSpool("t+0+", str(tmp_path), budget)
    spool.write(b"abc")
    assert spool.in_memory is in_memory
    spool.discard()
    assert budget.used == 0 and not os.listdir(tmp_path)
