"""DAG factories: a backup DAG for your topics in a few lines.

    from airflow_kafka_backup.dag_factories import backup_dag
    dag = backup_dag("orders_backup", topics=["orders"], bucket="my-backups", schedule="@hourly")

Every setting is also a DAG Param, so the trigger form shows the defaults and a
manual run's conf can override them.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, BaseOperator, Param, XComArg

from airflow_kafka_backup.engine.backup.settings import BackupSettings
from airflow_kafka_backup.engine.formats.compression import COMPRESSIONS, DEFAULT_LEVEL
from airflow_kafka_backup.engine.formats.segment_codec import FORMATS
from airflow_kafka_backup.engine.restore.loop import COMMIT_INTERVAL_S, MAX_COMMIT_INTERVAL_S, validate_commit_interval
from airflow_kafka_backup.engine.restore.non_empty_targets import POLICIES as TARGET_POLICIES
from airflow_kafka_backup.engine.settings import ISOLATION_LEVELS, clean_prefix
from airflow_kafka_backup.engine.storage.retention import check_retention_prefix
from airflow_kafka_backup.engine.storage.s3_retry import MAX_RETRY_BACKOFF_MS, validate_retry_backoff_ms
from airflow_kafka_backup.engine.storage.s3_settings import (
    CANNED_ACLS,
    DEFAULT_PART_SIZE,
    MAX_OBJECT_LOCK_DAYS,
    MIN_PART_SIZE,
    OBJECT_LOCK_MODES,
    PLACEHOLDER_CUSTOMER_KEY,
    SSE_ALGORITHMS,
    S3WriteSettings,
    check_retention_covers_object_lock,
    validate_retention_days,
)
from airflow_kafka_backup.operators.backup import (
    KafkaBackupCommitOperator,
    KafkaBackupOperator,
    KafkaBackupPlanOperator,
    KafkaBackupRetentionOperator,
    KafkaBackupRpoGuardOperator,
    KafkaBackupVerifyOperator,
    validate_rpo_seconds,
)
from airflow_kafka_backup.operators.restore import (
    KafkaRestoreGroupOffsetsOperator,
    KafkaRestoreOperator,
    KafkaRestorePlanOperator,
    KafkaRestoreVerifyOperator,
)
from airflow_kafka_backup.sensors.backlog import KafkaBacklogSensor

# Every task of the factories' DAGs retries a transient fault that outlasted botocore's and librdkafka's own
# retries: after 1 minute, then 2 (retry_exponential_backoff is the multiplier on Airflow 3.2+ and a switch
# before it). A user error fails the plan at once (operators.s3.UserInputError). Override through
# dag_kwargs={"default_args": {...}}.
DEFAULT_TASK_ARGS: dict[str, Any] = {
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    # A multiplier where Airflow types it as a float (3.2+), a switch where it is a bool (checked at import).
    "retry_exponential_backoff": 2.0 if "float" in str(inspect.signature(BaseOperator.__init__).parameters[
        "retry_exponential_backoff"].annotation) else True,
    "max_retry_delay": timedelta(minutes=10),
}


def _dag_arguments(dag_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """The caller's DAG arguments, with their ``default_args`` laid over :data:`DEFAULT_TASK_ARGS`."""
    kwargs = dict(dag_kwargs or {})
    kwargs["default_args"] = {**DEFAULT_TASK_ARGS, **(kwargs.get("default_args") or {})}
    return kwargs


# Backup only: the restore DAG's own objects (offset maps, restore manifests) are not locked.
OBJECT_LOCK_ARGUMENTS = ("object_lock_mode", "object_lock_retention_days")
PREFIX_HELP = ("Key prefix of the backup in the bucket. Leading and trailing slashes are ignored; a doubled slash "
               "is refused. Empty: the backup lives at the bucket's root.")


