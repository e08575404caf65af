"""DAG factories: a backup DAG for your topics in a few lines.

    from airflow_kafka_backup.dag_factories import backup_dag
    dag = backup_dag("orders_backup", topics=["orders"], bucket="my-backups", schedule="@hourly")

Every setting is also a DAG Param, so the trigger form shows the defaults and a
manual run's conf can override them.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, BaseOperator, Param, XComArg

from airflow_kafka_backup.compat import airflow_version
from airflow_kafka_backup.engine.backup.settings import BackupSettings
from airflow_kafka_backup.engine.formats.compression import COMPRESSIONS, DEFAULT_LEVEL
from airflow_kafka_backup.engine.formats.segment_codec import FORMATS
from airflow_kafka_backup.engine.restore.loop import COMMIT_INTERVAL_S, MAX_COMMIT_INTERVAL_S, validate_commit_interval
from airflow_kafka_backup.engine.restore.non_empty_targets import POLICIES as TARGET_POLICIES
from airflow_kafka_backup.engine.settings import ISOLATION_LEVELS, clean_prefix
from airflow_kafka_backup.engine.storage.checksums import ALGORITHMS as CHECKSUM_ALGORITHMS
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
    KafkaRestoreCreateTopicsOperator,
    KafkaRestoreGroupOffsetsOperator,
    KafkaRestoreOperator,
    KafkaRestorePlanOperator,
    KafkaRestoreVerifyOperator,
    KafkaRestoreWorkUnitsOperator,
)
from airflow_kafka_backup.operators.restore_approval import KafkaRestoreApprovalOperator
from airflow_kafka_backup.sensors.backlog import KafkaBacklogSensor

log = logging.getLogger(__name__)

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


# Trigger-form sections (Airflow 3.3 renders a Param's ``section`` as a named, collapsed group; Params without
# one stay in the open first group, which holds what an operator must fill in).
SECTION_CONNECTIONS = "Connections"
SECTION_SEGMENTS = "Segments: size, rotation, format"
SECTION_READING = "Reading Kafka"
SECTION_RETENTION = "Retention and RPO"
SECTION_ENCRYPTION = "Encryption and ACL"
SECTION_TRANSFER = "S3 transfer tuning"
SECTION_OBJECT_LOCK = "Object Lock"
SECTION_MANUAL = "Manual and backfill runs"
SECTION_SOURCE = "What to restore: incarnations and offsets"
SECTION_TARGETS = "Target topics"
SECTION_GROUPS = "Consumer groups"
SECTION_TUNING = "Tuning"
SECTION_DANGER = "Dangerous switches"

# A time Param: the form shows a date-time picker (it sends RFC 3339, e.g. 2024-05-01T10:00:00+00:00); a run
# conf may also give epoch milliseconds. The UI picks the picker from the first non-null type and ``format``;
# ``examples`` keeps it from treating a multi-type field as free text.
TIME_SCHEMA: dict[str, Any] = {"type": ["string", "integer", "null"], "format": "date-time",
                               "examples": ["2024-05-01T10:00:00+00:00"]}
OFF = "Off"


def _param(default: Any, title: str, help_md: str, *, section: str | None = None, **schema: Any) -> Param:
    """A Param with a title (units included) and Markdown help; ``section`` None keeps it in the first group.

    No plain ``description``: the form shows it instead of ``description_md``, Markdown unrendered.
    """
    if section is not None:
        schema["section"] = section
    return Param(default, title=title, description_md=help_md, **schema)


def _choices(values: Sequence[Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    """``enum`` plus ``values_display`` for every value, so a null shows as "Off", not "null"."""
    shown = {("null" if v is None else str(v)): (OFF if v is None else str(v)) for v in values}
    return {"enum": list(values), "values_display": {**shown, **(labels or {})}}


# What an operator reads on the DAG's page (the factory's docstring is for developers).
BACKUP_DOC_MD = """\
### Kafka backup

Each run copies the new records of the selected topics to S3: keys, values, headers and timestamps,
byte for byte, in segment files that a run manifest commits. A run that fails commits nothing; the
next run (or a retry) picks up from the last committed offsets, so nothing is backed up twice.

**Trigger form.** The first group is all a normal run needs: **Topics**, **S3 bucket**, **Key prefix**.
The other groups are tuning and one-off settings:

- *Segments*, *Reading Kafka*, *Retention and RPO*, *Encryption and ACL*, *S3 transfer tuning*,
  *Object Lock*: how segments are cut and written; leave them at their defaults unless you know why.
