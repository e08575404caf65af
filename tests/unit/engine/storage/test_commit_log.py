"""Unit tests: the commit log tells a plan the latest commit in two GETs, and lets one run commit per entry.

The store is an in-memory fake that counts requests; the integration tests run the log against the
moto server through real backups (tests/integration/backup/test_commit_log.py).
"""

from __future__ import annotations

from collections import Counter

import pytest

from airflow_kafka_backup.engine.storage.commit_log import Commit, find_head, read_commit, record_commit
from airflow_kafka_backup.engine.storage.key_layout import commit_key
from airflow_kafka_backup.engine.storage.writer_lock import ConcurrentRunError


class CountingStore:
    bucket = "b"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.requests: Counter[str] = Counter()

    def create_if_absent(self, key: str, data: bytes) -> bool:
        self.requests["PutObject"] += 1
        if key in self.objects:
            return False
        self.objects[key] = data
        return True

    def get_bytes_if_exists(self, key: str) -> bytes | None:
        self.requests["GetObject"] += 1
        return self.objects.get(key)

    def head(self, key: str) -> dict | None:
        self.requests["HeadObject"] += 1
        return {} if key in self.objects else None

    def list_keys(self, prefix: str, start_after: str | None = None):
        self.requests["ListObjectsV2"] += 1
        return sorted(k for k in self.objects if k.startswith(prefix) and k > (start_after or ""))


def _committed(store: CountingStore, runs: int) -> list[Commit]:
    entries = [record_commit(store, "p", seq, f"run-{seq + 1}", f"p/_manifests/run=run-{seq + 1}.json",
                             {"sse": "aws:kms"}) for seq in range(runs)]
    for entry in entries:
        store.objects[entry.manifest] = b"{}"  # each committed
    store.requests.clear()
    return entries


def test_a_plan_whose_variable_saw_the_latest_commit_makes_two_gets_however_many_runs_came_before():
    for runs in (1, 5000):
        store = CountingStore()
        latest = _committed(store, runs)[-1]
        head = find_head(store, "p", latest.to_variable())
        assert head.latest == latest and head.variable_is_current
        assert store.requests == Counter({"GetObject": 2})


def test_commits_the_variable_missed_are_found_by_listing_only_after_the_entry_it_saw():
    store = CountingStore()
    entries = _committed(store, 7)
    head = find_head(store, "p", entries[3].to_variable())
    assert head.latest == entries[-1] and not head.variable_is_current
    assert store.requests == Counter({"GetObject": 3, "ListObjectsV2": 1, "HeadObject": 1})  # and its manifest


@pytest.mark.parametrize("recorded", [None, {"seq": 9, "run_id": "run-9"}, {"seq": 2, "run_id": "another run"}])
def test_without_a_variable_or_with_one_the_log_does_not_hold_the_whole_log_is_listed(recorded):
    store = CountingStore()
    entries = _committed(store, 3)
    head = find_head(store, "p", recorded)
    assert head.latest == entries[-1] and not head.variable_is_current


def test_a_prefix_without_a_log_has_no_head():
    assert find_head(CountingStore(), "p", None).latest is None
    assert find_head(CountingStore(), "p", {"seq": 4, "run_id": "r"}).latest is None


def test_exactly_one_run_commits_on_top_of_an_entry_and_a_retry_finds_its_own():
    store = CountingStore()
    first = record_commit(store, "p", 0, "run-a", "p/_manifests/run=run-a.json", {})
    assert first.seq == 1 and first.generation.startswith("commit-000000000001-")
    assert record_commit(store, "p", 0, "run-a", "p/_manifests/run=run-a.json", {}) == first  # a retry
    before = dict(store.objects)
    with pytest.raises(ConcurrentRunError, match="Another run \\(run-a\\) committed to s3://b/p while this run"):
        record_commit(store, "p", 0, "run-b", "p/_manifests/run=run-b.json", {})
    assert store.objects == before
    assert read_commit(store, "p", 1) == first and commit_key("p", 1) == "p/_commits/seq=000000000001.json"


def test_a_generation_is_unique_to_its_commit_even_when_expired_entries_let_numbers_start_again():
    assert Commit(1, "run-a", "m").generation != Commit(1, "run-b", "m").generation
    assert Commit.from_json(Commit(3, "r", "m", {"sse": "SSE-C", "sse_c_key_fingerprint": "f"}).to_json()) == Commit(
        3, "r", "m", {"sse": "SSE-C", "sse_c_key_fingerprint": "f"})


def test_an_entry_without_its_manifest_is_in_flight_and_records_the_lock_its_run_held():
    store = CountingStore()
    entries = _committed(store, 2)
    dying = record_commit(store, "p", 2, "run-3", "p/_manifests/run=run-3.json", {}, lock=entries[-1].generation)
    head = find_head(store, "p", entries[-1].to_variable())
    assert head.latest == dying and head.in_flight and not head.variable_is_current
    assert head.latest.lock == entries[-1].generation


def test_a_retried_commit_refuses_when_a_run_that_took_its_lock_over_committed_after_its_entry():
    store = CountingStore()
    record_commit(store, "p", 0, "run-a", "p/_manifests/run=run-a.json", {})  # then died before its manifest
    # run-b took run-a's lock over, planned on run-a's entry (in flight) and committed on top of it.
    record_commit(store, "p", 1, "run-b", "p/_manifests/run=run-b.json", {},
                  in_flight_manifest="p/_manifests/run=run-a.json")
    with pytest.raises(ConcurrentRunError, match="Another run \\(run-b\\) committed"):
        record_commit(store, "p", 0, "run-a", "p/_manifests/run=run-a.json", {})


def test_a_run_built_on_an_entry_in_flight_refuses_when_that_runs_manifest_appeared_meanwhile():
    store = CountingStore()
    record_commit(store, "p", 0, "run-a", "p/_manifests/run=run-a.json", {})
    store.objects["p/_manifests/run=run-a.json"] = b"{}"  # its commit finished after all
    with pytest.raises(ConcurrentRunError, match="whose commit was in flight when this run planned"):
        record_commit(store, "p", 1, "run-b", "p/_manifests/run=run-b.json", {},
                      in_flight_manifest="p/_manifests/run=run-a.json")
