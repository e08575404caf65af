"""DAG factories: a backup DAG for your topics in a few lines.

    from airflow_kafka_backup.dag_factories import backup_dag
    dag = backup_dag("orders_backup", topics=["orders"], bucket="my-backups", schedule="@hourly")

Every setting is also a DAG Param, so the trigger form shows the defaults and a
manual run's conf can override them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import DAG, Param, XComArg

from airflow_kafka_backup.compression import COMPRESSIONS
from airflow_kafka_backup.operators.backup import (
    KafkaBackupCommitOperator,
    KafkaBackupOperator,
    KafkaBackupPlanOperator,
)
from airflow_kafka_backup.operators.restore import (
    KafkaRestoreOperator,
    KafkaRestorePlanOperator,
    KafkaRestoreVerifyOperator,
)
from airflow_kafka_backup.segment_codec import FORMATS
from airflow_kafka_backup.settings import ISOLATION_LEVELS


def backup_params(
    *,
    topics: Sequence[str] = (),
    bucket: str | None = None,
    prefix: str = "kafka-backup",
    kafka_conn_id: str = "kafka_default",
    aws_conn_id: str = "aws_default",
    flush_size: int = 10_000,
    compression: str = "gzip",
    segment_format: str = "jsonl",
    offset_pad_width: int = 10,
    isolation_level: str = "read_committed",
    allow_data_loss: bool = False,
    max_work_units: int = 16,
) -> dict[str, Param]:
    """The backup DAG's Params. Bounds the form can check are in the schema; the plan task
    re-validates everything (run conf may bypass the form) before anything is written."""
    return {
        "topics": Param(list(topics), type="array", items={"type": "string"},
                        description="Kafka topics to back up."),
        "bucket": Param(bucket, type=["null", "string"], description="S3 bucket to write to."),
        "prefix": Param(prefix, type="string", description="Key prefix of this backup in the bucket."),
        "kafka_conn_id": Param(kafka_conn_id, type="string", description="Airflow connection of type kafka."),
        "aws_conn_id": Param(aws_conn_id, type="string", description="Airflow connection of type aws."),
        "flush_size": Param(flush_size, type="integer", description="Most records per segment file."),
        "compression": Param(compression, enum=sorted(COMPRESSIONS), description="Segment compression."),
        "segment_format": Param(segment_format, enum=sorted(FORMATS), description="Segment file format."),
        "offset_pad_width": Param(offset_pad_width, type="integer",
                                  description="Zero-pad offsets in segment names to this many digits."),
        "isolation_level": Param(isolation_level, enum=list(ISOLATION_LEVELS),
                                 description="read_committed skips aborted transactions."),
        "allow_data_loss": Param(allow_data_loss, type="boolean",
                                 description="Continue when retention deleted records never backed up; "
                                             "the gap is recorded in the manifest."),
        "max_work_units": Param(max_work_units, type="integer",
                                description="Most parallel backup tasks (capped by [core] max_map_length)."),
    }


def backup_dag(
    dag_id: str = "kafka_backup",
    *,
    schedule: Any = None,
    dag_kwargs: dict[str, Any] | None = None,
    **param_defaults: Any,
) -> DAG:
    """Build the backup DAG: ``plan -> backup (mapped) -> commit``.

    ``param_defaults`` are the Params' defaults (see :func:`backup_params`).
    """
    params = backup_params(**param_defaults)
    with DAG(
        dag_id,
        schedule=schedule,
        params=params,
        render_template_as_native_obj=True,
        catchup=False,
        max_active_runs=1,
        tags=["kafka", "backup"],
        doc_md=__doc__,
        **(dag_kwargs or {}),
    ) as dag:
        s3 = {"bucket": "{{ params.bucket }}", "prefix": "{{ params.prefix }}",
              "aws_conn_id": "{{ params.aws_conn_id }}"}
        plan = KafkaBackupPlanOperator(
            task_id="plan",
            topics="{{ params.topics }}",
            kafka_conn_id="{{ params.kafka_conn_id }}",
            flush_size="{{ params.flush_size }}",
            compression="{{ params.compression }}",
            segment_format="{{ params.segment_format }}",
            offset_pad_width="{{ params.offset_pad_width }}",
            isolation_level="{{ params.isolation_level }}",
            allow_data_loss="{{ params.allow_data_loss }}",
            max_work_units="{{ params.max_work_units }}",
            **s3,
        )
        backup = KafkaBackupOperator.partial(
            task_id="backup",
            kafka_conn_id="{{ params.kafka_conn_id }}",
            isolation_level="{{ params.isolation_level }}",
            **s3,
        ).expand(work_unit=plan.output)
        KafkaBackupCommitOperator(
            task_id="commit", plan=XComArg(plan, key="plan"), segments=backup.output, **s3,
        )
    return dag


def restore_params(
    *,
    topics: Sequence[str] = (),
    topic_mapping: dict[str, str] | None = None,
    bucket: str | None = None,
    prefix: str = "kafka-backup",
    kafka_conn_id: str = "kafka_default",
    aws_conn_id: str = "aws_default",
    create_topics: bool = True,
    topic_configs: dict[str, str] | None = None,
    dry_run: bool = False,
    max_work_units: int = 16,
) -> dict[str, Param]:
    """The restore DAG's Params; the plan task validates them all before anything is written."""
    timestamp = ["null", "string", "integer"]
    return {
        "topics": Param(list(topics), type="array", items={"type": "string"},
                        description="Source topics in the backup to restore."),
        "topic_mapping": Param(topic_mapping or {}, type="object",
                               description='Source -> target topic names, e.g. {"orders": "orders-restored"}; '
                                           "unmapped topics keep their name."),
        "bucket": Param(bucket, type=["null", "string"], description="S3 bucket holding the backup."),
        "prefix": Param(prefix, type="string", description="Key prefix of the backup in the bucket."),
        "kafka_conn_id": Param(kafka_conn_id, type="string", description="Airflow connection of type kafka."),
        "aws_conn_id": Param(aws_conn_id, type="string", description="Airflow connection of type aws."),
        "from_timestamp": Param(None, type=timestamp,
                                description="Only records with timestamp >= this (ISO-8601 or epoch ms)."),
        "until_timestamp": Param(None, type=timestamp,
                                 description="Point in time: only records with timestamp < this "
                                             "(ISO-8601 or epoch ms)."),
        "offset_bounds": Param({}, type="object",
                               description="Per-partition source offsets, end exclusive: "
                                           '{"orders": {"0": [100, 200]}}.'),
        "create_topics": Param(create_topics, type="boolean",
                               description="Create missing target topics with the backed-up partition count."),
        "topic_configs": Param(topic_configs or {}, type="object",
                               description='Configs for topics the restore creates, e.g. {"retention.ms": "-1"}.'),
        "dry_run": Param(dry_run, type="boolean", description="Plan and log only; write nothing."),
        "max_work_units": Param(max_work_units, type="integer", description="Most parallel restore tasks."),
    }