def backup_params(
    *,
    topics: Sequence[str] = (),
    exclude_topics: Sequence[str] = (),
    bucket: str | None = None,
    prefix: str = "kafka-backup",
    kafka_conn_id: str = "kafka_default",
    aws_conn_id: str = "aws_default",
    flush_size: int = 10_000,
    compression: str = "zstd",
    compression_level: int | None = None,
    segment_format: str = "msgpack",
    offset_pad_width: int = 10,
    isolation_level: str = "read_committed",
    allow_data_loss: bool = False,
    max_work_units: int = 16,
    rotate_interval_ms: int | None = None,
    rotate_schedule_interval_ms: int | None = None,
    timezone: str = "UTC",
    retention_days: int | None = None,
    object_lock_mode: str | None = None,
    object_lock_retention_days: int | None = None,
    consumer_groups: str | list[str] | None = "*",
    rpo_seconds: float | None = None,
    **s3_defaults: Any,
) -> dict[str, Param]:
    """The backup DAG's Params. Bounds the form can check are in the schema; the plan task
    re-validates everything (run conf may bypass the form) before anything is written."""
    return {
        "topics": Param(list(topics), type="array", items={"type": "string", "minLength": 1},
                        description="Kafka topics to back up: names, and 're:<regex>' patterns (full match) that "
                                    "each run resolves anew, so new topics are backed up from their first record. "
                                    "Internal topics (__*) are matched only by name."),
        "exclude_topics": Param(list(exclude_topics), type="array", items={"type": "string", "minLength": 1},
                                description="Topics the patterns in topics must not select: names and "
                                            "'re:<regex>' patterns."),
        "bucket": Param(bucket, type=["null", "string"], description="S3 bucket to write to."),
        "prefix": Param(prefix, type="string", description=PREFIX_HELP),
        "kafka_conn_id": Param(kafka_conn_id, type="string", description="Airflow connection of type kafka."),
        "aws_conn_id": Param(aws_conn_id, type="string", description="Airflow connection of type aws."),
        "flush_size": Param(flush_size, type="integer", minimum=1, description="Most records per segment file."),
        "compression": Param(compression, enum=sorted(COMPRESSIONS), description="Segment compression."),
        "compression_level": Param(compression_level, type=["null", "integer"],
                                   description="Compression level; empty for the codec's default for backups "
                                               f"(zstd {DEFAULT_LEVEL['zstd']}, 1 to 22; gzip "
                                               f"{DEFAULT_LEVEL['gzip']}, ISA-L's 0 to 3). A re-run of a committed "
                                               "run uses the level that run recorded."),
        "segment_format": Param(segment_format, enum=sorted(FORMATS), description="Segment file format."),
        "offset_pad_width": Param(offset_pad_width, type="integer", minimum=0, maximum=20,
                                  description="Zero-pad offsets in segment names to this many digits."),
        "isolation_level": Param(isolation_level, enum=list(ISOLATION_LEVELS),
                                 description="read_committed skips aborted transactions."),
        "allow_data_loss": Param(allow_data_loss, type="boolean",
                                 description="Continue when retention deleted records never backed up; "
                                             "the gap is recorded in the manifest."),
        "max_work_units": Param(max_work_units, type="integer", minimum=1,
                                description="Most parallel backup tasks (capped by [core] max_map_length)."),
        "rotate_interval_ms": Param(rotate_interval_ms, type=["null", "integer"], minimum=1,
                                    description="Most record time one segment spans (by record timestamps)."),
        "rotate_schedule_interval_ms": Param(
            rotate_schedule_interval_ms, type=["null", "integer"], minimum=1,
            description="Cut segments at clock-aligned boundaries of this length in `timezone`, "
                        "judged on record timestamps (e.g. 3600000: on the hour)."),
        "timezone": Param(timezone, type="string", description="IANA timezone for rotate_schedule_interval_ms."),
        "consumer_groups": Param(consumer_groups, type=["null", "string", "array"],
                                 description="Consumer groups whose offsets to record: '*' (all), a list of ids, "
                                             "or 're:<pattern>'; null for none."),
        "ranges": Param({}, type="object",
                        description='Manual/backfill run: re-back-up offsets still in Kafka, end exclusive: '
                                    '{"orders": {"0": [100, 200]}}.'),
        "from_timestamp": Param(None, type=["null", "string", "integer"],
                                description="Manual/backfill run: re-back-up records from this time "
                                            "(ISO-8601 or epoch ms)."),
        "until_timestamp": Param(None, type=["null", "string", "integer"],
                                 description="Manual/backfill run: ... until this time (exclusive)."),
        "force_unlock": Param(False, type="boolean",
                              description="Take over the writer lock of a run that died without committing."),
        "rpo_seconds": Param(rpo_seconds, type=["null", "number"], exclusiveMinimum=0,
                             description="Recovery point objective in seconds: the run fails after its commit when "
                                         "a topic's oldest record not yet backed up is older (null: no guard)."),
        "retention_days": Param(retention_days, type=["null", "integer"], minimum=1,
                                description="Expire backup objects after this many days (S3 lifecycle rule)."),
        "object_lock_mode": Param(object_lock_mode, type=["null", "string"], enum=[None, *OBJECT_LOCK_MODES],
                                  description="S3 Object Lock mode for every object written (the bucket must have "
                                              "Object Lock enabled); with object_lock_retention_days."),
        "object_lock_retention_days": Param(
            object_lock_retention_days, type=["null", "integer"], minimum=1, maximum=MAX_OBJECT_LOCK_DAYS,
            description="Retain every object written this many days from its write (not deletable meanwhile)."),
        **s3_params(**s3_defaults),
    }


