"""Running a drill end to end: plan, restore into scratch topics, compare, check groups, project the RTO,
clean up (also on failure), write the report. The Airflow shell hands in the clients (:class:`DrillClients`).

The restore is the restore engine's own, unchanged: the same planning, the same exactly-once
transactional loop, the same verification against the offset map and the restore manifest, so
the drill proves the path an incident would take. Only the targets (scratch topics), the window
(the last records still in Kafka) and the consumer-group names (``<scratch_prefix><group>``) differ.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from airflow_kafka_backup.engine.drill.cleanup import ScratchResources, clean_leftovers, clean_up, record_pending
from airflow_kafka_backup.engine.drill.compare import (
    ObservedRecord,
    PartitionComparison,
    compare_partition,
    with_source_offsets,
)
from airflow_kafka_backup.engine.drill.groups import GroupCheck, check_group
from airflow_kafka_backup.engine.drill.planning import DrillPlan, DrillSettings, check_scratch_names, plan_drill
from airflow_kafka_backup.engine.drill.reading import first_at_or_after, read_range
from airflow_kafka_backup.engine.drill.report import DrillReport, write_report
from airflow_kafka_backup.engine.drill.rto import backup_totals, project_rto
from airflow_kafka_backup.engine.errors import ConfigurationError
from airflow_kafka_backup.engine.record_size import created_topic_size_config
from airflow_kafka_backup.engine.restore.group_offsets import commit_translations, translate
from airflow_kafka_backup.engine.restore.loop import (
    COMMIT_INTERVAL_S,
    progress_group,
    progress_of,
    restore_partition,
    transactional_id,
)
from airflow_kafka_backup.engine.restore.manifest import load_offset_maps, verify_restore, write_restore_manifest
from airflow_kafka_backup.engine.restore.planning import RestoreSettings, plan_restore
from airflow_kafka_backup.engine.restore.target_topics import (
    broker_topic_defaults,
    create_topics,
    largest_records,
    restore_topic_configs,
)
from airflow_kafka_backup.engine.storage.key_layout import restore_prefix
from airflow_kafka_backup.engine.storage.manifest import load_manifests
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from airflow_kafka_backup.engine.topics.incarnations import summarize
from airflow_kafka_backup.engine.topics.metadata import committed_group_offsets, topic_ids
from airflow_kafka_backup.engine.topics.offsets import snapshot_offsets
from airflow_kafka_backup.engine.topics.selection import TopicSelection

log = logging.getLogger(__name__)
ADMIN_TIMEOUT_S = 30.0
# Scratch topics keep every record while the drill runs, whatever the source's retention says
# (a window of old records would otherwise be deleted by time as soon as it lands).
SCRATCH_TOPIC_CONFIGS = {"retention.ms": "-1", "retention.bytes": "-1"}


@dataclass
class DrillClients:
    """Kafka clients for a drill. The source is where the backed-up topics still live; the target is where the
    scratch topics go (the same cluster, or another)."""

    source_admin: Any
    target_admin: Any
    source_consumer: Callable[[], Any]  # a consumer that never commits, with enable.partition.eof
    target_consumer: Callable[[], Any]  # the same, on the target cluster, read_committed
    new_producer: Callable[[str, int | None], Any]  # (transactional.id, largest record bytes) -> producer
    group_consumer: Callable[[str], Any]  # a consumer of the named group on the target, never subscribed
    transaction_timeout_s: float = 60.0


@dataclass(frozen=True)
class DrillContext:
    drill_id: str  # "<dag id>/<run id>": names the restore folder, progress group and transactional ids
    target_conn_id: str
    source_cluster: str
    target_cluster: str
    versions: dict[str, str]
    isolation_level: str = "read_committed"
    commit_interval_s: float = COMMIT_INTERVAL_S


class DrillFailed(Exception):
    """Internal: a comparison or group check found a difference (already in the report)."""


def prepare(store: S3ObjectStore, prefix: str, settings: DrillSettings, clients: DrillClients, ctx: DrillContext,
            check_manifest: Callable | None = None) -> tuple[DrillPlan, int, int]:
    """Plan the drill and check its scratch names; writes nothing. Returns the plan and the backup's totals."""
    manifests = list(load_manifests(store, prefix))
    available = sorted({r.topic for m in manifests for r in m.ranges})
    topics = TopicSelection.parse(list(settings.topics)).resolve(available)
    if not topics:
        raise ConfigurationError(f"topics {list(settings.topics)} match no topic in the backup under "
                                 f"s3://{store.bucket}/{prefix}; it holds: {', '.join(available) or 'nothing'}.")
    check_scratch_names(settings, topics, available)
    restore_settings = RestoreSettings.create(topics=topics, topic_mapping={t: settings.scratch_topic(t)
                                                                            for t in topics})
    restore_plan = plan_restore(store, prefix, restore_settings, check_manifest=check_manifest)
    live = set(clients.source_admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics)
    ids: dict[str, str | None] = {t: None for t in topics}
    ids.update(topic_ids(clients.source_admin, [t for t in topics if t in live]))
    tps = [(u.source_topic, u.partition) for u in restore_plan.partitions if u.source_topic in live]
    offsets = snapshot_offsets(clients.source_admin, tps, ctx.isolation_level)
    plan = plan_drill(restore_plan, settings, offsets, ids, seed=ctx.drill_id)
    records, stored = backup_totals(incarnations[-1] for incarnations in summarize(manifests).values()
                                    if incarnations)
    return plan, records, stored