def restore_dag(
    dag_id: str = "kafka_restore",
    *,
    dag_kwargs: dict[str, Any] | None = None,
    **param_defaults: Any,
) -> DAG:
    """Build the restore DAG (manual trigger): ``plan -> restore (mapped) -> verify``."""
    with DAG(
        dag_id,
        schedule=None,
        params=restore_params(**param_defaults),
        render_template_as_native_obj=True,
        catchup=False,
        tags=["kafka", "restore"],
        doc_md="Restore Kafka topics from a backup made by airflow-kafka-backup. Trigger by hand.",
        **(dag_kwargs or {}),
    ) as dag:
        common = {"bucket": "{{ params.bucket }}", "prefix": "{{ params.prefix }}",
                  "aws_conn_id": "{{ params.aws_conn_id }}", "kafka_conn_id": "{{ params.kafka_conn_id }}"}
        plan = KafkaRestorePlanOperator(
            task_id="plan",
            topics="{{ params.topics }}",
            topic_mapping="{{ params.topic_mapping }}",
            from_timestamp="{{ params.from_timestamp }}",
            until_timestamp="{{ params.until_timestamp }}",
            offset_bounds="{{ params.offset_bounds }}",
            create_topics="{{ params.create_topics }}",
            topic_configs="{{ params.topic_configs }}",
            dry_run="{{ params.dry_run }}",
            max_work_units="{{ params.max_work_units }}",
            **common,
        )
        restore = KafkaRestoreOperator.partial(task_id="restore", **common).expand(work_unit=plan.output)
        verify = KafkaRestoreVerifyOperator(task_id="verify", work_units=plan.output, **common)
        restore >> verify
    return dag
