"""Unit tests: name fields (bucket, prefix, topics, ...) stay text through the DAGs' native rendering.

The DAG factories render templates as native objects, which reads ``"123456789012"`` as an int
and ``"2024.10"`` as a float; the operators turn such names back into the text typed.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.operators.s3 import NAME_MAPPING, NAMES, NAMES_OR_BOOL, as_text


def _params(dag) -> dict:
    return {name: param.value for name, param in dag.params.items()}


def test_restore_plan_renders_all_digit_bucket_and_prefix_as_text():
    from airflow_kafka_backup.dag_factories import restore_dag

    dag = restore_dag("digits_restore", bucket="123456789012", prefix="2024", topics=["2024", "orders"],
                      topic_mapping={"2024": "0x10"}, group_mapping={"billing": "2025"})
    plan = dag.get_task("plan")
    plan.render_template_fields({"params": _params(dag)})
    assert (plan.bucket, plan.prefix) == ("123456789012", "2024")
    assert plan.topics == ["2024", "orders"]
    assert plan.topic_mapping == {"2024": "0x10"} and plan.group_mapping == {"billing": "2025"}
    assert plan.kafka_conn_id == "kafka_default"


@pytest.mark.parametrize("prefix", ["2024.10", "0x10", "1_000", "1e3"])
def test_a_number_looking_prefix_keeps_exactly_the_characters_typed(prefix):
    from airflow_kafka_backup.dag_factories import backup_dag

    dag = backup_dag("number_prefix_backup", topics=["2024"], bucket="b", prefix=prefix)
    plan = dag.get_task("plan")
    plan.render_template_fields({"params": _params(dag)})
    assert plan.prefix == prefix  # str(float) would have given "2024.1", str(int) "16", "1000", "1000.0"
    assert plan.topics == ["2024"]


def test_mapped_restore_task_renders_bucket_and_prefix_as_text():
    """A mapped task's operator is rendered through another path (MappedOperator.render_template_fields)."""
    from airflow_kafka_backup.dag_factories import restore_dag

    dag = restore_dag("digits_mapped_restore", topics=["t"], bucket="123456789012", prefix="2024")

    class TaskInstance:
        map_index = 0
        task = None

        def xcom_pull(self, **kwargs):
            return [[]]  # the plan's work units

    context = {"ti": TaskInstance(), "dag": dag, "dag_run": SimpleNamespace(conf={}), "params": _params(dag)}
    dag.get_task("restore").render_template_fields(context)
    restore = context["task"]  # the unmapped operator
    assert (restore.bucket, restore.prefix) == ("123456789012", "2024")


def test_operator_in_a_plain_dag_is_unchanged():
    from airflow.sdk import DAG

    from airflow_kafka_backup.operators.restore import KafkaRestorePlanOperator

    with DAG("plain_restore", schedule=None, params={"bucket": "123456789012"}) as dag:
        plan = KafkaRestorePlanOperator(task_id="plan", topics=["t"], bucket="{{ params.bucket }}", prefix="2024")
    plan.render_template_fields({"params": _params(dag)})
    assert (plan.bucket, plan.prefix) == ("123456789012", "2024")


def test_native_rendering_of_a_bool_in_a_name_field_is_refused_naming_it():
    from airflow.sdk import DAG

    from airflow_kafka_backup.operators.restore import KafkaRestorePlanOperator

    with DAG("bool_restore", schedule=None, render_template_as_native_obj=True, params={"p": True}) as dag:
        plan = KafkaRestorePlanOperator(task_id="plan", topics=["t"], bucket="b", prefix="{{ params.p }}")
    with pytest.raises(ConfigurationError, match="prefix must be text, got bool True"):
        plan.render_template_fields({"params": _params(dag)})


