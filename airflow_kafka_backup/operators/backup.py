"""Backup operators: plan -> back up (mapped over work units) -> commit.

Thin Airflow layers over the engine. Hooks are created in ``execute`` (never at DAG
parse time), every user-facing argument is a template field, and all validation
happens in the plan task, before anything is written.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import Any

from airflow.providers.apache.kafka.hooks.client import KafkaAdminClientHook
from airflow.sdk import Asset, AssetAlias, BaseOperator, Context, Variable
from confluent_kafka import TopicPartition

from airflow_kafka_backup import metrics
from airflow_kafka_backup.compat import (
    AirflowFailException,
    TriggerRule,
    airflow_version,
    conf,
    variable_keys_may_contain_slash,
)
from airflow_kafka_backup.engine.backup.backlog import TopicLag, measure_backlog, rpo_breaches
from airflow_kafka_backup.engine.backup.checkpoint import ResolvedState, resolve_state
from airflow_kafka_backup.engine.backup.loop import back_up_ranges
from airflow_kafka_backup.engine.backup.manual_ranges import (
    offsets_for_times,
    parse_manual_ranges,
    resolve_manual_ranges,
)
from airflow_kafka_backup.engine.backup.planning import group_work_units, plan_ranges, resolve_topics
from airflow_kafka_backup.engine.backup.settings import BackupSettings
from airflow_kafka_backup.engine.errors import ConfigurationError, IntegrityError, KafkaBackupError
from airflow_kafka_backup.engine.settings import as_bool
from airflow_kafka_backup.engine.storage.commit_log import Commit, record_commit
from airflow_kafka_backup.engine.storage.key_layout import (
    manifest_key,
    run_objects_prefix,
    run_plan_key,
    unit_segments_key,
    work_unit_key,
)
from airflow_kafka_backup.engine.storage.manifest import (
    PartitionRange,
    RunManifest,
    SegmentInfo,
    SegmentSettings,
    list_manifest_keys,
    load_manifests,
    read_manifest,
    write_manifest,
)
from airflow_kafka_backup.engine.storage.object_store import S3ObjectStore
from airflow_kafka_backup.engine.storage.retention import check_retention_prefix, ensure_retention_rule
from airflow_kafka_backup.engine.storage.run_objects import (
    ObjectRef,
    RunObjectMissingError,
    get_json,
    put_json,
    remove_run_objects,
)
from airflow_kafka_backup.engine.storage.s3_settings import (
    check_retention_covers_object_lock,
    validate_object_lock,
    validate_retention_days,
)
from airflow_kafka_backup.engine.storage.writer_lock import (
    DEFAULT_LEASE_S,
    ConcurrentRunError,
    LockHolder,
    acquire,
    generation,
)
from airflow_kafka_backup.engine.time_window import parse_time_window
from airflow_kafka_backup.engine.topics.incarnations import BackupState, identify
from airflow_kafka_backup.engine.topics.metadata import (
    committed_group_offsets,
    describe_topics,
    select_groups,
    topic_ids,
)
from airflow_kafka_backup.engine.topics.offsets import isolation_level, snapshot_offsets
from airflow_kafka_backup.engine.topics.selection import TopicSelection
from airflow_kafka_backup.engine.verify import require_ok, verify_backup
from airflow_kafka_backup.hooks.kafka import KafkaRangeConsumerHook
from airflow_kafka_backup.operators.s3 import S3BackupBaseOperator, fail_fast_on_user_errors, is_template

log = logging.getLogger(__name__)

DEFAULT_MAX_MAP_LENGTH = 1024


def checkpoint_variable_key(bucket: str, prefix: str) -> str:
    """One Variable per backup location: ``kafka_backup_checkpoint:<bucket>/<prefix>``."""
    return f"kafka_backup_checkpoint:{bucket}/{prefix.strip('/')}"


def get_checkpoint_variable(bucket: str, prefix: str) -> dict[str, Any] | None:
    """The checkpoints cached in the Variable, or ``None`` (missing, or an Airflow that cannot keep it).

    The Variable is only a cache: the S3 manifests are the truth, and ``resolve_checkpoints`` reads
    them whenever the cache is missing or behind.
    """
    if not variable_keys_may_contain_slash():
        return None
    return Variable.get(checkpoint_variable_key(bucket, prefix), default=None, deserialize_json=True)


def set_checkpoint_variable(bucket: str, prefix: str, value: dict[str, Any]) -> None:
    """Advance the checkpoint Variable; on Airflow 3.0 say once per commit why there is none.

    Airflow 3.0's Execution API routes ``/variables/{key}`` without ``:path``, so a key with ``/``
    (every checkpoint key has one) answers 404 and the task would fail after its manifest committed.
    Leaving the cache out costs a plan that lists and reads the manifests; it loses nothing.
    """
    key = checkpoint_variable_key(bucket, prefix)
    if not variable_keys_may_contain_slash():
        log.warning("Airflow %s cannot store the checkpoint Variable %s ('/' in Variable keys needs Airflow 3.1): "
                    "each plan recovers the checkpoints from the S3 manifests instead.", airflow_version(), key)
        return
    Variable.set(key, value, serialize_json=True)


AIRFLOW_ID_VARIABLE = "kafka_backup_airflow_id"
FINISHED_RUN_STATES = ("success", "failed")


def airflow_instance_id() -> str:
    """An id of this Airflow (its metadata DB), made once and kept in a Variable.

    Writer locks record it, so a later run asks Airflow about a holder only when the holder
    is a run of this same Airflow: another Airflow's run id (the same DAG id and schedule give
    the same run ids) means nothing here.
    """
    value = Variable.get(AIRFLOW_ID_VARIABLE, default=None)
    if not value:
        value = uuid.uuid4().hex
        Variable.set(AIRFLOW_ID_VARIABLE, value, description="airflow-kafka-backup: this Airflow's id in writer locks")
    return str(value)


def _finished_run_state(context: Context) -> Callable[[LockHolder], str | None]:
    """Asks Airflow, through the Task SDK, whether a lock holder of this Airflow still runs."""
    mine = airflow_instance_id()

    def finished(holder: LockHolder) -> str | None:
        if holder.airflow_id != mine or not holder.dag_id:
            return None  # not ours to ask about: it keeps its lease
        try:
            state = str(context["ti"].get_dagrun_state(holder.dag_id, holder.run_id))
        except Exception as error:  # unknown run, or an Airflow without the call: the lease stands
            log.info("Could not ask Airflow about lock holder %s/%s (%s); its lease stands.", holder.dag_id,
                     holder.run_id, type(error).__name__)
            return None
        state = state.rsplit(".", 1)[-1].lower()  # DagRunState.FAILED or "failed"
        return state if state in FINISHED_RUN_STATES else None

    return finished


def _max_map_length() -> int:
    return conf.getint("core", "max_map_length", fallback=DEFAULT_MAX_MAP_LENGTH)


class KafkaBackupRetentionOperator(S3BackupBaseOperator):
    """A lifecycle rule expiring the backup prefix after ``retention_days`` (the seed's
    ``s3.retention.policy.days``). Merges with the bucket's other rules; without ``retention_days``
    it changes nothing. It runs after the plan, which has validated every Param (and, with
    Object Lock, that the bucket has it enabled) before anything is written. It refuses an
    empty prefix (the rule would expire the whole bucket) and a ``retention_days`` shorter than
    the Object Lock retention, and also expires the versions that Object Lock keeps once they
    are no longer current."""

    template_fields: Sequence[str] = (*S3BackupBaseOperator.s3_template_fields, "retention_days")

    def __init__(self, *, retention_days: int | str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.retention_days = retention_days
        if not is_template(retention_days):
            days = validate_retention_days(retention_days)
            if not any(map(is_template, (self.object_lock_mode, self.object_lock_retention_days))):
                check_retention_covers_object_lock(days, validate_object_lock(
                    self.object_lock_mode, self.object_lock_retention_days)[1])

    def execute(self, context: Context) -> str:
        days = validate_retention_days(self.retention_days)
        lock_mode, lock_days = validate_object_lock(self.object_lock_mode, self.object_lock_retention_days)
        check_retention_covers_object_lock(days, lock_days)
        if days is not None:  # before S3 is touched; the plan checked the same before it took the lock
            if not self.bucket:
                raise ConfigurationError("bucket is required: the S3 bucket holding the backup.")
            check_retention_prefix(self.bucket, self.key_prefix)
        if days is not None or lock_days is not None:
            self.check_bucket()  # with Object Lock: the bucket has it enabled
        if lock_days is not None:
            log.info("Object Lock: every object written is retained %d days in %s mode.", lock_days, lock_mode)
        if days is None:
            log.info("No retention_days set: the bucket's lifecycle rules are left as they are.")
            return "unset"
        # On a versioned bucket expiry only adds delete markers: the rule must expire old versions too,
        # whether or not this run asks for Object Lock (an earlier one may have).
        versioned = lock_days is not None or bool(self.store.is_versioned())
        outcome = ensure_retention_rule(self.store.client, self.bucket, self.key_prefix, days,
                                        versioned=versioned)
        log.info("Lifecycle rule expiring s3://%s/%s/ after %d days: %s", self.bucket, self.key_prefix, days, outcome)
        return outcome


class KafkaBackupPlanOperator(S3BackupBaseOperator):
    """Validate settings and plan the run's offset ranges; returns the refs of the work units to map over.

    Writes the whole plan (ranges, segment settings, captured metadata) and each work unit to S3 under
    ``<prefix>/_runs/run=<run id>/`` once it holds the writer lock, before any segment, and pushes the
    plan's ref to XCom under key ``plan`` for the commit task: XCom stays O(work units) however many
    partitions the run has (see :mod:`airflow_kafka_backup.engine.storage.run_objects`). A run with
    nothing to commit writes nothing. A re-run of a run that already committed reuses that run's ranges
    and settings, so it rewrites the same keys with the same bytes.
    """

    template_fields: Sequence[str] = (
        *S3BackupBaseOperator.s3_template_fields, "topics", "exclude_topics", "kafka_conn_id", "flush_size",
        "compression", "compression_level", "segment_checksum",
        "segment_format", "offset_pad_width", "isolation_level", "allow_data_loss", "max_work_units",
        "rotate_interval_ms", "rotate_schedule_interval_ms", "timezone", "force_unlock", "consumer_groups",
        "ranges", "from_timestamp", "until_timestamp", "retention_days", "rpo_seconds",
    )

    def __init__(
        self,
        *,
        topics: Sequence[str] | str,
        exclude_topics: Sequence[str] | str | None = None,
        kafka_conn_id: str = "kafka_default",
        flush_size: int | str = 10_000,
        compression: str = "zstd",
        compression_level: int | str | None = None,
        segment_checksum: str = "crc64nvme",
        segment_format: str = "msgpack",
        offset_pad_width: int | str = 10,
        isolation_level: str = "read_committed",
        allow_data_loss: bool | str = False,
        max_work_units: int | str = 16,
        rotate_interval_ms: int | str | None = None,
        rotate_schedule_interval_ms: int | str | None = None,
        timezone: str = "UTC",
        force_unlock: bool | str = False,
        lock_lease_s: float = DEFAULT_LEASE_S,
        consumer_groups: str | list[str] | None = "*",
        ranges: dict | str | None = None,
        from_timestamp: str | int | None = None,
        until_timestamp: str | int | None = None,
        retention_days: int | str | None = None,
        rpo_seconds: float | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rpo_seconds = rpo_seconds  # only checked here, for the RPO guard after the commit
        self.retention_days = retention_days  # only checked here: the retention task after the plan puts the rule
        self.consumer_groups = consumer_groups
        self.ranges = ranges
        self.from_timestamp = from_timestamp
        self.until_timestamp = until_timestamp
        self.force_unlock = force_unlock
        self.lock_lease_s = lock_lease_s
        self.rotate_interval_ms = rotate_interval_ms
        self.rotate_schedule_interval_ms = rotate_schedule_interval_ms
        self.timezone = timezone
        self.topics = topics
        self.exclude_topics = exclude_topics
        self.kafka_conn_id = kafka_conn_id
        self.flush_size = flush_size
        self.compression = compression
        self.compression_level = compression_level  # None: the codec's default for backups
        self.segment_checksum = segment_checksum  # crc64nvme, or sha256 for a cryptographic digest
        self.segment_format = segment_format
        self.offset_pad_width = offset_pad_width
        self.isolation_level = isolation_level
        self.allow_data_loss = allow_data_loss
        self.max_work_units = max_work_units

    @fail_fast_on_user_errors
    def execute(self, context: Context) -> list[dict]:
        settings = BackupSettings.create(
            topics=self.topics, exclude_topics=self.exclude_topics, bucket=self.bucket, prefix=self.prefix,
            flush_size=self.flush_size,
            compression=self.compression, compression_level=self.compression_level,
            segment_checksum=self.segment_checksum, segment_format=self.segment_format,
            offset_pad_width=self.offset_pad_width, isolation_level=self.isolation_level,
            allow_data_loss=self.allow_data_loss, max_work_units=self.max_work_units,
            rotate_interval_ms=self.rotate_interval_ms, rotate_schedule_interval_ms=self.rotate_schedule_interval_ms,
            timezone=self.timezone,
        )
        validate_rpo_seconds(self.rpo_seconds)
        requested = parse_manual_ranges(self.ranges)
        window = parse_time_window(self.from_timestamp, self.until_timestamp)
        if requested and window != (None, None):
            raise ConfigurationError("Give either ranges or a from/until timestamp window, not both.")
        self._check_retention(settings)
        unknown = sorted({t for t, _ in requested if not settings.selection.matches(t)})
        if unknown:
            raise ConfigurationError(f"ranges names topics that topics does not select: {', '.join(unknown)}.")
        self.check_bucket()
        run_id = context["run_id"]
        committed = read_manifest(self.store, settings.prefix, run_id)
        cuts: dict[str, list[int]] = {}
        if committed is not None:
            self.s3_settings.check_can_read(committed.encryption, f"backup run {committed.run_id}")
            log.info("Run %s already committed; re-backing-up its ranges with its settings.", run_id)
            ranges, segment_settings = committed.ranges, committed.settings
            captured = {"topics": committed.topics, "consumer_groups": committed.consumer_groups,
                        "incarnations": committed.incarnations, "selection": committed.selection,
                        "gone_topics": committed.gone_topics}
            generation_id = planned_on = None  # rewriting its own committed bytes: nothing new to lock or log
            base_state, format_version = None, committed.version  # and in the format it was committed in
        else:
            resolved = resolve_state(self.store, settings.prefix,
                                     get_checkpoint_variable(settings.bucket, settings.prefix))
            if requested or window != (None, None):
                ranges, segment_settings, cuts, captured = self._plan_manual(settings, resolved, requested, window)
            else:
                ranges, captured = self._plan_fresh(settings, resolved)
                segment_settings = settings.segments
            generation_id, planned_on = _planned_on(self.store, settings.bucket, settings.prefix, resolved)
            # Rebuilt from the manifests: the commit builds on this state, not on the Variable's (behind or lost).
            base_state = resolved.state.to_json(None) if resolved.recovered else None
            format_version = None
            if _has_work(ranges, captured):  # nothing to write: no lock
                how = acquire(self.store, settings.prefix, generation_id, run_id, lease_s=self.lock_lease_s,
                              force=as_bool("force_unlock", self.force_unlock), dag_id=context["dag"].dag_id,
                              airflow_id=airflow_instance_id(), holder_finished=_finished_run_state(context))
                log.info("Writer lock for s3://%s/%s (generation %s): %s", settings.bucket, settings.prefix,
                         generation_id, how)
        max_units = min(settings.max_work_units, _max_map_length())
        units = [
            {"run_id": run_id, "unit": number, "ranges": unit, "settings": asdict(segment_settings),
             "isolation_level": settings.isolation_level,
             "cuts": {k: v for k, v in cuts.items() if k in {f"{r['topic']}[{r['partition']}]" for r in unit}}}
            for number, unit in enumerate(group_work_units(ranges, max_units))
        ]
        plan = {"run_id": run_id, "ranges": [asdict(r) for r in ranges], "settings": asdict(segment_settings),
                "generation": generation_id, "planned_on": planned_on, "base_state": base_state,
                "format_version": format_version, **captured}
        todo = [r for r in ranges if not r.is_empty]
        log.info(
            "Planned %d records in %d partitions over %d work units: %s",
            sum(r.end - r.start for r in todo), len(todo), len(units),
            ", ".join(f"{r.topic}[{r.partition}] {r.start}..{r.end}" for r in todo[:50]) or "nothing new",
        )
        if not _has_work(ranges, captured):  # nothing to commit: nothing written, the commit only measures the lag
            context["ti"].xcom_push(key="plan", value={"run_id": run_id, "plan": None,
                                                       "topics": sorted({md["topic"] for md in captured["topics"]})})
            return []
        # After the lock, before any segment: the plan and the work units go to S3, XCom carries their refs.
        plan_ref = put_json(self.store, run_plan_key(settings.prefix, run_id), plan)
        context["ti"].xcom_push(key="plan", value={"run_id": run_id, "plan": plan_ref.to_dict()})
        return [put_json(self.store, work_unit_key(settings.prefix, run_id, unit["unit"]), unit).to_dict()
                for unit in units]

    def _check_retention(self, settings: BackupSettings) -> None:
        """The retention task's arguments, checked before the lock is taken: that task runs after this one, and
        its failure would leave the lock to block every other run until the lease ends."""
        days = validate_retention_days(self.retention_days)
        check_retention_covers_object_lock(days, self.s3_settings.object_lock_retention_days)
        if days is not None:
            check_retention_prefix(settings.bucket, settings.prefix)

    def _plan_manual(self, settings: BackupSettings, resolved: ResolvedState, requested: dict,
                     window: tuple[int | None, int | None]) -> tuple[list[PartitionRange], SegmentSettings,
                                                                       dict[str, list[int]], dict]:
        """A manual or backfill run: explicit ranges or a time window, rebuilt on the committed segments'
        boundaries and settings (see :mod:`airflow_kafka_backup.engine.backup.manual_ranges`)."""
        admin = KafkaAdminClientHook(kafka_config_id=self.kafka_conn_id).get_conn
        topics = resolve_topics(admin, settings.selection).partitions
        tps = [(t, p) for t, n in topics.items() for p in range(n)]
        bounds = snapshot_offsets(admin, tps, settings.isolation_level)
        if not requested:
            since, until = window
            isolation = isolation_level(settings.isolation_level)
            starts = offsets_for_times(admin, tps, since, isolation) if since is not None else {}
            ends = offsets_for_times(admin, tps, until, isolation) if until is not None else {}
            requested = {}
            for tp in tps:
                start = starts.get(tp, bounds[tp].log_start) if since is not None else bounds[tp].log_start
                end = ends.get(tp) if until is not None else bounds[tp].end
                start = bounds[tp].end if start is None else start
                end = bounds[tp].end if end is None else end
                if start < end:
                    requested[tp] = (start, end)
        state = resolved.state
        requested_topics = sorted({t for t, _ in requested})
        ids = topic_ids(admin, requested_topics)
        _check_same_incarnation(state, ids)
        manifests = list(load_manifests(self.store, settings.prefix,
                                        _manifest_keys(self.store, settings.prefix, resolved)))
        for m in manifests:
            self.s3_settings.check_can_read(m.encryption, f"backup run {m.run_id}")
        manual = resolve_manual_ranges(requested, bounds, state.checkpoints, manifests, settings.allow_data_loss,
                                       state.histories)
        kinds = {m.settings for m in manual if m.settings is not None}
        if len(kinds) > 1:
            raise ConfigurationError(
                "The requested offsets span backups written with different segment settings; "
                "split the request so each part lies within runs of one setting."
            )
        segment_settings = kinds.pop() if kinds else settings.segments
        cuts = {f"{m.range.topic}[{m.range.partition}]": list(m.cuts) for m in manual if m.cuts}
        log.info("Manual run: %d ranges below the checkpoints, rebuilt on committed segment boundaries.", len(manual))
        captured = {"topics": [md.to_dict() for md in describe_topics(admin, requested_topics, ids)],
                    "consumer_groups": {},
                    "incarnations": {t: state.histories[t] for t in requested_topics if t in state.histories}}
        return [m.range for m in manual], segment_settings, cuts, captured

    def _plan_fresh(self, settings: BackupSettings, resolved: ResolvedState) -> tuple[list[PartitionRange], dict]:
        """Ranges from the checkpoints to the end offsets, and the topic metadata and group offsets
        captured just before those end offsets (so every group offset is at or below the cut)."""
        admin = KafkaAdminClientHook(kafka_config_id=self.kafka_conn_id).get_conn
        # One run's encryption stands for the prefix's: every run is checked this way when it is planned, so the
        # latest run's refuses another SSE-C key (or none) before anything is written. The commit log's entry
        # records it; a prefix without a log has its latest manifest read.
        if resolved.latest is not None:
            self.s3_settings.check_can_read(resolved.latest.encryption, f"backup run {resolved.latest.run_id}")
        else:
            for sample in load_manifests(self.store, settings.prefix, (resolved.manifest_keys or [])[-1:]):
                self.s3_settings.check_can_read(sample.encryption, f"backup run {sample.run_id}")
        state = resolved.state
        if resolved.recovered:
            log.info("Checkpoint Variable %s missing or behind S3; recovered from manifests.",
                     checkpoint_variable_key(settings.bucket, settings.prefix))
        selection = settings.selection
        known = sorted(set(state.histories) | {t for t, _ in state.checkpoints})
        resolved = resolve_topics(admin, selection, known)
        newly_gone = [t for t in resolved.gone if not state.is_recorded_gone(t)]
        for topic in newly_gone:
            log.warning("Topic %s, selected by a pattern, is gone from the cluster; its backup stays restorable. "
                        "Recorded as gone in this run's manifest.", topic)
        if selection.has_patterns:
            log.info("Topics selected: %s", ", ".join(resolved.topics) or "none")
        ids = topic_ids(admin, resolved.topics)
        groups = select_groups(admin, self.consumer_groups)
        captured = {
            "topics": [m.to_dict() for m in describe_topics(admin, resolved.topics, ids)],
            "consumer_groups": committed_group_offsets(admin, groups, resolved.topics),
        }
        tps = [(t, p) for t, n in resolved.partitions.items() for p in range(n)]
        bounds = snapshot_offsets(admin, tps, settings.isolation_level)
        log.info("Captured the committed offsets of %d consumer groups", len(captured["consumer_groups"]))
        ends = {tp: b.end for tp, b in bounds.items()}
        incarnations = {t: identify(t, ids[t], state, {tp: e for tp, e in ends.items() if tp[0] == t})
                        for t in resolved.topics}
        checkpoints = {tp: offset for tp, offset in state.checkpoints.items()
                       if tp[0] in incarnations and not incarnations[tp[0]].new}
        captured["incarnations"] = {t: list(i.history) for t, i in incarnations.items()}
        captured["selection"] = selection.describe(resolved.topics)
        captured["gone_topics"] = [{"topic": t, "topic_id": state.current(t)} for t in newly_gone]
        return plan_ranges(bounds, checkpoints, settings.allow_data_loss, incarnations), captured


def _planned_on(store: S3ObjectStore, bucket: str, prefix: str,
                resolved: ResolvedState) -> tuple[str, dict[str, Any] | None]:
    """The writer lock's generation a plan takes, and the commit log entry it builds on (None: no log)."""
    latest = resolved.latest
    if latest is None:  # a prefix without a commit log (written before it, or every entry expired)
        return generation(_manifest_keys(store, prefix, resolved)), None
    if not resolved.in_flight:
        return latest.generation, latest.to_variable()
    # Its run is committing, or died doing it: take the lock it held, whose rules decide whether this run may go
    # on (see commit_log); the commit then checks that run's manifest is still absent.
    log.warning("The latest commit to s3://%s/%s (run %s) has no manifest: its run is committing or died doing "
                "it; this run takes the lock it held.", bucket, prefix, latest.run_id)
    return latest.lock or latest.generation, {**latest.to_variable(), "in_flight_manifest": latest.manifest}


