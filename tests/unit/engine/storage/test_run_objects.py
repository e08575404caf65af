"""Unit tests: a backup run's working objects, which its tasks hand each other through S3 instead of XCom.

- Written canonically: the same content gives the same bytes, so a retry rewrites a key with what it held.
- Read only through a ref whose size and sha256 match, and only from the run's own folder.
- Removed after the commit in one LIST and one delete; a bucket that refuses the delete leaves them, with a
  warning, and the commit stands.
"""

from __future__ import annotations

import logging

import pytest
from botocore.exceptions import ClientError

from airflow_kafka_backup.engine.errors import IntegrityError
from airflow_kafka_backup.engine.storage.key_layout import (
    run_objects_prefix,
    run_plan_key,
    unit_segments_key,
    work_unit_key,
)
from airflow_kafka_backup.engine.storage.run_objects import (
    ObjectRef,
    RunObjectMissingError,
    get_json,
    put_json,
    remove_run_objects,
)


class MemoryStore:
    """The S3ObjectStore calls the working objects make, over a dict; ``refuse_deletes`` answers as S3 does
    to a role without s3:DeleteObject."""

    bucket = "b"

    def __init__(self, refuse_deletes: bool = False) -> None:
        self.objects: dict[str, bytes] = {}
        self.refuse_deletes = refuse_deletes

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        self.objects[key] = data

    def get_bytes(self, key: str) -> bytes:
        if key not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "gone"}}, "GetObject")
        return self.objects[key]

    def delete_prefix(self, prefix: str) -> int:
        if self.refuse_deletes:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "DeleteObjects")
        keys = [k for k in self.objects if k.startswith(prefix)]
        for key in keys:
            del self.objects[key]
        return len(keys)


RUN = "scheduled__2026-01-01T00:00:00+00:00"
PLAN = {"run_id": RUN, "ranges": [{"topic": "t", "partition": p, "start": 0, "end": 3} for p in range(3)],
        "settings": {"segment_format": "msgpack"}, "generation": "g"}


def test_keys_are_a_function_of_prefix_run_and_unit_all_inside_the_runs_folder():
    folder = run_objects_prefix("bk", RUN)
    assert folder == "bk/_runs/run=scheduled__2026-01-01T00_00_00_00_00/"
    assert run_plan_key("bk", RUN) == folder + "plan.json"
    assert work_unit_key("bk", RUN, 7) == folder + "unit=00007.json"
    assert unit_segments_key("bk", RUN, 7) == folder + "unit=00007-segments.json"
    assert run_objects_prefix("", RUN) == "_runs/run=scheduled__2026-01-01T00_00_00_00_00/"


def test_the_same_content_gives_the_same_bytes_and_reads_back_through_its_ref():
    store = MemoryStore()
    first = put_json(store, run_plan_key("bk", RUN), PLAN)
    data = store.objects[first.key]
    reordered = dict(reversed(list(PLAN.items())))
    assert put_json(store, first.key, reordered) == first  # a retry rewrites the key with the same bytes
    assert store.objects[first.key] == data
    assert first.bytes == len(data)
    assert ObjectRef.from_dict(first.to_dict()) == first
    assert get_json(store, first, run_objects_prefix("bk", RUN)) == PLAN


def test_an_object_rewritten_with_other_content_is_refused():
    store = MemoryStore()
    ref = put_json(store, run_plan_key("bk", RUN), PLAN)
    put_json(store, ref.key, {**PLAN, "ranges": PLAN["ranges"][:1]})  # another try of the run planned again
    with pytest.raises(IntegrityError, match="is not the one this task was handed"):
        get_json(store, ref, run_objects_prefix("bk", RUN))
    same_size = ObjectRef(ref.key, "0" * 64, len(store.objects[ref.key]))
    with pytest.raises(IntegrityError, match="is not the one this task was handed"):
        get_json(store, same_size, run_objects_prefix("bk", RUN))


def test_a_ref_outside_the_runs_folder_is_refused_before_it_is_read():
    store = MemoryStore()
    ref = put_json(store, run_plan_key("bk", "another-run"), PLAN)
    with pytest.raises(IntegrityError, match="is not one of this run's"):
        get_json(store, ref, run_objects_prefix("bk", RUN))


def test_a_missing_object_says_so():
    with pytest.raises(RunObjectMissingError, match="is gone"):
        get_json(MemoryStore(), ObjectRef(run_plan_key("bk", RUN), "0" * 64, 1), run_objects_prefix("bk", RUN))


def test_removal_takes_the_whole_run_folder_and_nothing_else():
    store = MemoryStore()
    put_json(store, run_plan_key("bk", RUN), PLAN)
    put_json(store, work_unit_key("bk", RUN, 0), {})
    put_json(store, unit_segments_key("bk", RUN, 5), {})  # left by an earlier try with more work units
    put_json(store, run_plan_key("bk", RUN + "-other"), PLAN)
    store.objects["bk/_manifests/run=x.json"] = b"{}"
    assert remove_run_objects(store, "bk", RUN) == 3
    assert sorted(store.objects) == ["bk/_manifests/run=x.json", run_plan_key("bk", RUN + "-other")]


def test_a_refused_removal_is_a_warning_not_a_failure(caplog):
    store = MemoryStore(refuse_deletes=True)
    put_json(store, run_plan_key("bk", RUN), PLAN)
    with caplog.at_level(logging.WARNING):
        assert remove_run_objects(store, "bk", RUN) is None
    assert "AccessDenied" in caplog.text and "s3:DeleteObject on <prefix>/_runs/*" in caplog.text
    assert run_plan_key("bk", RUN) in store.objects