def s3_params(
    *,
    sse_algorithm: str | None = None,
    sse_kms_key_id: str | None = None,
    sse_customer_key_variable: str | None = None,
    acl: str | None = None,
    part_size: int = DEFAULT_PART_SIZE,
    expect_continue: bool = True,
    s3_retry_backoff_ms: int | None = None,
) -> dict[str, Param]:
    """Params for how objects are written and read: encryption, ACL, multipart part size."""
    return {
        "sse_algorithm": Param(sse_algorithm, type=["null", "string"], enum=[None, *SSE_ALGORITHMS],
                               description="Server-side encryption: AES256 (SSE-S3) or aws:kms."),
        "sse_kms_key_id": Param(sse_kms_key_id, type=["null", "string"], description="KMS key for aws:kms."),
        "sse_customer_key_variable": Param(
            sse_customer_key_variable, type=["null", "string"],
            description="Name of the Airflow Variable holding the SSE-C key (32 bytes or base64). "
                        "The key itself never goes in a Param."),
        "acl": Param(acl, type=["null", "string"], enum=[None, *CANNED_ACLS], description="Canned ACL for objects."),
        "part_size": Param(part_size, type="integer", minimum=MIN_PART_SIZE,
                           description="Multipart part size in bytes (at least 5 MiB)."),
        "expect_continue": Param(expect_continue, type="boolean",
                                 description="Send uploads with 'Expect: 100-continue'."),
        "s3_retry_backoff_ms": Param(
            s3_retry_backoff_ms, type=["null", "integer"], minimum=0, maximum=MAX_RETRY_BACKOFF_MS,
            description="Base of the exponential backoff between S3 retries, in ms (each wait is random, up to "
                        "base * 2^(retry-1), at most 20 s); null keeps botocore's. Needs retry mode standard "
                        "or adaptive."),
    }


S3_ARGUMENTS = ("sse_algorithm", "sse_kms_key_id", "sse_customer_key_variable", "acl", "part_size",
                "expect_continue", "s3_retry_backoff_ms")