def test_as_text():
    assert as_text("bucket", 123456789012) == "123456789012"
    assert as_text("bucket", None) is None
    assert as_text("topics", (2024, "orders"), NAMES) == ["2024", "orders"]
    assert as_text("topics", 2024, NAMES) == "2024"
    assert as_text("topic_mapping", {2024: 2025, "a": "b"}, NAME_MAPPING) == {"2024": "2025", "a": "b"}
    for field, value, shape, named in [("bucket", True, "name", "bucket"), ("prefix", 1.5, "name", "prefix"),
                                       ("bucket", ["b"], "name", "bucket"), ("topics", [False], NAMES, r"topics\[0\]"),
                                       ("topic_mapping", {"a": 1.5}, NAME_MAPPING, r"topic_mapping\['a'\]")]:
        with pytest.raises(ConfigurationError, match=f"^{named} must be text"):
            as_text(field, value, shape)


@pytest.mark.parametrize("typed,expected", [("123", ["123"]), ("1,2", ["1", "2"]), ("2024.10", ["2024.10"]),
                                            ("*", ["*"]), ("re:billing-.*", ["re:billing-.*"])])
def test_number_looking_consumer_group_ids_stay_group_ids(typed, expected):
    from airflow_kafka_backup.dag_factories import backup_dag
    from airflow_kafka_backup.engine.topics.metadata import select_groups

    dag = backup_dag("number_groups_backup", topics=["t"], bucket="b", consumer_groups=typed)
    plan = dag.get_task("plan")
    plan.render_template_fields({"params": _params(dag)})
    assert plan.consumer_groups == expected
    listed = [SimpleNamespace(group_id=g) for g in ("1", "123", "2", "2024.10", "billing-a")]
    admin = SimpleNamespace(list_consumer_groups=lambda request_timeout: SimpleNamespace(
        result=lambda: SimpleNamespace(valid=listed)))
    assert select_groups(admin, plan.consumer_groups) == {
        "123": ["123"], "1,2": ["1", "2"], "2024.10": ["2024.10"], "*": ["1", "123", "2", "2024.10", "billing-a"],
        "re:billing-.*": ["billing-a"]}[typed]


def test_consumer_groups_list_mixes_ids_all_and_patterns():
    """The form's one-per-line list: each line an id, ``*`` or a ``re:`` pattern; the chosen groups once each."""
    from airflow_kafka_backup.engine.topics.metadata import select_groups

    listed = [SimpleNamespace(group_id=g) for g in ("audit", "billing-a", "billing-b", "payments")]
    admin = SimpleNamespace(list_consumer_groups=lambda request_timeout: SimpleNamespace(
        result=lambda: SimpleNamespace(valid=listed)))
    assert select_groups(admin, ["payments", "re:billing-.*", "billing-a"]) == ["payments", "billing-a", "billing-b"]
    assert select_groups(admin, ["*"]) == ["audit", "billing-a", "billing-b", "payments"]
    assert select_groups(admin, None) == [] and select_groups(admin, []) == []
    with pytest.raises(ConfigurationError, match="not a regular expression"):
        select_groups(admin, ["re:("])


def test_consumer_groups_may_still_be_a_bool():
    assert as_text("consumer_groups", True, NAMES_OR_BOOL) is True
    assert as_text("consumer_groups", [7, "a"], NAMES_OR_BOOL) == ["7", "a"]
    with pytest.raises(ConfigurationError, match="consumer_groups must be text"):
        as_text("consumer_groups", 1.5, NAMES_OR_BOOL)


def test_a_named_group_the_cluster_does_not_have_is_called_out(caplog):
    from airflow_kafka_backup.engine.topics.metadata import select_groups

    admin = SimpleNamespace(list_consumer_groups=lambda request_timeout: SimpleNamespace(
        result=lambda: SimpleNamespace(valid=[SimpleNamespace(group_id="billing")])))
    assert select_groups(admin, ["billing", "biling"]) == ["billing"]
    assert "consumer_groups names group(s) the cluster does not have: biling" in caplog.text
