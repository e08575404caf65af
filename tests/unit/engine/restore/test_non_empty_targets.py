"""Unit tests: targets that already hold records are refused, appended to or resumed, as the Param says."""

from __future__ import annotations

import pytest

from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.restore.attempts import EarlierRestore, restores_into
from airflow_kafka_backup.engine.restore.non_empty_targets import decide
from airflow_kafka_backup.engine.storage.key_layout import attempt_key, parse_restore_key, restore_prefix

OWN = "kafka_restore/manual__2026-12-03T10:00:00+00:00"
KILLED = EarlierRestore("kafka_restore/manual__2026-12-03T09_00_00_00_00", frozenset({"orders"}), finished=False)
DONE = EarlierRestore("kafka_restore/manual__2026-12-01T09_00_00_00_00", frozenset({"orders"}), finished=True)


def test_empty_or_new_targets_need_no_decision():
    assert decide("fail", OWN, {"orders": 0}, []).restore_id == OWN
    assert decide("fail", OWN, {}, []).summary == "Every target topic is new or empty."


def test_the_default_refuses_naming_the_topic_its_records_and_the_unfinished_run():
    with pytest.raises(ConfigurationError, match=r"orders holds 65,000 records\. They hold records of the unfinished "
                                                 r"restore kafka_restore/manual__2026-12-03T09_00_00_00_00 .* resume"):
        decide("fail", OWN, {"orders": 65_000}, [KILLED])
    with pytest.raises(ConfigurationError, match="The finished restore\\(s\\) kafka_restore/manual__2026-12-01"):
        decide("fail", OWN, {"orders": 10}, [DONE])


def test_resume_takes_over_the_one_unfinished_restore_and_append_adds():
    assert decide("resume", OWN, {"orders": 65_000}, [KILLED, DONE]).restore_id == KILLED.restore_id
    assert decide("append", OWN, {"orders": 65_000}, [KILLED]).restore_id == OWN
    with pytest.raises(ConfigurationError, match="nothing to resume"):
        decide("resume", OWN, {"orders": 5}, [DONE])
    other = EarlierRestore("kafka_restore/other", frozenset({"orders"}), finished=False)
    with pytest.raises(ConfigurationError, match="2 unfinished restores"):
        decide("resume", OWN, {"orders": 5}, [KILLED, other])
    with pytest.raises(ConfigurationError, match="if_target_not_empty must be one of fail, append, resume"):
        decide("overwrite", OWN, {"orders": 5}, [])


def test_a_run_cleared_and_run_again_resumes_its_own_records_whatever_the_setting():
    own = EarlierRestore("kafka_restore/manual__2026-12-03T10_00_00_00_00", frozenset({"orders"}), finished=False)
    assert decide("fail", OWN, {"orders": 3}, [own]).restore_id == OWN


class ListingStore:
    def __init__(self, keys: list[str]) -> None:
        self.keys = keys

    def list_keys(self, prefix: str) -> list[str]:
        return [k for k in self.keys if k.startswith(prefix)]


def test_restores_into_reads_the_restore_folders():
    killed, done = restore_prefix("bk", "kafka_restore/run:1"), restore_prefix("bk", "kafka_restore/run:2")
    keys = [attempt_key(killed, "orders", 0, "a1"), attempt_key(killed, "orders", 1, "a2"),
            attempt_key(done, "payments", 0, "a3"), f"{done}/restore-manifest.json",
            attempt_key(done, "orders", 0, "a4"), "bk/_restores/stray.json"]
    found = restores_into(ListingStore(keys), "bk", ["orders"])
    assert found == [EarlierRestore("kafka_restore/run_1", frozenset({"orders"}), False),
                     EarlierRestore("kafka_restore/run_2", frozenset({"orders"}), True)]
    assert parse_restore_key("bk", "bk/_restores/stray.json") is None
    # The key-safe id names the same folder as the original run id.
    assert restore_prefix("bk", found[0].restore_id) == killed
