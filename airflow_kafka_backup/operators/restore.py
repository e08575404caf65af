"""Restore operators: plan -> restore (mapped over work units) -> verify.

The restore id is the DAG id and the run id (see :func:`restore_id_of`): clearing and
re-running a restore run resumes it (exactly once), while a new run is a new restore.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from airflow.providers.apache.kafka.hooks.client import KafkaAdminClientHook
from airflow.sdk import Asset, AssetAlias, BaseOperator, Context

from airflow_kafka_backup.compat import TriggerRule
from airflow_kafka_backup.engine.backup.planning import balance
from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.record_size import created_topic_size_config
from airflow_kafka_backup.engine.restore.attempts import restores_into
from airflow_kafka_backup.engine.restore.group_offsets import (
    check_groups_inactive,
    commit_translations,
    target_groups,
    translate,
    validate_group_mapping,
)
from airflow_kafka_backup.engine.restore.loop import (
    COMMIT_INTERVAL_S,
    progress_group,
    progress_of,
    restore_partition,
    transactional_id,
    validate_commit_interval,
)
from airflow_kafka_backup.engine.restore.manifest import load_offset_maps, verify_restore, write_restore_manifest
from airflow_kafka_backup.engine.restore.non_empty_targets import TargetDecision, check_policy, decide
from airflow_kafka_backup.engine.restore.planning import PartitionRestore, RestorePlan, RestoreSettings, plan_restore
from airflow_kafka_backup.engine.restore.report import ReportFacts, restore_report
from airflow_kafka_backup.engine.restore.target_topics import (
    broker_topic_defaults,
    check_targets_keep_records,
    check_targets_take_records,
    create_topics,
    largest_records,
    missing_target_topics,
    restore_topic_configs,
    target_record_counts,
    timestamp_spans,
)
from airflow_kafka_backup.engine.restore.work_units import (
    PendingWorkUnits,
    is_pending,
    read_work_unit,
    write_approved_work_units,
    write_work_units,
)
from airflow_kafka_backup.engine.settings import as_bool, positive_int
from airflow_kafka_backup.engine.storage.key_layout import restore_prefix
from airflow_kafka_backup.engine.topics.offsets import snapshot_offsets
from airflow_kafka_backup.hooks.kafka import (
    KafkaGroupConsumerHook,
    KafkaTransactionalProducerHook,
    first_bootstrap_server,
)
from airflow_kafka_backup.operators.backup import _max_map_length
from airflow_kafka_backup.operators.s3 import S3BackupBaseOperator, fail_fast_on_user_errors

log = logging.getLogger(__name__)

# Up to this many partitions the plan logs a line for each; beyond, a line per topic (10,000 log lines cost
# seconds in the task and make its log unreadable).
PARTITIONS_LOGGED = 100
# What a restore task returns, summed over its partitions (see PartitionRestoreResult).
RESULT_TOTALS = ("records_restored", "records_filtered", "segments_restored", "segments_skipped_as_done",
                 "transactions_committed")


def restore_id_of(context: Context) -> str:
    """``<dag id>/<run id>``: what names a restore's progress group, transactional ids and S3 folder.

    The run id alone is unique only within its DAG: two restore DAGs over one backup (one per
    target cluster, say) given the same hand-written run id would otherwise share progress,
    fence each other's producers and write one restore manifest.
    """
    return f"{context['dag'].dag_id}/{context['run_id']}"


def resolved_restore_id(given: str | None, context: Context) -> str:
    """The restore id the plan chose (its own, or the unfinished restore it resumes), else this run's own."""
    return given if given and given != "None" else restore_id_of(context)