def run_drill(store: S3ObjectStore, prefix: str, settings: DrillSettings, clients: DrillClients, ctx: DrillContext,
              check_manifest: Callable | None = None, now: Callable[[], float] = time.time) -> tuple[DrillReport, str]:
    """Run one drill; returns its report (passed or failed) and the report's key. Errors before anything is
    written (bad settings, nothing to drill, a scratch topic that is not the drill's) are raised instead."""
    started = now()
    report = DrillReport(ctx.drill_id, datetime.fromtimestamp(started, UTC).isoformat(),
                         {"bucket": store.bucket, "prefix": prefix}, ctx.source_cluster, ctx.target_cluster,
                         ctx.versions)
    plan, backup_records, backup_bytes = prepare(store, prefix, settings, clients, ctx, check_manifest)
    # Only once the settings and the backup have passed: what a killed drill left behind goes first.
    clean_leftovers(clients.target_admin, store, prefix, ctx.target_conn_id)
    report.plan = plan.to_dict()
    existing = set(clients.target_admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics)
    taken = sorted(set(plan.scratch_topics.values()) & existing)
    if taken:
        raise ConfigurationError(
            f"Scratch topic(s) {', '.join(taken)} already exist on the target and were not made by a drill; "
            "a drill deletes its scratch topics afterwards, so it will not write into one it did not create. "
            "Choose another scratch_prefix, or delete them.")
    groups = {g: settings.scratch_group(g) for g in plan.group_offsets}
    folder = restore_prefix(prefix, ctx.drill_id)
    resources = ScratchResources(ctx.drill_id, ctx.target_conn_id, sorted(plan.partition_counts),
                                 [progress_group(ctx.drill_id), *sorted(groups.values())], folder)
    record_pending(store, prefix, resources)
    try:
        seconds, restored_bytes = _restore(store, prefix, plan, clients, ctx, folder)
        offset_maps = load_offset_maps(store, folder, [(p.unit.target_topic, p.unit.partition)
                                                       for p in plan.partitions])
        comparisons = [_compare(p, plan, clients, offset_maps) for p in plan.partitions]
        report.partitions = [c.to_dict() for c in comparisons]
        checks = _check_groups(plan, groups, clients, offset_maps)
        report.consumer_groups = [c.to_dict() for c in checks]
        restored = sum(c.restored.records for c in comparisons)
        report.rto = project_rto(restored, restored_bytes, seconds, backup_records, backup_bytes).to_dict()
        report.failure = _first_failure(comparisons, checks)
        report.result = "passed" if report.failure is None else "failed"
    except Exception as error:  # noqa: BLE001 - any failure is the drill's verdict; the shell re-raises it
        report.result = "failed"
        report.failure = {"error": f"{type(error).__name__}: {error}"}
        log.exception("The drill failed")
    finally:
        report.cleanup = clean_up(clients.target_admin, store, prefix, resources)
        finished = now()
        report.finished = datetime.fromtimestamp(finished, UTC).isoformat()
        report.duration_seconds = round(finished - started, 3)
    return report, write_report(store, prefix, report)


