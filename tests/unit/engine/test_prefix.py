"""Unit tests: the ``prefix`` Param, cleaned in one place (``settings.clean_prefix``) for every key built under it."""

from __future__ import annotations

import pytest

from airflow_kafka_backup.engine.backup.settings import BackupSettings
from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.settings import clean_prefix
from airflow_kafka_backup.engine.storage.key_layout import manifest_key, segment_key


@pytest.mark.parametrize("given,clean", [
    ("kafka-backup", "kafka-backup"), ("/kafka-backup/", "kafka-backup"), ("a/b/", "a/b"), ("//a/b//", "a/b"),
    ("", ""), ("/", ""),
])
def test_leading_and_trailing_slashes_name_the_same_prefix(given, clean):
    assert clean_prefix(given) == clean


@pytest.mark.parametrize("given", ["a//b", "/a//b/", "a/b///c"])
def test_a_doubled_slash_is_refused_naming_prefix_and_the_fix(given):
    with pytest.raises(ConfigurationError, match=r"^prefix '.*' has an empty path part \('//'\).*"
                                                 r"write it with single slashes \('a/b(/c)?'\)"):
        clean_prefix(given)


def test_a_prefix_that_is_no_text_is_refused():
    with pytest.raises(ConfigurationError, match="prefix must be text"):
        clean_prefix(None)


def test_an_empty_prefix_writes_at_the_bucket_root():
    prefix = clean_prefix("/")
    assert manifest_key(prefix, "r1") == "_manifests/run=r1.json"
    assert segment_key(prefix, "t", 0, 5, 3, ".jsonl") == "t/partition=0/t+0+005.jsonl"


def test_backup_settings_and_every_operator_use_the_cleaned_prefix():
    from airflow_kafka_backup.operators.restore import KafkaRestorePlanOperator

    settings = BackupSettings.create(topics=["t"], bucket="b", prefix="/x/y/")
    assert settings.prefix == "x/y"
    with pytest.raises(ConfigurationError, match="^prefix 'x//y'"):
        BackupSettings.create(topics=["t"], bucket="b", prefix="x//y")
    assert KafkaRestorePlanOperator(task_id="p", topics=["t"], bucket="b", prefix="/x/y/").key_prefix == "x/y"
    with pytest.raises(ConfigurationError, match="^prefix 'x//y'"):  # when the DAG file is parsed
        KafkaRestorePlanOperator(task_id="p", topics=["t"], bucket="b", prefix="x//y")
    KafkaRestorePlanOperator(task_id="p", topics=["t"], bucket="b", prefix="{{ params.prefix }}")  # rendered later


@pytest.mark.parametrize("factory", ["backup_dag", "restore_dag"])
def test_the_dag_factories_refuse_a_doubled_slash_in_the_prefix_default(factory):
    from airflow_kafka_backup import dag_factories

    kwargs = {"topics": ["t"], "bucket": "b", "prefix": "a//b"}
    with pytest.raises(ConfigurationError, match="^prefix 'a//b'"):
        getattr(dag_factories, factory)(f"doubled_{factory}", **kwargs)


def test_the_cli_refuses_a_doubled_slash_naming_prefix(capsys):
    from airflow_kafka_backup.cli import EXIT_USAGE, main

    assert main(["ls", "--bucket", "b", "--prefix", "a//b"]) == EXIT_USAGE
    assert "prefix 'a//b' has an empty path part" in capsys.readouterr().err