class KafkaRestorePlanOperator(S3BackupBaseOperator):
    """Plan a restore from committed manifests and check the target topics; returns work units.

    It creates nothing: the broker is asked (validate-only) whether it accepts the new topics,
    which :class:`KafkaRestoreCreateTopicsOperator` creates after the approval step. The plan's
    Markdown report (XCom key ``report``, see :mod:`~airflow_kafka_backup.engine.restore.report`)
    is what the approval step shows. With ``dry_run`` it logs that report and returns no work units.
    ``commit_interval_seconds`` is the restore tasks' setting, checked here too so that a bad
    value fails before any topic is created.

    Each work unit is written to S3 and XCom carries its key and digest, so XCom stays small at
    thousands of partitions. With ``approval_follows`` (the restore DAG sets it when its approval step
    will ask) nothing is written, since a run must write nothing before it is approved (a rejected run
    leaves nothing behind): it returns :class:`~airflow_kafka_backup.engine.restore.work_units.PendingWorkUnits`
    (the units' digest and a pin of the manifests read, a few hundred bytes), and
    :class:`KafkaRestoreWorkUnitsOperator` writes the units after the approval. With
    ``work_units_inline`` the units themselves are returned instead (nothing written either, but about
    480 bytes a segment of XCom).
    """

    template_fields: Sequence[str] = (
        *S3BackupBaseOperator.s3_template_fields, "topics", "topic_mapping", "incarnations", "kafka_conn_id",
        "from_timestamp",
        "until_timestamp", "offset_bounds", "create_topics", "topic_configs", "dry_run", "max_work_units",
        "restore_consumer_groups", "group_mapping", "commit_interval_seconds", "if_target_not_empty",
        "work_units_inline", "approval_follows",
    )

    def __init__(
        self,
        *,
        topics: Sequence[str] | str,
        topic_mapping: dict[str, str] | str | None = None,
        incarnations: dict[str, str] | str | None = None,
        kafka_conn_id: str = "kafka_default",
        from_timestamp: str | int | None = None,
        until_timestamp: str | int | None = None,
        offset_bounds: dict | str | None = None,
        create_topics: bool | str = True,
        topic_configs: dict[str, str] | str | None = None,
        dry_run: bool | str = False,
        max_work_units: int | str = 16,
        restore_consumer_groups: bool | str = False,
        group_mapping: dict[str, str] | str | None = None,
        commit_interval_seconds: float | str = COMMIT_INTERVAL_S,
        if_target_not_empty: str = "fail",
        work_units_inline: bool | str = False,
        approval_follows: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.if_target_not_empty = if_target_not_empty
        self.work_units_inline = work_units_inline
        self.approval_follows = approval_follows
        self.restore_consumer_groups = restore_consumer_groups
        self.commit_interval_seconds = commit_interval_seconds
        self.group_mapping = group_mapping
        self.topics = topics
        self.topic_mapping = topic_mapping
        self.incarnations = incarnations
        self.kafka_conn_id = kafka_conn_id
        self.from_timestamp = from_timestamp
        self.until_timestamp = until_timestamp
        self.offset_bounds = offset_bounds
        self.create_topics = create_topics
        self.topic_configs = topic_configs
        self.dry_run = dry_run
        self.max_work_units = max_work_units

    @fail_fast_on_user_errors
    def execute(self, context: Context) -> list[dict]:
        settings = RestoreSettings.create(
            topics=self.topics, topic_mapping=self.topic_mapping, from_timestamp=self.from_timestamp,
            until_timestamp=self.until_timestamp, offset_bounds=self.offset_bounds, incarnations=self.incarnations,
        )
        validate_commit_interval(self.commit_interval_seconds)
        policy = check_policy(self.if_target_not_empty)
        dry_run = as_bool("dry_run", self.dry_run)
        create = as_bool("create_topics", self.create_topics)
        configs = self.topic_configs or {}
        if not isinstance(configs, dict) or not all(isinstance(v, str | int) for v in configs.values()):
            raise ConfigurationError(f"topic_configs must map Kafka topic config names to values, got {configs!r}.")
        max_units = min(positive_int("max_work_units", self.max_work_units), _max_map_length())
        inline = as_bool("work_units_inline", self.work_units_inline)
        approval_follows = as_bool("approval_follows", self.approval_follows)
        if inline and approval_follows:
            raise ConfigurationError(
                "work_units_inline and approval_follows are both on: with an approval to follow the plan hands "
                "over only the units' digest (KafkaRestoreWorkUnitsOperator writes them after the approval); "
                "work_units_inline hands over the units themselves. Choose one.")
        group_mapping = validate_group_mapping(self.group_mapping)
        if not self.bucket:
            raise ConfigurationError("bucket is required: the S3 bucket holding the backup.")
        self.check_bucket()
        prefix = self.key_prefix
        plan = plan_restore(self.store, prefix, settings, check_manifest=lambda m: self.s3_settings.check_can_read(
            m.encryption, f"backup run {m.run_id}"))

        admin = KafkaAdminClientHook(kafka_config_id=self.kafka_conn_id).get_conn
        needed = {plan.topic_mapping[t]: n for t, n in plan.partition_counts.items()}
        missing = missing_target_topics(admin, needed, create)
        existing = {t: n for t, n in needed.items() if t not in missing}
        counts = target_record_counts(admin, existing) if existing else {}
        decision = self._decide_on_non_empty_targets(prefix, policy, counts, context)
        log.info("%s%s", "DRY RUN: " if dry_run else "", decision.summary)
        groups = self._groups_to_restore(admin, plan, group_mapping)
        context["ti"].xcom_push(key="restore_id", value=decision.restore_id)
        self._log_plan(plan, missing, dry_run)
        context["ti"].xcom_push(key="groups", value={  # for restore_consumer_groups; nothing in a dry run
            "groups": {} if dry_run else groups, "offsets": {g: plan.group_offsets[g] for g in groups},
            "topic_mapping": plan.topic_mapping})
        if groups:
            rows = translate(plan.group_offsets, groups, plan.topic_mapping, None)
            log.info("Consumer groups to move%s: %d partition offsets%s", " (dry run)" if dry_run else "", len(rows),
                     "" if len(rows) <= PARTITIONS_LOGGED else f" (the first {PARTITIONS_LOGGED}; the report has all)")
            for r in rows[:PARTITIONS_LOGGED]:
                log.info("  %s -> %s  %s[%d] source offset %d -> the first restored record at or after it",
                         r.source_group, r.target_group, r.target_topic, r.partition, r.source_offset)
        source_of = {target: source for source, target in plan.topic_mapping.items()}
        metadata = {t: plan.topic_metadata.get(source_of[t], {}) for t in missing}
        sizes = largest_records(plan.partitions)
        defaults = broker_topic_defaults(admin) if missing or any(sizes.values()) else {}
        new_configs = {t: created_topic_size_config(
            sizes.get(t), restore_topic_configs(t, metadata[t].get("configs", {}), configs, defaults), defaults,
            configs) for t in missing}
        check_targets_keep_records(admin, timestamp_spans(plan.partitions), new_configs,
                                   now_ms=int(time.time() * 1000), broker_defaults=defaults)
        producer = KafkaTransactionalProducerHook(self.kafka_conn_id, transactional_id="-")
        check_targets_take_records(admin, sizes, new_configs, broker_defaults=defaults,
                                   compressed=producer.compresses)
        to_create = {t: {"partitions": needed[t], "configs": dict(new_configs[t]),
                         "replication_factor": metadata[t].get("replication_factor")} for t in missing}
        # Nothing is created here: the broker is only asked whether it would accept the new topics. The
        # create_topics task creates them after the approval (see KafkaRestoreCreateTopicsOperator).
        create_topics(admin, {t: spec["partitions"] for t, spec in to_create.items()}, new_configs,
                      {t: spec["replication_factor"] for t, spec in to_create.items() if spec["replication_factor"]},
                      validate_only=True)
        context["ti"].xcom_push(key="create", value={} if dry_run else to_create)
        units = split_work_units(plan.partitions, max_units)
        report = restore_report(plan, ReportFacts(
            bucket=self.bucket, prefix=prefix, new_topics=missing, target_records=counts,
            if_target_not_empty=policy, decision=decision.summary, groups=groups,
            restore_consumer_groups=as_bool("restore_consumer_groups", self.restore_consumer_groups),
            work_units=len(units), dry_run=dry_run))
        log.info("Restore report (what the approval step shows):\n%s", report)
        context["ti"].xcom_push(key="report", value=report)
        if dry_run:
            return []
        if approval_follows:
            # Nothing may be written before the approval: XCom carries how to know the units, the work_units
            # task plans them again from the same manifests after the approval and writes them.
            pending = PendingWorkUnits.of(decision.restore_id, units, max_units, plan.manifests)
            log.info("%d work unit(s) (sha256 %s), planned from %s: written after the approval, nothing before.",
                     pending.units, pending.units_sha256, pending.manifests.describe())
            return pending.to_dict()
        if inline:
            log.info("%d work unit(s) in XCom: nothing is written.", len(units))
            return [[p.to_dict() for p in unit] for unit in units]
        # XCom carries each unit's key and digest; the unit (its segment list) is an object in the restore's folder.
        refs = write_work_units(self.store, restore_prefix(prefix, decision.restore_id), units)
        log.info("Wrote %d work unit(s) under s3://%s/%s/", len(refs), self.bucket,
                 restore_prefix(prefix, decision.restore_id))
        return refs

    def _decide_on_non_empty_targets(self, prefix: str, policy: str, counts: dict[str, int],
                                     context: Context) -> TargetDecision:
        """Refuse, append to or resume into targets that already hold records (see :mod:`non_empty_targets`)."""
        full = [t for t, n in counts.items() if n > 0]
        earlier = restores_into(self.store, prefix, full) if full else []
        return decide(policy, restore_id_of(context), counts, earlier)

    def _groups_to_restore(self, admin, plan, group_mapping: dict[str, str]) -> dict[str, str]:
        """Source group -> target group, when asked; refuses groups with active members, and two groups
        mapped to one, up front (before any topic is created)."""
        if not as_bool("restore_consumer_groups", self.restore_consumer_groups):
            if group_mapping:
                log.warning("group_mapping is given but restore_consumer_groups is off: no consumer group is moved.")
            return {}
        groups = target_groups(plan.group_offsets, group_mapping)
        check_groups_inactive(admin, sorted(set(groups.values())))
        return groups

    def _log_plan(self, plan: RestorePlan, missing: list[str], dry_run: bool) -> None:
        log.info("%sRestore plan (%d partitions):", "DRY RUN - nothing will be written. " if dry_run else "",
                 len(plan.partitions))
        for topic, incarnation in sorted(plan.incarnations.items()):
            times = (f"record times {incarnation['min_timestamp']}..{incarnation['max_timestamp']}"
                     if incarnation["min_timestamp"] is not None else "no records")
            log.info("  %s: incarnation %s (%d of %d in the backup), %s", topic,
                     incarnation["topic_id"] or "recorded before topic IDs", incarnation["number"],
                     incarnation["of"], times)
        for source, line in _partition_summaries(plan.partitions).items():
            log.info("  %s -> %s", source, line)
        if len(plan.partitions) <= PARTITIONS_LOGGED:
            for p in plan.partitions:
                first = p.segments[0].first_offset if p.segments else "-"
                last = p.segments[-1].last_offset if p.segments else "-"
                log.info("  %s[%d] -> %s[%d]: %d segments, source offsets %s..%s, at most %d records",
                         p.source_topic, p.partition, p.target_topic, p.partition, len(p.segments), first, last,
                         p.upper_bound_records)
        else:
            log.info("  (%d partitions: one line per topic; the work units name every partition and segment)",
                     len(plan.partitions))
        if missing:
            log.info("Target topics to create: %s", ", ".join(missing))


def _partition_summaries(partitions: Sequence[PartitionRestore]) -> dict[str, str]:
    """Per source topic, one line: its target, partitions, segments, source offsets and records."""
    totals: dict[str, dict[str, Any]] = {}
    for p in partitions:
        row = totals.setdefault(p.source_topic, {"target": p.target_topic, "partitions": 0, "segments": 0,
                                                 "records": 0, "first": None, "last": None})
        row["partitions"] += 1
        row["segments"] += len(p.segments)
        row["records"] += p.upper_bound_records
        if p.segments:
            first, last = p.segments[0].first_offset, p.segments[-1].last_offset
            row["first"] = first if row["first"] is None else min(row["first"], first)
            row["last"] = last if row["last"] is None else max(row["last"], last)
    return {source: (f"{row['target']}: {row['partitions']} partitions, {row['segments']} segments, source offsets "
                     f"{'-' if row['first'] is None else row['first']}..{'-' if row['last'] is None else row['last']}"
                     f" (over all partitions), at most {row['records']} records")
            for source, row in sorted(totals.items())}


def split_work_units(partitions: Sequence[PartitionRestore], max_units: int) -> list[list[PartitionRestore]]:
    """The partitions spread over at most ``max_units`` units by their records (deterministic: the same plan,
    the same units)."""
    return balance(partitions, lambda p: p.upper_bound_records, lambda p: (p.source_topic, p.partition), max_units)


class KafkaRestoreWorkUnitsOperator(S3BackupBaseOperator):
    """Hand the restore tasks their work units; after an approval, write them first, exactly as approved.

    ``plan``: the plan task's return value. Work unit references (the plan wrote the units: no
    approval step) or inline units are passed on as they are. :class:`PendingWorkUnits` (an approval
    step followed the plan, and nothing was written before it) are planned again here, with the
    plan's own settings (``topics`` ... ``offset_bounds``, the same templates) and from exactly the
    manifests the plan read (those committed since, by the backups that went on during the
    approval, are left out). The LIST proving each segment exists is skipped: the plan proved it and
    each restore task checks every segment's checksum. If the units come out as approved they are
    written and their references returned; otherwise the task fails naming what changed, having
    written nothing. A retry writes the same keys with the same bytes.
    """

    template_fields: Sequence[str] = (
        *S3BackupBaseOperator.s3_template_fields, "plan", "topics", "topic_mapping", "incarnations",
        "from_timestamp", "until_timestamp", "offset_bounds",
    )

    def __init__(
        self,
        *,
        plan: Any,
        topics: Sequence[str] | str | None = None,
        topic_mapping: dict[str, str] | str | None = None,
        incarnations: dict[str, str] | str | None = None,
        from_timestamp: str | int | None = None,
        until_timestamp: str | int | None = None,
        offset_bounds: dict | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.plan = plan
        self.topics = topics
        self.topic_mapping = topic_mapping
        self.incarnations = incarnations
        self.from_timestamp = from_timestamp
        self.until_timestamp = until_timestamp
        self.offset_bounds = offset_bounds

    @fail_fast_on_user_errors
    def execute(self, context: Context) -> list:
        if not is_pending(self.plan):
            units = list(self.plan or [])
            log.info("The plan handed over %d work unit(s)%s: passed on as they are.", len(units),
                     "" if not units else " (written by the plan)" if isinstance(units[0], dict) else " inline")
            return units
        approved = PendingWorkUnits.from_dict(self.plan)
        settings = RestoreSettings.create(
            topics=self.topics, topic_mapping=self.topic_mapping, from_timestamp=self.from_timestamp,
            until_timestamp=self.until_timestamp, offset_bounds=self.offset_bounds, incarnations=self.incarnations,
        )
        if not self.bucket:
            raise ConfigurationError("bucket is required: the S3 bucket holding the backup.")
        prefix = self.key_prefix
        plan = plan_restore(self.store, prefix, settings, check_manifest=lambda m: self.s3_settings.check_can_read(
            m.encryption, f"backup run {m.run_id}"), pinned=approved.manifests, check_segments_exist=False)
        folder = restore_prefix(prefix, approved.restore_id)
        refs = write_approved_work_units(self.store, folder, split_work_units(plan.partitions, approved.max_units),
                                         approved)
        log.info("Planned again from the approved %s: the same %d work unit(s) (sha256 %s); wrote them under "
                 "s3://%s/%s/", approved.manifests.describe(), len(refs), approved.units_sha256, self.bucket, folder)
        return refs


class KafkaRestoreCreateTopicsOperator(BaseOperator):
    """Create the target topics the plan found missing, after the approval: nothing exists before it.

    ``topics``: the plan's XCom ``create`` (target -> partitions, configs, replication factor).
    A topic that exists by now is accepted only when it is empty and large enough (this task's own
    earlier try created it); one that took records since the plan fails the run, naming it, since the
    approved report said it was new.
    """

    template_fields: Sequence[str] = ("topics", "kafka_conn_id")

    def __init__(self, *, topics: Any, kafka_conn_id: str = "kafka_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.topics = topics
        self.kafka_conn_id = kafka_conn_id

    @fail_fast_on_user_errors
    def execute(self, context: Context) -> list[str]:
        wanted: dict[str, dict] = self.topics or {}
        if not wanted:
            log.info("No target topic to create: every target exists.")
            return []
        admin = KafkaAdminClientHook(kafka_config_id=self.kafka_conn_id).get_conn
        partitions = {t: int(spec["partitions"]) for t, spec in wanted.items()}
        missing = missing_target_topics(admin, partitions, True)
        appeared = {t: n for t, n in partitions.items() if t not in missing}
        written = {t: n for t, n in target_record_counts(admin, appeared).items() if n > 0} if appeared else {}
        if written:
            raise ConfigurationError(
                "Target topic(s) the approved plan would create hold records now: "
                + ", ".join(f"{t} ({n:,} records)" for t, n in sorted(written.items()))
                + ". Something else created and wrote them after the plan; trigger the restore again to plan anew.")
        create_topics(admin, {t: partitions[t] for t in missing}, {t: wanted[t]["configs"] for t in missing},
                      {t: wanted[t]["replication_factor"] for t in missing if wanted[t].get("replication_factor")})
        log.info("Created target topic(s): %s", ", ".join(missing) or "none (they exist, empty)")
        return missing


class KafkaRestoreOperator(S3BackupBaseOperator):
    """Restore one work unit (a few partitions), exactly once; returns the unit's totals.

    ``work_unit``: the plan's reference to the unit's object in S3 (see
    :mod:`~airflow_kafka_backup.engine.restore.work_units`), or the list of partitions a plan of an
    earlier version handed over in XCom.

    ``commit_interval_seconds``: how long each Kafka transaction takes whole segments before it
    commits (0: one segment per transaction); see
    :func:`~airflow_kafka_backup.engine.restore.loop.validate_commit_interval`.
    """

    template_fields: Sequence[str] = (
        *S3BackupBaseOperator.s3_template_fields, "work_unit", "kafka_conn_id", "commit_interval_seconds",
        "restore_id",
    )

    def __init__(self, *, work_unit: list[dict], kafka_conn_id: str = "kafka_default",
                 commit_interval_seconds: float | str = COMMIT_INTERVAL_S, restore_id: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.restore_id = restore_id  # the plan's choice (see resolved_restore_id)
        self.work_unit = work_unit
        self.kafka_conn_id = kafka_conn_id
        self.commit_interval_seconds = commit_interval_seconds

    def execute(self, context: Context) -> dict:
        commit_interval_s = validate_commit_interval(self.commit_interval_seconds)
        partitions = read_work_unit(self.store, self.work_unit)  # before any client: a bad unit fails first
        restore_id = resolved_restore_id(self.restore_id, context)
        target_prefix = restore_prefix(self.key_prefix, restore_id)
        group = KafkaGroupConsumerHook(self.kafka_conn_id, group_id=progress_group(restore_id)).get_conn
        transaction_timeout_s = KafkaTransactionalProducerHook(self.kafka_conn_id,
                                                               transactional_id="-").transaction_timeout_s()
        totals = dict.fromkeys(RESULT_TOTALS, 0)
        try:
            for unit in partitions:
                tx_id = transactional_id(restore_id, unit.target_topic, unit.partition)

                def new_producer(tx_id: str = tx_id, largest: int | None = unit.largest_record_bytes()):
                    # A new hook, so a new client: the engine asks again only when one got stuck.
                    return KafkaTransactionalProducerHook(self.kafka_conn_id, transactional_id=tx_id,
                                                          largest_record_bytes=largest).get_conn

                result = restore_partition(new_producer, group, self.store, target_prefix, unit,
                                           commit_interval_s=commit_interval_s,
                                           transaction_timeout_s=transaction_timeout_s)
                log.info("%s[%d] -> %s[%d]: %d records restored, %d filtered out, in %.1fs",
                         unit.source_topic, unit.partition, unit.target_topic, unit.partition,
                         result.records_restored, result.records_filtered, result.seconds)
                for name in RESULT_TOTALS:
                    totals[name] += getattr(result, name)
        finally:
            group.close()
        # A summary, not a row per partition: the log above and the restore manifest have those.
        return {"partitions": len(partitions), **totals}


class KafkaRestoreVerifyOperator(S3BackupBaseOperator):
    """Check every planned segment was restored with its checksum and record count; write the restore manifest."""

    template_fields: Sequence[str] = (*S3BackupBaseOperator.s3_template_fields, "work_units", "kafka_conn_id",
                                      "restore_id")

    def __init__(self, *, work_units: Any, kafka_conn_id: str = "kafka_default", asset_alias: str | None = None,
                 restore_id: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", TriggerRule.NONE_FAILED)
        if asset_alias:
            kwargs["outlets"] = [*kwargs.get("outlets", ()), AssetAlias(asset_alias)]
        super().__init__(**kwargs)
        self.restore_id = restore_id
        self.work_units = work_units
        self.kafka_conn_id = kafka_conn_id
        self.asset_alias = asset_alias

    def execute(self, context: Context) -> dict:
        units = [p for unit in (self.work_units or []) for p in read_work_unit(self.store, unit)]
        if not units:
            log.info("Nothing was restored (dry run, or nothing matched).")
            return {"restored": 0, "partitions": 0}
        restore_id = resolved_restore_id(self.restore_id, context)
        prefix = self.key_prefix
        target_prefix = restore_prefix(prefix, restore_id)
        group = KafkaGroupConsumerHook(self.kafka_conn_id, group_id=progress_group(restore_id)).get_conn
        try:
            progress = progress_of(group, units)
        finally:
            group.close()
        summaries = verify_restore(self.store, target_prefix, units, progress)
        settings = {
            "topic_mapping": {u.source_topic: u.target_topic for u in units},
            "from_timestamp": units[0].from_timestamp,
            "until_timestamp": units[0].until_timestamp,
        }
        key = write_restore_manifest(self.store, target_prefix, restore_id, prefix, settings, summaries)
        by_topic: dict[str, int] = {}
        for s in summaries:
            by_topic[s.target_topic] = by_topic.get(s.target_topic, 0) + s.records_restored
        for topic, count in sorted(by_topic.items()):
            log.info("Restored %d records into %s", count, topic)
        log.info("Restore verified; manifest s3://%s/%s", self.bucket, key)
        if self.asset_alias:
            server = first_bootstrap_server(self.kafka_conn_id)
            events = context["outlet_events"][AssetAlias(self.asset_alias)]
            for topic, count in sorted(by_topic.items()):
                # The Kafka provider's asset URI scheme: kafka://<bootstrap server>/<topic>.
                events.add(Asset(f"kafka://{server}/{topic}"), extra={"restore_id": restore_id, "records": count})
        return {"restored": sum(by_topic.values()), "partitions": len(summaries), "by_topic": by_topic,
                "manifest": key}


class KafkaRestoreGroupOffsetsOperator(S3BackupBaseOperator):
    """After a verified restore: move the chosen consumer groups to the translated offsets.

    A group that had consumed up to source offset X resumes at the first restored record
    whose source offset is >= X (see :mod:`airflow_kafka_backup.engine.restore.group_offsets`).
    """

    template_fields: Sequence[str] = (*S3BackupBaseOperator.s3_template_fields, "groups", "kafka_conn_id",
                                      "restore_id")

    def __init__(self, *, groups: Any, kafka_conn_id: str = "kafka_default", restore_id: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.restore_id = restore_id
        self.groups = groups
        self.kafka_conn_id = kafka_conn_id

    def execute(self, context: Context) -> list[dict]:
        selection = self.groups or {}
        if not selection.get("groups"):
            log.info("No consumer groups to restore (restore_consumer_groups is off, or none were recorded).")
            return []
        admin = KafkaAdminClientHook(kafka_config_id=self.kafka_conn_id).get_conn
        check_groups_inactive(admin, sorted(set(selection["groups"].values())))
        target_prefix = restore_prefix(self.key_prefix, resolved_restore_id(self.restore_id, context))
        involved = sorted({(selection["topic_mapping"][topic], int(p))
                           for by_topic in selection["offsets"].values() for topic, offsets in by_topic.items()
                           if topic in selection["topic_mapping"] for p in offsets})
        offset_maps = load_offset_maps(self.store, target_prefix, involved)
        ends = {tp: b.end for tp, b in snapshot_offsets(admin, involved, "read_uncommitted").items()}
        rows = translate(selection["offsets"], selection["groups"], selection["topic_mapping"], offset_maps, ends)
        commit_translations(admin, rows)
        for r in rows:
            log.info("%s -> %s  %s[%d]: source offset %d -> target offset %d", r.source_group, r.target_group,
                     r.target_topic, r.partition, r.source_offset, r.target_offset)
        return [r.to_dict() for r in rows]