def _restore(store: S3ObjectStore, prefix: str, plan: DrillPlan, clients: DrillClients, ctx: DrillContext,
             folder: str) -> tuple[float, int]:
    """Create the scratch topics and restore the window with the restore engine; returns (seconds, bytes)."""
    admin = clients.target_admin
    units = [p.unit for p in plan.partitions]
    defaults = broker_topic_defaults(admin)
    sizes = largest_records(units)
    source_of = {scratch: source for source, scratch in plan.scratch_topics.items()}
    configs = {t: created_topic_size_config(sizes.get(t), restore_topic_configs(
        t, plan.topic_configs.get(source_of[t], {}), SCRATCH_TOPIC_CONFIGS, defaults), defaults, {})
        for t in plan.partition_counts}
    create_topics(admin, plan.partition_counts, configs)
    group = clients.group_consumer(progress_group(ctx.drill_id))
    seconds = 0.0
    try:
        for unit in units:
            tx_id = transactional_id(ctx.drill_id, unit.target_topic, unit.partition)

            def new_producer(tx_id: str = tx_id, largest: int | None = unit.largest_record_bytes()):
                return clients.new_producer(tx_id, largest)

            result = restore_partition(new_producer, group, store, folder, unit,
                                       commit_interval_s=ctx.commit_interval_s,
                                       transaction_timeout_s=clients.transaction_timeout_s)
            seconds += result.seconds
            log.info("Drill restore %s[%d] -> %s: %d records in %.2fs", unit.source_topic, unit.partition,
                     unit.target_topic, result.records_restored, result.seconds)
        summaries = verify_restore(store, folder, units, progress_of(group, units))
    finally:
        group.close()
    write_restore_manifest(store, folder, ctx.drill_id, prefix,
                           {"topic_mapping": dict(plan.scratch_topics), "from_timestamp": None,
                            "until_timestamp": None, "drill": True}, summaries)
    return seconds, sum(s.bytes for u in units for s in u.segments)


def _compare(partition, plan: DrillPlan, clients: DrillClients, offset_maps) -> PartitionComparison:
    unit = partition.unit
    compacted = "compact" in plan.topic_configs.get(unit.source_topic, {}).get("cleanup.policy", "")
    source, target = clients.source_consumer(), clients.target_consumer()
    try:
        source_records = (ObservedRecord.from_message(m) for m in
                          read_range(source, unit.source_topic, unit.partition, partition.start, partition.end))
        runs = offset_maps.get((unit.target_topic, unit.partition))
        restored = with_source_offsets(read_range(target, unit.target_topic, unit.partition, 0),
                                       runs.runs if runs else ())
        result = compare_partition(unit.source_topic, unit.target_topic, unit.partition,
                                   (partition.start, partition.end), source_records, restored, compacted=compacted)
    finally:
        source.close()
        target.close()
    log.info("%s: %d source / %d restored records, digests %s / %s%s", result.name, result.source.records,
             result.restored.records, result.source.sha256[:16], result.restored.sha256[:16],
             "" if result.ok else f", FIRST DIFFERENCE at source offset {result.first_difference['source_offset']}: "
                                  f"{result.first_difference['reason']}")
    return result


def _check_groups(plan: DrillPlan, groups: dict[str, str], clients: DrillClients, offset_maps) -> list[GroupCheck]:
    """Move the recorded groups to the scratch topics with the restore's translation; check where they landed."""
    if not groups:
        return []
    admin = clients.target_admin
    scratch_tps = sorted({(p.unit.target_topic, p.unit.partition) for p in plan.partitions})
    ends = {tp: b.end for tp, b in snapshot_offsets(admin, scratch_tps, "read_committed").items()}
    rows = translate(plan.group_offsets, groups, plan.scratch_topics, offset_maps, ends)
    commit_translations(admin, rows)
    committed = committed_group_offsets(admin, sorted(groups.values()), sorted(plan.partition_counts))
    windows = {(p.unit.source_topic, p.unit.partition): (p.start, p.end) for p in plan.partitions}
    source, target = clients.source_consumer(), clients.target_consumer()
    checks = []
    try:
        for row in rows:
            runs = offset_maps.get((row.target_topic, row.partition))

            def source_record_at(offset: int, end: int, row=row) -> ObservedRecord | None:
                message = first_at_or_after(source, row.source_topic, row.partition, offset, end)
                return None if message is None else ObservedRecord.from_message(message)

            def scratch_record_at(offset: int, row=row, runs=runs) -> ObservedRecord | None:
                message = first_at_or_after(target, row.target_topic, row.partition, offset, offset + 1)
                if message is None:
                    return None
                return next(with_source_offsets([message], runs.runs if runs else ()))

            got = committed.get(row.target_group, {}).get(row.target_topic, {}).get(str(row.partition))
            check = check_group(row, windows[(row.source_topic, row.partition)], got,
                                ends[(row.target_topic, row.partition)], source_record_at, scratch_record_at)
            log.info("Group %s -> %s %s[%d]: source offset %d, committed %s: %s%s", row.source_group,
                     row.target_group, row.target_topic, row.partition, row.source_offset, got,
                     "ok" if check.ok else "WRONG", "" if check.ok else f" ({check.problem})")
            checks.append(check)
    finally:
        source.close()
        target.close()
    return checks


def _first_failure(comparisons: list[PartitionComparison], checks: list[GroupCheck]) -> dict | None:
    for c in comparisons:
        if not c.ok:
            return {"partition": c.name, **c.first_difference}
    for g in checks:
        if not g.ok:
            return {"partition": f"{g.source_topic}[{g.partition}]", "consumer_group": g.source_group,
                    "source_offset": g.source_offset, "reason": f"consumer group translation: {g.problem}"}
    return None
