"""Unit tests: the trigger forms' Params (titles, sections, required marks, bounds, pickers, labels).

The Airflow UI marks a field required when its schema ``type`` excludes ``null``, puts Params
without a ``section`` in the open first group, shows a date-time picker for a first non-null type
``string`` with ``format: date-time``, and raises a number below ``minimum`` to it on blur (so
``exclusiveMinimum`` is used where 0 is invalid). These tests hold the forms to that.
"""

from __future__ import annotations

import copy

import pytest

from airflow_kafka_backup.engine.time_window import parse_timestamp


def _backup():
    from airflow_kafka_backup.dag_factories import backup_dag

    return backup_dag("form_backup", topics=["orders"], bucket="b")


def _restore():
    from airflow_kafka_backup.dag_factories import restore_dag

    return restore_dag("form_restore")


def _schema(dag, name: str) -> dict:
    return dag.params.get_param(name).schema


def _marked_required(schema: dict) -> bool:
    """The UI's rule: a type is given and it does not include null."""
    kind = schema.get("type")
    return bool(kind) and (not isinstance(kind, list) or "null" not in kind)


def _refuses(dag, name: str, value: object) -> bool:
    try:
        copy.deepcopy(dag.params.get_param(name)).resolve(value)
    except Exception:  # noqa: BLE001 - Airflow's ParamValidationError, whatever its module
        return True
    return False


@pytest.mark.parametrize("which,first_group", [
    ("backup", {"topics", "bucket", "prefix", "exclude_topics"}),
    ("restore", {"topics", "bucket", "prefix", "from_timestamp", "until_timestamp", "topic_mapping",
                 "if_target_not_empty", "dry_run"}),
])
def test_every_param_has_a_title_help_and_a_section_beyond_the_first_group(which, first_group):
    dag = _backup() if which == "backup" else _restore()
    for name in dag.params:
        schema = dag.params.get_param(name).schema
        assert schema.get("title") and schema.get("description_md"), name
        # A plain description would be shown instead of the Markdown, unrendered.
        assert dag.params.get_param(name).description is None, name
        assert (name in first_group) == ("section" not in schema), name
    sections = {dag.params.get_param(n).schema.get("section") for n in dag.params} - {None}
    assert {"Connections", "Encryption and ACL", "Dangerous switches"} <= sections


def test_dangerous_switches_sit_in_their_own_section():
    backup, restore = _backup(), _restore()
    for name in ("allow_data_loss", "force_unlock"):
        assert _schema(backup, name)["section"] == "Dangerous switches"
    assert _schema(restore, "require_approval")["section"] == "Dangerous switches"
    assert _schema(backup, "object_lock_mode")["section"] == "Object Lock"
    assert _schema(backup, "ranges")["section"] == "Manual and backfill runs"


def test_titles_name_their_units():
    backup, restore = _backup(), _restore()
    assert _schema(backup, "rotate_interval_ms")["title"] == "Rotate interval (ms)"
    assert _schema(backup, "part_size")["title"] == "Multipart part size (bytes)"
    assert _schema(backup, "retention_days")["title"] == "Retention (days)"
    assert _schema(restore, "commit_interval_seconds")["title"] == "Commit interval (seconds)"


def test_required_marks_fall_on_the_fields_that_must_be_filled():
    backup, restore = _backup(), _restore()
    for dag in (backup, restore):
        for name in ("topics", "bucket", "prefix"):
            assert _marked_required(_schema(dag, name)), (dag.dag_id, name)
        assert _refuses(dag, "topics", []) and _refuses(dag, "bucket", None) and _refuses(dag, "bucket", "")
    # Toggles always have a value and JSON fields may be empty: neither is marked.
    for dag, names in ((backup, ("allow_data_loss", "force_unlock", "expect_continue", "ranges", "exclude_topics",
                                 "consumer_groups")),
                       (restore, ("dry_run", "create_topics", "require_approval", "topic_mapping", "offset_bounds",
                                  "incarnations", "topic_configs", "group_mapping"))):
        for name in names:
            assert not _marked_required(_schema(dag, name)), (dag.dag_id, name)
            assert not _refuses(dag, name, None), (dag.dag_id, name)
    # A dropdown that must hold a value is marked, so clearing it is caught in the form.
    assert _marked_required(_schema(backup, "compression")) and _refuses(backup, "compression", None)