- *Manual and backfill runs*: re-back-up an offset range or a time window that is still in Kafka.
- *Dangerous switches*: **Allow data loss** (carry on past records that retention deleted before
  they were backed up) and **Force unlock** (take over the lock of a run that died). Use them only
  when a failed run's log tells you to.

**What happens next.** `plan` checks every setting before anything is written; `backup` tasks copy
the ranges in parallel; `commit` writes the run manifest; `check_rpo` fails the run when a topic's
backup is older than the recovery point objective. See the provider's docs/backup.md.
"""

RESTORE_DOC_MD = """\
### Kafka restore

Restores topics from a backup made by the backup DAG, exactly once, and verifies every segment.
Trigger it by hand (**Trigger**), in an incident or for a drill.

**Trigger form.** Fill in the first group: **Topics to restore**, **S3 bucket**, **Key prefix**, the
time window (**Until** is the point in time: records before it are restored), **Topic mapping** to
restore into other topics, and what to do **If a target topic already holds records**. Tick
**Dry run** to see the plan without writing anything. The other groups hold connections, target
topic configs, incarnations and offset bounds, consumer groups, tuning and encryption.

**What happens next.**

1. `plan` reads the committed backup and checks the targets. It creates nothing.
2. `approval` waits for a person: open **Required Actions** (or the task), read the plan (topics
   and targets, new or existing topics with their record counts, partitions, records, bytes, time
   window, incarnation, consumer groups and estimated duration) and choose **Approve** or
   **Reject**. Rejecting ends the run with nothing written. A dry run shows the same report in the
   `plan` log and stops.
3. `work_units` plans again from the same backup runs and writes the approved plan's work units (a
   backup changed meanwhile fails it, naming what changed: trigger the restore again);
   `create_topics` creates missing targets; `restore` produces the records, exactly once (a retry or
   a cleared run resumes; a new run is refused when targets hold records, unless you chose
   *append* or *resume*).
4. `verify` checks every segment arrived and writes the restore manifest;
   `restore_consumer_groups` moves the groups, when asked.