def _seen_commit(entry: Commit | None, cached: dict[str, Any] | None, plan: dict | None) -> dict[str, Any] | None:
    """The commit log entry the Variable may claim its state includes, after a commit.

    The new entry, when the state built on is current up to the entry the run planned on: rebuilt by the plan,
    or the Variable's own, naming that entry. Else none, and the next plan rebuilds. Without a new entry (a
    re-run of a committed run, a retry after the commit finished), the entry the Variable had seen.
    """
    if entry is None:
        return (cached or {}).get("commit")
    planned_on = (plan or {}).get("planned_on")
    if (plan or {}).get("base_state") is not None:
        return entry.to_variable()
    recorded = (cached or {}).get("commit")
    if planned_on is None:  # a prefix without a log: a Variable it counted, or none, was current at the plan
        return entry.to_variable() if cached is not None and recorded is None else None
    same = recorded is not None and (recorded.get("seq"), recorded.get("run_id")) == (planned_on["seq"],
                                                                                     planned_on["run_id"])
    return entry.to_variable() if same else None


def _manifest_keys(store: S3ObjectStore, prefix: str, resolved: ResolvedState) -> list[str]:
    """Every manifest key: as ``resolve_state`` listed them, or listed now (a LIST per 1,000 past runs, which only
    manual runs and prefixes without a commit log pay)."""
    return resolved.manifest_keys if resolved.manifest_keys is not None else list_manifest_keys(store, prefix)