def test_zero_shows_an_error_instead_of_being_raised_to_the_minimum():
    backup, restore = _backup(), _restore()
    for dag, name in ((backup, "flush_size"), (backup, "rotate_interval_ms"), (backup, "max_work_units"),
                      (backup, "retention_days"), (backup, "object_lock_retention_days"), (restore, "max_work_units")):
        schema = _schema(dag, name)
        assert "minimum" not in schema and schema["exclusiveMinimum"] == 0, name
        assert _refuses(dag, name, 0) and not _refuses(dag, name, 1), name
    assert _refuses(backup, "part_size", 5 * 1024 * 1024 - 1) and not _refuses(backup, "part_size", 5 * 1024 * 1024)


def test_enums_label_every_value_and_show_null_as_off():
    backup, restore = _backup(), _restore()
    for dag in (backup, restore):
        for name in dag.params:
            schema = _schema(dag, name)
            if "enum" in schema:
                shown = schema["values_display"]
                assert set(shown) == {"null" if v is None else str(v) for v in schema["enum"]}, name
                if None in schema["enum"]:
                    assert shown["null"] == "Off", name
    assert _schema(backup, "sse_algorithm")["values_display"]["AES256"] == "AES256"


def test_time_window_is_a_date_time_picker_that_still_takes_epoch_ms():
    from jsonschema import FormatChecker

    restore = _restore()
    for name in ("from_timestamp", "until_timestamp"):
        schema = _schema(restore, name)
        assert schema["format"] == "date-time" and schema["type"][0] == "string" and "null" in schema["type"]
        # What the picker sends, and what a run conf may send, pass the schema and mean the same instant.
        assert not _refuses(restore, name, "2024-05-01T10:00:00+00:00")
        assert not _refuses(restore, name, 1_714_557_600_000)
        assert not _refuses(restore, name, None)
        assert parse_timestamp(name, "2024-05-01T10:00:00+00:00") == parse_timestamp(name, 1_714_557_600_000)
        if "date-time" in FormatChecker.checkers:  # rfc3339-validator installed: the form refuses free text
            assert _refuses(restore, name, "yesterday 10am")
        else:  # without it the schema cannot tell; the plan refuses it before anything is written
            with pytest.raises(Exception, match="ISO-8601 or epoch milliseconds"):
                parse_timestamp(name, "yesterday 10am")


def test_consumer_groups_is_a_list_like_topics():
    backup = _backup()
    schema = _schema(backup, "consumer_groups")
    assert schema["type"][0] == "array" and schema["items"]["type"] == "string"
    assert backup.params["consumer_groups"] == ["*"]
    assert not _refuses(backup, "consumer_groups", ["billing", "payments"])
    assert _refuses(backup, "consumer_groups", "billing\npayments")


def test_dags_carry_a_description_and_operator_docs():
    backup, restore = _backup(), _restore()
    assert backup.description and restore.description
    assert "Trigger form" in backup.doc_md and "Dangerous switches" in backup.doc_md
    assert "Required Actions" in restore.doc_md and "Dry run" in restore.doc_md
    assert "from airflow_kafka_backup" not in backup.doc_md  # not the developers' docstring


def test_a_scheduled_backup_parses_before_topics_and_bucket_are_configured():
    from airflow_kafka_backup.dag_factories import backup_dag

    scheduled = backup_dag("form_scheduled", schedule="@hourly")  # Airflow validates scheduled defaults
    assert not _refuses(scheduled, "topics", []) and not _refuses(scheduled, "bucket", None)
    manual = backup_dag("form_manual")  # a manual DAG keeps the form's required fields
    assert _refuses(manual, "topics", []) and _refuses(manual, "bucket", None)
    configured = backup_dag("form_configured", schedule="@hourly", topics=["t"], bucket="b")
    assert _refuses(configured, "topics", [])