See the provider's docs/restore.md.
"""

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
    segment_checksum: str = "crc64nvme",
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
    """The backup DAG's Params, laid out for the trigger form. Bounds the form can check are in the schema
    (``exclusiveMinimum`` where 0 is invalid: the form then shows an error instead of raising the value);
    the plan task re-validates everything (run conf may bypass the form) before anything is written."""
    return {
        "topics": _param(
            list(topics), "Topics",
            "Kafka topics to back up, one per line: names, and `re:<regex>` patterns (full match) that each run "
            "resolves anew, so new topics are backed up from their first record. Internal topics (`__*`) are "
            "matched only by name.",
            type="array", items={"type": "string", "minLength": 1}, minItems=1),
        "bucket": _param(bucket, "S3 bucket", "The S3 bucket the backup is written to.",
                         type="string", minLength=1),
        "prefix": _param(prefix, "Key prefix", PREFIX_HELP, type="string"),
        "exclude_topics": _param(
            list(exclude_topics), "Excluded topics",
            "Topics the patterns in **Topics** must not select, one per line: names and `re:<regex>` patterns.",
            type=["array", "null"], items={"type": "string", "minLength": 1}),
        "kafka_conn_id": _param(kafka_conn_id, "Kafka connection", "Airflow connection of type `kafka`.",
                                section=SECTION_CONNECTIONS, type="string", minLength=1),
        "aws_conn_id": _param(aws_conn_id, "AWS connection", "Airflow connection of type `aws`.",
                              section=SECTION_CONNECTIONS, type="string", minLength=1),
        "flush_size": _param(flush_size, "Flush size (records per segment)", "Most records per segment file.",
                             section=SECTION_SEGMENTS, type="integer", exclusiveMinimum=0),
        "rotate_interval_ms": _param(
            rotate_interval_ms, "Rotate interval (ms)",
            "Most record time one segment spans, judged on record timestamps. Empty: no limit.",
            section=SECTION_SEGMENTS, type=["integer", "null"], exclusiveMinimum=0),
        "rotate_schedule_interval_ms": _param(
            rotate_schedule_interval_ms, "Rotate schedule interval (ms)",
            "Cut segments at clock-aligned boundaries of this length in **Timezone**, judged on record "
            "timestamps (e.g. `3600000`: on the hour). Empty: off.",
            section=SECTION_SEGMENTS, type=["integer", "null"], exclusiveMinimum=0),
        "timezone": _param(timezone, "Timezone (IANA)", "Timezone of the rotate schedule, e.g. `Europe/Berlin`.",
                           section=SECTION_SEGMENTS, type="string", minLength=1),
        "compression": _param(compression, "Compression", "Segment compression.",
                              section=SECTION_SEGMENTS, type="string", **_choices(sorted(COMPRESSIONS))),
        "compression_level": _param(
            compression_level, "Compression level",
            "Empty for the codec's default for backups (zstd "
            f"{DEFAULT_LEVEL['zstd']}, 1 to 22; gzip {DEFAULT_LEVEL['gzip']}, ISA-L's 0 to 3). A re-run of a "
            "committed run uses the level that run recorded.",
            section=SECTION_SEGMENTS, type=["integer", "null"]),
        "segment_checksum": _param(
            segment_checksum, "Segment checksum",
            "The checksum each segment carries in the manifest, sent to S3 with the upload and checked on "
            "every download: `crc64nvme` (S3's own default; detects corruption, not tampering) or `sha256` (a "
            "cryptographic digest, at about 0.6 µs more CPU per KiB). A re-run of a committed run uses the "
            "checksum that run recorded.",
            section=SECTION_SEGMENTS, type="string", **_choices(list(CHECKSUM_ALGORITHMS))),
        "segment_format": _param(segment_format, "Segment format", "Segment file format.",
                                 section=SECTION_SEGMENTS, type="string", **_choices(sorted(FORMATS))),
        "offset_pad_width": _param(offset_pad_width, "Offset pad width (digits)",
                                   "Zero-pad offsets in segment names to this many digits (0 to 20).",
                                   section=SECTION_SEGMENTS, type="integer", minimum=0, maximum=20),
        "isolation_level": _param(isolation_level, "Isolation level",
                                  "`read_committed` skips aborted transactions.",
                                  section=SECTION_READING, type="string", **_choices(list(ISOLATION_LEVELS))),
        "consumer_groups": _param(
            _group_list(consumer_groups), "Consumer groups to record",
            "Consumer groups whose offsets each run records, one per line: group ids, `*` for all, and "
            "`re:<pattern>` patterns. Empty: none.",
            section=SECTION_READING, type=["array", "null"], items={"type": "string", "minLength": 1}),
        "max_work_units": _param(max_work_units, "Parallel backup tasks (at most)",
                                 "Most parallel backup tasks (capped by `[core] max_map_length`).",
                                 section=SECTION_READING, type="integer", exclusiveMinimum=0),
        "retention_days": _param(retention_days, "Retention (days)",
                                 "Expire backup objects after this many days (an S3 lifecycle rule). Empty: keep.",
                                 section=SECTION_RETENTION, type=["integer", "null"], exclusiveMinimum=0),
        "rpo_seconds": _param(
            rpo_seconds, "Recovery point objective (seconds)",
            "The run fails after its commit when a topic's oldest record not yet backed up is older. Empty: no "
            "guard.", section=SECTION_RETENTION, type=["number", "null"], exclusiveMinimum=0),
        "object_lock_mode": _param(
            object_lock_mode, "Object Lock mode",
            "S3 Object Lock mode for every object written (the bucket must have Object Lock enabled); with "
            "**Object Lock retention**.",
            section=SECTION_OBJECT_LOCK, type=["string", "null"], **_choices([None, *OBJECT_LOCK_MODES])),
        "object_lock_retention_days": _param(
            object_lock_retention_days, "Object Lock retention (days)",
            "Retain every object written this many days from its write (not deletable meanwhile).",
            section=SECTION_OBJECT_LOCK, type=["integer", "null"], exclusiveMinimum=0,
            maximum=MAX_OBJECT_LOCK_DAYS),
        "ranges": _param(
            {}, "Offset ranges (manual run)",
            'Re-back-up offsets still in Kafka, end exclusive: `{"orders": {"0": [100, 200]}}`. Empty: the '
            "scheduled ranges.", section=SECTION_MANUAL, type=["object", "null"]),
        "from_timestamp": _param(None, "From (time, manual run)",
                                 "Re-back-up records from this time. A run conf may also give epoch ms.",
                                 section=SECTION_MANUAL, **TIME_SCHEMA),
        "until_timestamp": _param(None, "Until (time, exclusive, manual run)",
                                  "... until this time. A run conf may also give epoch ms.",
                                  section=SECTION_MANUAL, **TIME_SCHEMA),
        "allow_data_loss": _param(
            allow_data_loss, "Allow data loss",
            "Continue when retention deleted records never backed up; the gap is recorded in the manifest.",
            section=SECTION_DANGER, type=["boolean", "null"]),
        "force_unlock": _param(False, "Force unlock",
                               "Take over the writer lock of a run that died without committing.",
                               section=SECTION_DANGER, type=["boolean", "null"]),
        **s3_params(**s3_defaults),
    }


def _group_list(consumer_groups: str | Sequence[str] | None) -> list[str] | None:
    """The ``consumer_groups`` argument as the Param's list: a comma-separated string becomes its ids."""
    if consumer_groups is None or isinstance(consumer_groups, list | tuple):
        return None if consumer_groups is None else list(consumer_groups)
    if consumer_groups == "*" or consumer_groups.startswith("re:"):
        return [consumer_groups]
    return [g.strip() for g in consumer_groups.split(",") if g.strip()]


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
    mib = 1024 * 1024
    return {
        "sse_algorithm": _param(sse_algorithm, "Server-side encryption",
                                "`AES256` (SSE-S3) or `aws:kms`. Off: the bucket's default.",
                                section=SECTION_ENCRYPTION, type=["string", "null"],
                                **_choices([None, *SSE_ALGORITHMS])),
        "sse_kms_key_id": _param(sse_kms_key_id, "KMS key id", "KMS key for `aws:kms`. Empty: the AWS managed key.",
                                 section=SECTION_ENCRYPTION, type=["string", "null"]),
        "sse_customer_key_variable": _param(
            sse_customer_key_variable, "SSE-C key Variable",
            "Name of the Airflow Variable holding the SSE-C key (32 bytes or base64). The key itself never goes "
            "in a Param.", section=SECTION_ENCRYPTION, type=["string", "null"]),
        "acl": _param(acl, "Canned ACL", "Canned ACL for every object written. Off: none.",
                      section=SECTION_ENCRYPTION, type=["string", "null"], **_choices([None, *CANNED_ACLS])),
        "part_size": _param(part_size, "Multipart part size (bytes)",
                            f"Multipart part size in bytes: at least {MIN_PART_SIZE // mib} MiB "
                            f"(`{MIN_PART_SIZE}`); the default is {DEFAULT_PART_SIZE // mib} MiB.",
                            section=SECTION_TRANSFER, type="integer", exclusiveMinimum=MIN_PART_SIZE - 1),
        "expect_continue": _param(expect_continue, "Expect: 100-continue",
                                  "Send uploads with `Expect: 100-continue`.",
                                  section=SECTION_TRANSFER, type=["boolean", "null"]),
        "s3_retry_backoff_ms": _param(
            s3_retry_backoff_ms, "S3 retry backoff base (ms)",
            "Base of the exponential backoff between S3 retries (each wait is random, up to base * 2^(retry-1), "
            "at most 20 s). Empty: botocore's. Needs retry mode `standard` or `adaptive`.",
            section=SECTION_TRANSFER, type=["integer", "null"], minimum=0, maximum=MAX_RETRY_BACKOFF_MS),
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
    if schedule is not None:
        _allow_empty_defaults_when_scheduled(params, dag_id)
    with DAG(
        dag_id,
        schedule=schedule,
        params=params,
        render_template_as_native_obj=True,
        catchup=False,
        max_active_runs=1,
        tags=["kafka", "backup"],
        description="Back up Kafka topics to S3, exactly once per offset range.",
        doc_md=BACKUP_DOC_MD,
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
            segment_checksum="{{ params.segment_checksum }}",
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
    require_approval: bool = True,
    **s3_defaults: Any,
) -> dict[str, Param]:
    """The restore DAG's Params, laid out for an incident: what to restore, from where, up to when, into
    which topics, first; the plan task validates them all before anything is written."""
    return {
        "topics": _param(
            list(topics), "Topics to restore",
            "Source topics in the backup, one per line: names, and `re:<regex>` patterns matched against the "
            "topics in the backup (`re:.*` restores everything).",
            type="array", items={"type": "string", "minLength": 1}, minItems=1),
        "bucket": _param(bucket, "S3 bucket", "The S3 bucket holding the backup.", type="string", minLength=1),
        "prefix": _param(prefix, "Key prefix", PREFIX_HELP, type="string"),
        "from_timestamp": _param(None, "From (time)",
                                 "Only records with a timestamp at or after this time. Empty: from the first "
                                 "record. A run conf may also give epoch ms.", **TIME_SCHEMA),
        "until_timestamp": _param(None, "Until (point in time, exclusive)",
                                  "Point in time: only records with a timestamp before this time. Empty: up to "
                                  "the last backed-up record. A run conf may also give epoch ms.", **TIME_SCHEMA),
        "topic_mapping": _param(
            topic_mapping or {}, "Topic mapping (source -> target)",
            'Restore into other topics, e.g. `{"orders": "orders-restored"}`; unmapped topics keep their name.',
            type=["object", "null"]),
        "if_target_not_empty": _param(
            if_target_not_empty, "If a target topic already holds records",
            "**fail**: name it and stop, before writing. **append**: restore after its records. **resume**: "
            "continue the unfinished restore of this backup that wrote them, exactly once.",
            type="string", **_choices(list(TARGET_POLICIES), {
                "fail": "fail (stop, write nothing)", "append": "append after its records",
                "resume": "resume the unfinished restore"})),
        "dry_run": _param(dry_run, "Dry run (plan only)",
                          "Plan, show the report and stop: nothing is created or written.", type=["boolean", "null"]),
        "kafka_conn_id": _param(kafka_conn_id, "Kafka connection", "Airflow connection of type `kafka` (the target "
                                "cluster).", section=SECTION_CONNECTIONS, type="string", minLength=1),
        "aws_conn_id": _param(aws_conn_id, "AWS connection", "Airflow connection of type `aws`.",
                              section=SECTION_CONNECTIONS, type="string", minLength=1),
        "create_topics": _param(create_topics, "Create missing target topics",
                                "Create missing target topics with the backed-up partition count and configs.",
                                section=SECTION_TARGETS, type=["boolean", "null"]),
        "topic_configs": _param(topic_configs or {}, "Configs of created topics",
                                'Configs for topics the restore creates, e.g. `{"retention.ms": "-1"}`.',
                                section=SECTION_TARGETS, type=["object", "null"]),
        "incarnations": _param(
            incarnations or {}, "Incarnations (topic IDs)",
            'Which incarnation of a deleted-and-recreated topic to restore, by its topic ID: `{"orders": '
            '"<topic id>"}`. Empty: the latest, or with **Until** the one live at that time (`kafka-backup ls` '
            "shows them).", section=SECTION_SOURCE, type=["object", "null"]),
        "offset_bounds": _param({}, "Offset bounds (source offsets)",
                                'Per-partition source offsets, end exclusive: `{"orders": {"0": [100, 200]}}`.',
                                section=SECTION_SOURCE, type=["object", "null"]),
        "restore_consumer_groups": _param(
            restore_consumer_groups, "Move consumer groups",
            "Move the consumer groups the backup recorded to the translated offsets (groups must have no "
            "active members).", section=SECTION_GROUPS, type=["boolean", "null"]),
        "group_mapping": _param(group_mapping or {}, "Group mapping (source -> target)",
                                'Rename groups on restore: `{"billing": "billing-restored"}`.',
                                section=SECTION_GROUPS, type=["object", "null"]),
        "max_work_units": _param(max_work_units, "Parallel restore tasks (at most)", "Most parallel restore tasks.",
                                 section=SECTION_TUNING, type="integer", exclusiveMinimum=0),
        "commit_interval_seconds": _param(
            commit_interval_seconds, "Commit interval (seconds)",
            "Seconds each restore transaction takes whole segments before it commits (0: a transaction per "
            "segment). Longer is faster for small segments; a killed task redoes at most this much, exactly "
            f"once all the same. 0 to {MAX_COMMIT_INTERVAL_S:g}.",
            section=SECTION_TUNING, type="number", minimum=0, maximum=MAX_COMMIT_INTERVAL_S),
        "require_approval": _param(
            require_approval, "Require approval",
            "Wait for a person to approve the plan (under **Required Actions**) before anything is created or "
            "written. Needs Airflow 3.1 or later; on 3.0 the restore runs without the step.",
            section=SECTION_DANGER, type=["boolean", "null"]),
        **s3_params(**s3_defaults),
    }


def restore_dag(
    dag_id: str = "kafka_restore",
    *,
    dag_kwargs: dict[str, Any] | None = None,
    **param_defaults: Any,
) -> DAG:
    """Build the restore DAG (manual trigger):
    ``plan -> approval -> work_units -> create_topics -> restore (mapped) -> verify -> restore_consumer_groups``.

    ``approval`` (Airflow 3.1+) shows the plan's report and waits for a person; ``require_approval=False``
    (the Param's default) lets automated restores, drills and tests go ahead without asking. On
    Airflow 3.0 there is no approval step. ``param_defaults`` are the Params' defaults (see
    :func:`restore_params`).
    """
    params = restore_params(**param_defaults)
    _validate_defaults(params)
    with DAG(
        dag_id,
        schedule=None,
        params=params,
        render_template_as_native_obj=True,
        catchup=False,
        tags=["kafka", "restore"],
        description="Restore Kafka topics from an S3 backup: plan, approve, restore exactly once, verify.",
        doc_md=RESTORE_DOC_MD,
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
            # Nothing may be written before the approval, so a run that asks for one hands over only the units'
            # digest and the manifests' pin, and work_units writes them after it; without the step the plan
            # writes them and XCom carries their keys (docs/scaling.md).
            approval_follows="{{ params.require_approval }}" if KafkaRestoreApprovalOperator is not None else False,
            **common,
        )
        # After the approval (first, so that a backup changed meanwhile fails the run before any topic is
        # created): the approved units written, or the plan's references passed on.
        units = KafkaRestoreWorkUnitsOperator(
            task_id="work_units", plan=plan.output, topics="{{ params.topics }}",
            topic_mapping="{{ params.topic_mapping }}", incarnations="{{ params.incarnations }}",
            from_timestamp="{{ params.from_timestamp }}", until_timestamp="{{ params.until_timestamp }}",
            offset_bounds="{{ params.offset_bounds }}", **_s3_arguments(),
        )
        # Nothing is created or produced before the approval: the plan only checks, create_topics comes after.
        create = KafkaRestoreCreateTopicsOperator(task_id="create_topics", topics=XComArg(plan, key="create"),
                                                  kafka_conn_id="{{ params.kafka_conn_id }}")
        if KafkaRestoreApprovalOperator is not None:
            plan >> KafkaRestoreApprovalOperator(
                task_id="approval", require_approval="{{ params.require_approval }}",
                dry_run="{{ params.dry_run }}") >> units >> create
        else:
            log.info("%s: Airflow %s has no human-in-the-loop operators (3.1+); the restore runs without an "
                     "approval step.", dag_id, airflow_version())
            units >> create
        # The plan's choice: this run's own restore id, or the unfinished restore it resumes.
        chosen = {"restore_id": "{{ ti.xcom_pull(task_ids='plan', key='restore_id') }}"}
        restore = KafkaRestoreOperator.partial(
            task_id="restore", commit_interval_seconds="{{ params.commit_interval_seconds }}", **chosen, **common,
        ).expand(work_unit=units.output)
        create >> restore
        verify = KafkaRestoreVerifyOperator(task_id="verify", work_units=units.output,
                                            asset_alias=f"kafka-restore:{dag_id}", **chosen, **common)
        groups = KafkaRestoreGroupOffsetsOperator(task_id="restore_consumer_groups",
                                                  groups=XComArg(plan, key="groups"), **chosen, **common)
        restore >> verify >> groups
    return dag


def _allow_empty_defaults_when_scheduled(params: dict[str, Param], dag_id: str) -> None:
    """Let a scheduled DAG parse while its topics or bucket are not configured yet.

    Airflow refuses a scheduled DAG whose Param defaults fail their schema, which would turn
    an unset ``KAFKA_BACKUP_TOPICS`` into an import error for the whole file. The form then
    loses the required mark on these two fields, and each run fails in the plan, naming them.
    """
    relaxed = []
    if not params["topics"].value:
        params["topics"].schema = {k: v for k, v in params["topics"].schema.items() if k != "minItems"}
        relaxed.append("topics")
    if not params["bucket"].value:
        params["bucket"].schema = {**params["bucket"].schema, "type": ["string", "null"]}
        relaxed.append("bucket")
    if relaxed:
        log.warning("%s is scheduled but has no default for %s: its runs fail in the plan until they are set.",
                    dag_id, " and ".join(relaxed))


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
                "prefix", "flush_size", "compression", "compression_level", "segment_checksum", "segment_format",
                "offset_pad_width",
                "isolation_level", "allow_data_loss", "max_work_units", "rotate_interval_ms",
                "rotate_schedule_interval_ms", "timezone")},
        )


def __getattr__(name: str) -> Any:
    """``restore_drill_dag`` lives in :mod:`airflow_kafka_backup.drill_dag` (imported on first use: it imports this)."""
    if name == "restore_drill_dag":
        from airflow_kafka_backup.drill_dag import restore_drill_dag

        return restore_drill_dag
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