def _check_same_incarnation(state: BackupState, ids: dict[str, str]) -> None:
    """A manual run re-backs-up offsets of the incarnation the backup is on; a topic recreated since is refused."""
    changed = [f"{t} (backed up: topic ID {state.current(t)}, now in Kafka: {i})" for t, i in sorted(ids.items())
               if state.current(t) not in (None, i)]
    if changed:
        raise ConfigurationError(
            f"Topic(s) recreated since the last scheduled backup: {'; '.join(changed)}. A manual run re-backs-up "
            "offsets the backup already covers, and those of the old incarnation are gone from Kafka; the next "
            "scheduled run backs up the new incarnation from its first record."
        )


class KafkaBackupOperator(S3BackupBaseOperator):
    """Back up one work unit (a few partitions' offset ranges); writes its segments' metadata to S3 beside the
    unit and returns that object's ref (see :mod:`airflow_kafka_backup.engine.storage.run_objects`).

    Meant to be mapped: ``KafkaBackupOperator.partial(...).expand(work_unit=plan.output)``; ``work_unit`` is the
    ref of a work-unit object the plan wrote (key, sha256, bytes), not the ranges themselves.
    """

    template_fields: Sequence[str] = (*S3BackupBaseOperator.s3_template_fields, "work_unit", "kafka_conn_id",
                                      "isolation_level")

    def __init__(self, *, work_unit: dict, kafka_conn_id: str = "kafka_default",
                 isolation_level: str = "read_committed", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.work_unit = work_unit
        self.kafka_conn_id = kafka_conn_id
        self.isolation_level = isolation_level

    def execute(self, context: Context) -> dict:
        prefix = self.key_prefix
        unit = self._read_work_unit(prefix, context["run_id"])
        ranges = [PartitionRange(**r) for r in unit["ranges"]]
        settings = SegmentSettings(**unit["settings"])
        # The plan's: its end offsets were snapshotted under it, and a range read under another isolation
        # would end elsewhere (read_committed stops at the last stable offset).
        isolation = unit.get("isolation_level", self.isolation_level)
        if isolation != self.isolation_level:
            log.warning("isolation_level %s differs from the plan's %s; reading with the plan's.",
                        self.isolation_level, isolation)
        consumer = KafkaRangeConsumerHook(self.kafka_conn_id, isolation).get_conn
        committed_keys: set[str] | None = None

        def is_committed(key: str) -> bool:
            nonlocal committed_keys
            if committed_keys is None:
                committed_keys = {s.key for m in load_manifests(self.store, prefix) for s in m.segments}
            return key in committed_keys

        segments: list[SegmentInfo] = []
        try:
            for ranges_of_pass in split_at_cuts(ranges, unit.get("cuts", {})):
                result = back_up_ranges(consumer, self.store, prefix, ranges_of_pass, settings, is_committed)
                segments += result.segments
                for partition, count in result.per_partition.items():
                    log.info("%s: %d records", partition, count)
                # A finished partition stays paused; a later assign() of it would never fetch.
                consumer.resume([TopicPartition(r.topic, r.partition) for r in ranges_of_pass])
                consumer.unassign()
        finally:
            consumer.close()
        # Beside the unit, under a key of its own: a retry of this unit rewrites it; XCom gets only the ref.
        key = unit_segments_key(prefix, unit["run_id"], unit["unit"])
        body = {"run_id": unit["run_id"], "unit": unit["unit"], "segments": [s.to_dict() for s in segments]}
        return put_json(self.store, key, body).to_dict()

    def _read_work_unit(self, prefix: str, run_id: str) -> dict:
        """The unit the plan wrote to S3 (``work_unit`` is its ref), checked against the ref's sha256."""
        try:
            return get_json(self.store, ObjectRef.from_dict(self.work_unit), run_objects_prefix(prefix, run_id))
        except RunObjectMissingError:
            raise IntegrityError(
                f"The work unit {self.work_unit['key']} is gone: its run has committed (the commit removes a run's "
                "working objects) or it expired. Clear the whole run, plan included, to back its ranges up again."
            ) from None


def split_at_cuts(ranges: list[PartitionRange], cuts: dict[str, list[int]]) -> list[list[PartitionRange]]:
    """Passes of at most one range per partition, cut where a manual run must start a new segment.

    Scheduled runs have no cuts: one pass with the ranges as they are. A manual run rebuilds
    each committed segment in a pass of its own, so each comes out whole, with its own key.
    """
    pieces: dict[tuple[str, int], list[PartitionRange]] = {}
    for r in ranges:
        bounds = [r.start, *sorted(c for c in cuts.get(f"{r.topic}[{r.partition}]", []) if r.start < c < r.end),
                  r.end]
        pieces[r.tp] = [replace(r, start=a, end=b, lost_start=None, lost_end=None)
                        for a, b in zip(bounds, bounds[1:], strict=False)]
    passes = max((len(p) for p in pieces.values()), default=0)
    return [[p[i] for p in pieces.values() if i < len(p)] for i in range(passes)]


_ALREADY_COMMITTED = object()  # in place of a generation: the run's manifest is in S3 already


class KafkaBackupCommitOperator(S3BackupBaseOperator):
    """Commit the run: write its manifest (the commit point), advance the checkpoint Variable, then remove the
    run's working objects.

    ``plan`` is the plan task's XCom ``plan`` (the ref of the plan object in S3, or ``plan: None`` and the topics
    when nothing was planned) and ``segments`` the backup tasks' refs of their segment lists: the manifest is
    built from those objects, each checked against its ref's sha256, byte for byte what it was when XCom carried
    the lists. Runs only when every backup task succeeded (``none_failed``: also when there was nothing to back
    up and the mapped task was skipped).
    """

    template_fields: Sequence[str] = (*S3BackupBaseOperator.s3_template_fields, "plan", "segments", "kafka_conn_id",
                                      "isolation_level")

    def __init__(self, *, plan: dict, segments: Any, asset_alias: str | None = None,
                 kafka_conn_id: str = "kafka_default", isolation_level: str = "read_committed",
                 **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", TriggerRule.NONE_FAILED)
        if asset_alias:
            kwargs["outlets"] = [*kwargs.get("outlets", ()), AssetAlias(asset_alias)]
        super().__init__(**kwargs)
        self.plan = plan
        self.segments = segments
        self.asset_alias = asset_alias
        self.kafka_conn_id = kafka_conn_id
        self.isolation_level = isolation_level

    def execute(self, context: Context) -> dict:
        """Returns the run's summary (records, bytes, segments, seconds) and each topic's lag after the commit."""
        prefix = self.key_prefix
        exchange = self.plan or {}
        cached = get_checkpoint_variable(self.bucket, prefix)
        if exchange.get("plan") is None:
            log.info("Nothing was planned; no manifest written, checkpoint unchanged.")
            key, state, segments, topics = None, BackupState.from_json(cached), [], list(exchange.get("topics", []))
        else:
            manifest, plan = self._run_manifest(prefix, exchange)
            segments, topics = manifest.segments, sorted({md["topic"] for md in manifest.topics})
            key = manifest_key(prefix, manifest.run_id)
            entry = base_state = None
            if plan is not _ALREADY_COMMITTED:
                recorded: list[Commit | None] = []
                write_manifest(self.store, prefix, manifest, before_commit_point=lambda: recorded.append(
                    self._record_commit(prefix, manifest, key, plan)))
                entry, base_state = recorded[0], plan.get("base_state")
            log.info("Committed %s: %d segments, %d records.", key, len(segments), sum(s.records for s in segments))
            state = BackupState.from_json(base_state if base_state is not None else cached).advanced(manifest)
            set_checkpoint_variable(self.bucket, prefix, state.to_json(
                _seen_commit(entry, cached, None if plan is _ALREADY_COMMITTED else plan)))
            self._emit_asset_events(context, prefix, manifest.ranges, segments, manifest.run_id)
            removed = remove_run_objects(self.store, prefix, manifest.run_id)
            if removed is not None:
                log.info("Removed the run's %d working objects under %s.", removed,
                         run_objects_prefix(prefix, manifest.run_id))
        dag_id = context["dag"].dag_id
        summary = {"manifest": key, "segments": len(segments), "records": sum(s.records for s in segments),
                   "bytes": sum(s.bytes for s in segments), "seconds": _run_seconds(context)}
        metrics.emit_run(dag_id, summary["records"], summary["bytes"], summary["segments"], summary["seconds"])
        summary["lag"] = self._lag_after_commit(dag_id, state, topics)
        return summary

    def _run_manifest(self, prefix: str, exchange: dict) -> tuple[RunManifest, Any]:
        """The manifest to commit, built from the plan and the backup tasks' segment lists in S3, and the plan.

        When the plan object is gone, a try of this commit has already committed the manifest and removed the
        working objects (it died before Airflow heard of its success): that manifest is the run's, as it was
        committed, and the commit log is not written again (the plan comes back as ``_ALREADY_COMMITTED``).
        """
        run_id = exchange["run_id"]
        inside = run_objects_prefix(prefix, run_id)
        try:
            plan = get_json(self.store, ObjectRef.from_dict(exchange["plan"]), inside)
        except RunObjectMissingError:
            committed = read_manifest(self.store, prefix, run_id)
            if committed is None:
                raise IntegrityError(f"The plan of run {run_id} ({exchange['plan']['key']}) is gone and the run has "
                                     "no manifest: clear the whole run to plan it again.") from None
            log.info("Run %s was committed by an earlier try of this task, which removed its working objects.",
                     run_id)
            return committed, _ALREADY_COMMITTED
        ranges = [PartitionRange(**r) for r in plan["ranges"]]
        segments = []
        for ref in self.segments or []:
            if ref:  # a unit's segment list: its body names the run and unit it belongs to
                body = get_json(self.store, ObjectRef.from_dict(ref), inside)
                if body["run_id"] != run_id:
                    raise IntegrityError(f"Working object {ref['key']} belongs to run {body['run_id']}, not {run_id}.")
                segments += [SegmentInfo.from_dict(s) for s in body["segments"]]
        _check_segments_match_plan(ranges, segments)
        manifest = RunManifest(plan["run_id"], SegmentSettings(**plan["settings"]), ranges, segments,
                               encryption=self.s3_settings.manifest_encryption(),
                               format_version=plan.get("format_version"),
                               topics=plan.get("topics", []), consumer_groups=plan.get("consumer_groups", {}),
                               incarnations=plan.get("incarnations", {}), selection=plan.get("selection", {}),
                               gone_topics=plan.get("gone_topics", []))
        return manifest, plan

    def _lag_after_commit(self, dag_id: str, state: BackupState, topics: list[str]) -> dict[str, dict] | None:
        """Each topic's records not yet in a committed backup and the age of the oldest, logged and emitted as
        metrics. The commit has happened: a failure to measure is logged, not raised (the RPO guard, if any,
        then fails for want of a measurement)."""
        if not topics:
            return {}
        now_ms = int(time.time() * 1000)
        consumer = None
        try:
            admin = KafkaAdminClientHook(kafka_config_id=self.kafka_conn_id).get_conn
            consumer = KafkaRangeConsumerHook(self.kafka_conn_id, self.isolation_level).get_conn
            backlog = measure_backlog(admin, topics, state.checkpoints, self.isolation_level, consumer,
                                      current_ids={t: h[-1] for t, h in state.histories.items() if h})
        except Exception as error:
            log.warning("Could not measure the lag after the commit: %s", error)
            return None
        finally:
            if consumer is not None:
                consumer.close()
        metrics.emit_lag(dag_id, backlog.topics, now_ms)
        lag = {}
        for topic, topic_lag in sorted(backlog.topics.items()):
            age = topic_lag.age_s(now_ms)
            lag[topic] = {"records": topic_lag.records, "oldest_timestamp_ms": topic_lag.oldest_timestamp_ms,
                          "age_s": None if age is None else round(age, 3)}
            log.info("Lag after the commit: %s: %d records not backed up%s", topic, topic_lag.records,
                     "" if age is None else f", the oldest {age:.0f}s old")
        return lag

    def _record_commit(self, prefix: str, manifest: RunManifest, key: str, plan: dict) -> Commit | None:
        """The run's entry in the commit log, created before its manifest: fails when another run committed on
        the state this run planned on (see :mod:`commit_log`). None for a re-run of a committed run, which adds
        no commit."""
        if plan.get("generation") is None:
            return None
        planned_on = plan.get("planned_on")
        if planned_on is None:  # planned on a prefix without a log: the manifests' key set is its generation
            self._check_nobody_committed_meanwhile(prefix, key, plan["generation"])
        return record_commit(self.store, prefix, planned_on["seq"] if planned_on else 0, manifest.run_id, key,
                             manifest.encryption, plan["generation"],
                             (planned_on or {}).get("in_flight_manifest"))

    def _check_nobody_committed_meanwhile(self, prefix: str, own_key: str, planned: str) -> None:
        """The generation this run planned on must still be the latest (see :mod:`writer_lock`)."""
        current = [k for k in list_manifest_keys(self.store, prefix) if k != own_key]
        if generation(current) != planned:
            raise ConcurrentRunError(
                f"Another run committed to s3://{self.bucket}/{prefix} while this run was in flight; this run's "
                "segments stay uncommitted (ignored by readers). Run the backup again to continue from there."
            )

    def _emit_asset_events(self, context: Context, prefix: str, ranges: list[PartitionRange],
                           segments: list[SegmentInfo], run_id: str) -> None:
        """One asset event per topic backed up: ``s3://<bucket>/<prefix>/<topic>``, for downstream DAGs."""
        if not self.asset_alias:
            return
        events = context["outlet_events"][AssetAlias(self.asset_alias)]
        for topic in sorted({r.topic for r in ranges if not r.is_empty}):
            records = sum(s.records for s in segments if s.topic == topic)
            events.add(Asset(backup_asset_uri(self.bucket, prefix, topic)),
                       extra={"run_id": run_id, "records": records})


class RpoExceededError(KafkaBackupError, AirflowFailException):
    """Records older than the RPO are still in no committed backup; fails the run at once (a retry would measure
    the same), so Airflow's alerting fires."""


class KafkaBackupRpoGuardOperator(BaseOperator):
    """Fail the DAG run when a topic's oldest record not yet in a committed backup is older than ``rpo_seconds``.

    Reads the lag the commit measured (its XCom ``lag``), judged at this task's time; writes nothing. Without
    ``rpo_seconds`` it only logs the lag.
    """

    template_fields: Sequence[str] = ("rpo_seconds", "lag")

    def __init__(self, *, lag: Any, rpo_seconds: float | str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lag = lag
        self.rpo_seconds = rpo_seconds

    def execute(self, context: Context) -> dict:
        rpo = validate_rpo_seconds(self.rpo_seconds)
        if rpo is None:
            log.info("No rpo_seconds set: nothing to guard.")
            return {"rpo_seconds": None, "breaches": []}
        if self.lag is None:
            raise RpoExceededError(f"The lag after the commit could not be measured (see the commit task's log), so "
                                   f"the RPO of {rpo:.0f}s cannot be shown to hold.")
        lags = {topic: TopicLag(v["records"], v["oldest_timestamp_ms"]) for topic, v in self.lag.items()}
        breaches = rpo_breaches(lags, rpo)
        if breaches:
            raise RpoExceededError(f"RPO of {rpo:.0f}s exceeded: " + "; ".join(breaches) + ".")
        log.info("RPO of %.0fs holds for %d topics.", rpo, len(lags))
        return {"rpo_seconds": rpo, "breaches": []}


def validate_rpo_seconds(value: object) -> float | None:
    """``rpo_seconds``: a positive number of seconds, or None/"None" (no RPO guard)."""
    if value is None or value in ("", "None"):
        return None
    try:
        rpo = float(str(value)) if not isinstance(value, bool) else -1.0
    except ValueError:
        rpo = -1.0
    if rpo <= 0:
        raise ConfigurationError(f"rpo_seconds must be a number of seconds greater than 0, got {value!r}.")
    return rpo


def _run_seconds(context: Context) -> float | None:
    """Seconds from the DAG run's start to now (its commit)."""
    start = getattr(context.get("dag_run"), "start_date", None)
    return None if start is None else round(max(0.0, time.time() - start.timestamp()), 3)


def _has_work(ranges: list[PartitionRange], plan: dict) -> bool:
    """Whether the run commits a manifest: records to back up, a recorded loss, or a topic newly gone."""
    return any(not r.is_empty or r.lost_start is not None for r in ranges) or bool(plan.get("gone_topics"))


def backup_asset_uri(bucket: str, prefix: str, topic: str) -> str:
    return f"s3://{bucket}/{prefix}/{topic}" if prefix else f"s3://{bucket}/{topic}"


def _check_segments_match_plan(ranges: list[PartitionRange], segments: list[SegmentInfo]) -> None:
    """Every segment lies inside its partition's planned range, and no two overlap."""
    by_tp = {r.tp: r for r in ranges}
    last_end: dict[tuple[str, int], int] = {}
    for s in sorted(segments, key=lambda s: (s.topic, s.partition, s.first_offset)):
        r = by_tp.get((s.topic, s.partition))
        if r is None or s.first_offset < r.start or s.last_offset >= r.end:
            raise IntegrityError(f"Segment {s.key} ({s.first_offset}..{s.last_offset}) is outside the plan.")
        if s.first_offset < last_end.get(r.tp, -1):
            raise IntegrityError(f"Segment {s.key} overlaps the segment before it.")
        last_end[r.tp] = s.last_offset + 1


class KafkaBackupVerifyOperator(S3BackupBaseOperator):
    """Verify the backup: every committed segment present with its size and checksum, every chain whole.

    Usable as the last task of a backup DAG (``backup_dag(verify=True)``) or on its own
    schedule. Fails listing every problem; returns a small summary per topic.

    :param deep: download and checksum every segment (default) instead of comparing the
        checksum stored with each object at upload.
    """

    template_fields: Sequence[str] = (*S3BackupBaseOperator.s3_template_fields, "topics", "deep")

    def __init__(self, *, topics: Sequence[str] | str | None = None, deep: bool | str = True, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", TriggerRule.NONE_FAILED)
        super().__init__(**kwargs)
        self.topics = topics
        self.deep = deep

    def execute(self, context: Context) -> dict:
        prefix = self.key_prefix
        self.store.check_bucket()
        manifests = list(load_manifests(self.store, prefix))
        for m in manifests:
            self.s3_settings.check_can_read(m.encryption, f"backup run {m.run_id}")
        # Patterns match the topics in the backup, as a restore's do.
        topics = (TopicSelection.parse(self.topics).resolve({r.topic for m in manifests for r in m.ranges})
                  if self.topics else None)
        report = verify_backup(self.store, prefix, topics, deep=as_bool("deep", self.deep),
                               manifests=manifests)
        for line in report.table().splitlines():
            log.info("%s", line)
        require_ok(report)
        log.info("Verified %d segments of %d manifests: OK", report.segments_checked, report.manifests)
        return report.summary()