def backup_dag(
    dag_id: str = "kafka_backup",
    *,
    schedule: Any = None,
    wait_for_backlog: dict[str, Any] | None = None,
    verify: bool = False,
    rpo: timedelta | None = None,
    dag_kwargs: dict[str, Any] | None = None,
    **param_defaults: Any,
) -> DAG:
    """Build the backup DAG: ``[wait_for_backlog ->] plan -> retention -> backup (mapped) -> commit -> check_rpo``.

    The plan validates every Param before the retention task writes the bucket's lifecycle rule.

    ``param_defaults`` are the Params' defaults (see :func:`backup_params`).
    ``verify`` adds a :class:`KafkaBackupVerifyOperator` last (deep: downloads every segment).
    ``wait_for_backlog`` adds a :class:`KafkaBacklogSensor` first, with these arguments
    (e.g. ``{"min_records": 100_000, "max_age_s": 3600, "deferrable": True}``).
    Each run emits an asset event ``s3://<bucket>/<prefix>/<topic>`` per topic it backed up,
    through the asset alias ``kafka-backup:<dag_id>``.
    """
    if rpo is not None:
        param_defaults.setdefault("rpo_seconds", rpo.total_seconds())
    params = backup_params(**param_defaults)
    _validate_defaults(params)
    with DAG(
        dag_id,
        schedule=schedule,
        params=params,
        render_template_as_native_obj=True,
        catchup=False,
        max_active_runs=1,
        tags=["kafka", "backup"],
        doc_md=__doc__,
        **_dag_arguments(dag_kwargs),
    ) as dag:
        s3 = _s3_arguments(*OBJECT_LOCK_ARGUMENTS)
        retention = KafkaBackupRetentionOperator(task_id="retention", retention_days="{{ params.retention_days }}",
                                                 **s3)
        plan = KafkaBackupPlanOperator(
            task_id="plan",
            topics="{{ params.topics }}",
            exclude_topics="{{ params.exclude_topics }}",
            kafka_conn_id="{{ params.kafka_conn_id }}",
            flush_size="{{ params.flush_size }}",
            compression="{{ params.compression }}",
            compression_level="{{ params.compression_level }}",
            segment_format="{{ params.segment_format }}",
            offset_pad_width="{{ params.offset_pad_width }}",
            isolation_level="{{ params.isolation_level }}",
            allow_data_loss="{{ params.allow_data_loss }}",
            max_work_units="{{ params.max_work_units }}",
            rotate_interval_ms="{{ params.rotate_interval_ms }}",
            rotate_schedule_interval_ms="{{ params.rotate_schedule_interval_ms }}",
            timezone="{{ params.timezone }}",
            force_unlock="{{ params.force_unlock }}",
            consumer_groups="{{ params.consumer_groups }}",
            ranges="{{ params.ranges }}",
            from_timestamp="{{ params.from_timestamp }}",
            until_timestamp="{{ params.until_timestamp }}",
            retention_days="{{ params.retention_days }}",
            rpo_seconds="{{ params.rpo_seconds }}",
            **s3,
        )
        plan >> retention
        if wait_for_backlog is not None:
            sensor = KafkaBacklogSensor(
                task_id="wait_for_backlog", topics="{{ params.topics }}", exclude_topics="{{ params.exclude_topics }}",
                kafka_conn_id="{{ params.kafka_conn_id }}",
                isolation_level="{{ params.isolation_level }}", **{"mode": "reschedule", **wait_for_backlog}, **s3,
            )
            sensor >> plan
        backup = KafkaBackupOperator.partial(
            task_id="backup",
            kafka_conn_id="{{ params.kafka_conn_id }}",
            isolation_level="{{ params.isolation_level }}",
            **s3,
        ).expand(work_unit=plan.output)
        retention >> backup
        commit = KafkaBackupCommitOperator(
            task_id="commit", plan=XComArg(plan, key="plan"), segments=backup.output,
            asset_alias=f"kafka-backup:{dag_id}", kafka_conn_id="{{ params.kafka_conn_id }}",
            isolation_level="{{ params.isolation_level }}", **s3,
        )
        commit >> KafkaBackupRpoGuardOperator(
            task_id="check_rpo", rpo_seconds="{{ params.rpo_seconds }}",
            lag="{{ ti.xcom_pull(task_ids='commit')['lag'] }}",
        )
        if verify:
            commit >> KafkaBackupVerifyOperator(task_id="verify", topics="{{ params.topics }}", **s3)
    return dag


