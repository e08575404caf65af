"""Unit tests: checking and moving consumer groups after a restore, with the admin client faked.

The integration tests move real groups on the real broker; these cover the failures a
broker gives rarely: a group the restore may not describe, a commit refused halfway.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException

from airflow_kafka_backup.engine.errors import ConfigurationError, KafkaBackupError
from airflow_kafka_backup.engine.restore.group_offsets import (
    GroupTranslation,
    check_groups_inactive,
    commit_translations,
)


class Future:
    def __init__(self, value=None, error: KafkaError | None = None) -> None:
        self.value, self.error = value, error

    def result(self):
        if self.error is not None:
            raise KafkaException(self.error)
        return self.value


class Admin:
    """Describes and alters groups as ``answers`` says: a KafkaError, or members / partitions."""

    def __init__(self, answers: dict) -> None:
        self.answers = answers
        self.altered: list[str] = []

    def describe_consumer_groups(self, groups, request_timeout=None):
        return {g: Future(error=self.answers[g]) if isinstance(self.answers[g], KafkaError)
                else Future(SimpleNamespace(members=self.answers[g])) for g in groups}

    def alter_consumer_group_offsets(self, requests, request_timeout=None):
        (request,) = requests
        answer = self.answers[request.group_id]
        if isinstance(answer, KafkaError):
            return {request.group_id: Future(error=answer)}
        self.altered.append(request.group_id)
        return {request.group_id: Future(SimpleNamespace(topic_partitions=answer or request.topic_partitions))}


def test_unknown_groups_pass_and_groups_with_members_are_refused():
    admin = Admin({"new": KafkaError(KafkaError.GROUP_ID_NOT_FOUND), "idle": [], "busy": ["m1", "m2"]})
    check_groups_inactive(admin, ["new", "idle"])
    with pytest.raises(ConfigurationError, match=r"busy \(2 members\) have active members"):
        check_groups_inactive(admin, ["new", "idle", "busy"])


@pytest.mark.parametrize("error", [KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError._TIMED_OUT])
def test_a_group_that_cannot_be_described_is_refused_not_taken_for_idle(error):
    admin = Admin({"billing": KafkaError(error), "idle": []})
    with pytest.raises(ConfigurationError, match=r"Could not check consumer group\(s\) billing \("):
        check_groups_inactive(admin, ["billing", "idle"])


def _row(group: str, offset: int) -> GroupTranslation:
    return GroupTranslation(group, group, "t", "t2", 0, offset, offset)


def test_a_refused_commit_names_the_group_and_the_groups_already_moved_and_the_rest_are_still_tried():
    admin = Admin({"a": None, "b": KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED), "c": None})
    with pytest.raises(KafkaBackupError, match=r"failed: b: .*Moved: a, c\. Clearing the task"):
        commit_translations(admin, [_row("a", 1), _row("b", 2), _row("c", 3)])
    assert admin.altered == ["a", "c"]


def test_a_partition_level_failure_is_named():
    # A stand-in for confluent_kafka's TopicPartition, which cannot be built with an error.
    refused = SimpleNamespace(topic="t2", partition=0, error=KafkaError(KafkaError.UNKNOWN_MEMBER_ID))
    admin = Admin({"a": [refused]})
    with pytest.raises(KafkaBackupError, match=r"a: t2\[0\] .*Moved: none"):
        commit_translations(admin, [_row("a", 1)])