def restore_params(
    *,
    topics: Sequence[str] = (),
    topic_mapping: dict[str, str] | None = None,
    incarnations: dict[str, str] | None = None,
    bucket: str | None = None,
    prefix: str = "kafka-backup",
    kafka_conn_id: str = "kafka_default",
    aws_conn_id: str = "aws_default",
    create_topics: bool = True,
    topic_configs: dict[str, str] | None = None,
    dry_run: bool = False,
    max_work_units: int = 16,
    restore_consumer_groups: bool = False,
    group_mapping: dict[str, str] | None = None,
    commit_interval_seconds: float = COMMIT_INTERVAL_S,
    if_target_not_empty: str = "fail",
    **s3_defaults: Any,
) -> dict[str, Param]:
    """The restore DAG's Params; the plan task validates them all before anything is written."""
    timestamp = ["null", "string", "integer"]
    return {
        "topics": Param(list(topics), type="array", items={"type": "string"},
                        description="Source topics in the backup to restore: names, and 're:<regex>' patterns "
                                    "matched against the topics in the backup ('re:.*' restores everything)."),
        "topic_mapping": Param(topic_mapping or {}, type="object",
                               description='Source -> target topic names, e.g. {"orders": "orders-restored"}; '
                                           "unmapped topics keep their name."),
        "incarnations": Param(incarnations or {}, type="object",
                              description='Which incarnation of a deleted-and-recreated topic to restore, by its '
                                          'topic ID: {"orders": "<topic id>"}. Default: the latest, or with '
                                          "until_timestamp the one live at that time (kafka-backup ls shows them)."),
        "bucket": Param(bucket, type=["null", "string"], description="S3 bucket holding the backup."),
        "prefix": Param(prefix, type="string", description=PREFIX_HELP),
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
        "if_target_not_empty": Param(
            if_target_not_empty, enum=list(TARGET_POLICIES),
            description="When a target topic already holds records: fail (name it and stop, before writing), "
                        "append (restore after them), or resume (continue the unfinished restore of this backup "
                        "that wrote them, exactly once)."),
        "max_work_units": Param(max_work_units, type="integer", minimum=1, description="Most parallel restore tasks."),
        "restore_consumer_groups": Param(
            restore_consumer_groups, type="boolean",
            description="Move the consumer groups the backup recorded to the translated offsets "
                        "(groups must have no active members)."),
        "group_mapping": Param(group_mapping or {}, type="object",
                               description='Rename groups on restore: {"billing": "billing-restored"}.'),
        "commit_interval_seconds": Param(
            commit_interval_seconds, type="number", minimum=0, maximum=MAX_COMMIT_INTERVAL_S,
            description="Seconds each restore transaction takes whole segments before it commits "
                        "(0: a transaction per segment). Longer is faster for small segments; a killed "
                        "task redoes at most this much, exactly once all the same."),
        **s3_params(**s3_defaults),
    }


def restore_dag(
    dag_id: str = "kafka_restore",
    *,
    dag_kwargs: dict[str, Any] | None = None,
    **param_defaults: Any,
) -> DAG:
    """Build the restore DAG (manual trigger): ``plan -> restore (mapped) -> verify``."""
    params = restore_params(**param_defaults)
    _validate_defaults(params)
    with DAG(
        dag_id,
        schedule=None,
        params=params,
        render_template_as_native_obj=True,
        catchup=False,
        tags=["kafka", "restore"],
        doc_md="Restore Kafka topics from a backup made by airflow-kafka-backup. Trigger by hand.",
        **_dag_arguments(dag_kwargs),
    ) as dag:
        common = {**_s3_arguments(), "kafka_conn_id": "{{ params.kafka_conn_id }}"}
        plan = KafkaRestorePlanOperator(
            task_id="plan",
            topics="{{ params.topics }}",
            topic_mapping="{{ params.topic_mapping }}",
            incarnations="{{ params.incarnations }}",
            from_timestamp="{{ params.from_timestamp }}",
            until_timestamp="{{ params.until_timestamp }}",
            offset_bounds="{{ params.offset_bounds }}",
            create_topics="{{ params.create_topics }}",
            topic_configs="{{ params.topic_configs }}",
            dry_run="{{ params.dry_run }}",
            max_work_units="{{ params.max_work_units }}",
            restore_consumer_groups="{{ params.restore_consumer_groups }}",
            group_mapping="{{ params.group_mapping }}",
            commit_interval_seconds="{{ params.commit_interval_seconds }}",
            if_target_not_empty="{{ params.if_target_not_empty }}",
            **common,
        )
        # The plan's choice: this run's own restore id, or the unfinished restore it resumes.
        chosen = {"restore_id": "{{ ti.xcom_pull(task_ids='plan', key='restore_id') }}"}
        restore = KafkaRestoreOperator.partial(
            task_id="restore", commit_interval_seconds="{{ params.commit_interval_seconds }}", **chosen, **common,
        ).expand(work_unit=plan.output)
        verify = KafkaRestoreVerifyOperator(task_id="verify", work_units=plan.output,
                                            asset_alias=f"kafka-restore:{dag_id}", **chosen, **common)
        groups = KafkaRestoreGroupOffsetsOperator(task_id="restore_consumer_groups",
                                                  groups=XComArg(plan, key="groups"), **chosen, **common)
        restore >> verify >> groups
    return dag


def _s3_arguments(*extra: str) -> dict[str, str]:
    """Operator arguments shared by every task: where the backup lives and how its objects are written."""
    names = ("bucket", "prefix", "aws_conn_id", *S3_ARGUMENTS, *extra)
    return {name: "{{ params." + name + " }}" for name in names}


def _validate_defaults(params: dict[str, Param]) -> None:
    """Refuse bad defaults when the DAG file is parsed, not at 3 a.m. when it runs."""
    values = {name: param.value for name, param in params.items()}
    write_settings = S3WriteSettings.create(
        **{name: values[name] for name in S3_ARGUMENTS
           if name not in ("sse_customer_key_variable", "expect_continue", "s3_retry_backoff_ms")},
        sse_customer_key=PLACEHOLDER_CUSTOMER_KEY if values["sse_customer_key_variable"] else None,
        **{name: values[name] for name in OBJECT_LOCK_ARGUMENTS if name in values},
    )
    validate_retry_backoff_ms(values["s3_retry_backoff_ms"])
    clean_prefix(values["prefix"])
    if "commit_interval_seconds" in values:
        validate_commit_interval(values["commit_interval_seconds"])
    if "rpo_seconds" in values:
        validate_rpo_seconds(values["rpo_seconds"])
    if "retention_days" in values:
        days = validate_retention_days(values["retention_days"])
        check_retention_covers_object_lock(days, write_settings.object_lock_retention_days)
        if days is not None:
            check_retention_prefix(values["bucket"] or "<any>", values["prefix"] or "")
        BackupSettings.create(
            topics=values["topics"] or ["<any>"], exclude_topics=values["exclude_topics"],
            bucket=values["bucket"] or "<any>",
            **{name: values[name] for name in (
                "prefix", "flush_size", "compression", "compression_level", "segment_format", "offset_pad_width",
                "isolation_level", "allow_data_loss", "max_work_units", "rotate_interval_ms",
                "rotate_schedule_interval_ms", "timezone")},
        )


def __getattr__(name: str) -> Any:
    """``restore_drill_dag`` lives in :mod:`airflow_kafka_backup.drill_dag` (imported on first use: it imports this)."""
    if name == "restore_drill_dag":
        from airflow_kafka_backup.drill_dag import restore_drill_dag

        return restore_drill_dag
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
